"""Control of live agents: stop (the subtree first), kill, pause, resume, wait, status.

``stop`` sends SIGTERM to the agent's process group, waits the grace period, then SIGKILL;
children are stopped first. Pause freezes the cgroup (SIGSTOP where there is none).

A grace is at most ``MAX_GRACE`` seconds, and each stop keeps its own: a stop (or a kill) of
an agent that is already stopping waits only its own grace before SIGKILL, never the
first stop's — so an agent that ignores SIGTERM, stopped by its parent with a long grace,
is still killed at once by the operator's ``kill`` and within the default grace by ``down``.
An agent whose process has already ended (the reaper settling its exit) is not signalled:
the stop waits for that to finish (``kernel/reap.py``, each step bounded).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from agentix.core.errors import NotFound, StateError, Timeout
from agentix.kernel.clock import Clock
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import EventSink
from agentix.kernel.process import AgentRecord, ProcessTable

__all__ = ["MAX_GRACE", "Control"]

#: the longest grace period any stop waits between SIGTERM and SIGKILL (seconds)
MAX_GRACE = 600.0


class Control:
    """Stop, kill, pause, resume, wait for and describe the agents of one process table."""

    def __init__(self, table: ProcessTable, events: EventSink, config: KernelConfig, clock: Clock) -> None:
        self.table = table
        self.clock = clock  # budgets' time and the wall-clock limit are the kernel's clock's
        self.events = events
        self.config = config

    async def stop(self, rec: AgentRecord, *, reason: str = "killed", detail: str = "",
                   grace: float | None = None) -> AgentRecord:
        """SIGTERM to the process group, grace period, SIGKILL; the subtree first. Returns once
        ``rec`` has exited and that is accounted for (as ``wait``), whoever ended it."""
        if not rec.live:  # its exit is seen: done once the reaper has accounted for it
            await rec.exited.wait()
            return rec
        if rec.state == "spawning" and not rec.settled.is_set():
            # mid-spawn: the spawn either commits or unwinds within its own bounds (program
            # copy bounded, the substrate's confine timeout); then stop what it became
            await rec.settled.wait()
            if not rec.live:
                await rec.exited.wait()
                return rec
        grace = self.config.stop_grace if grace is None else min(max(0.0, grace), MAX_GRACE)
        if rec.state == "stopping":  # another stop is under way: this one keeps its own grace
            await self._finish(rec, grace)
            return rec
        rec.requested_reason = reason
        rec.requested_detail = detail
        was_paused = rec.state == "paused"
        rec.set_state("stopping")
        children = [self.table.get(c) for c in rec.children]
        # every child not yet accounted for, those whose exit the reaper is still settling too
        # (a stop of one of those only waits for it): the parent's exit comes after theirs
        live = [c for c in children if not c.exited.is_set()]
        if live:
            await asyncio.gather(*(self.stop(c, reason="killed", detail=f"parent {rec.agent_id} stopped",
                                             grace=grace) for c in live), return_exceptions=True)
        assert rec.handle is not None
        # no grace (agent.kill) means SIGKILL at once, not a SIGTERM the process may die of first
        rec.handle.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if was_paused:
            if not rec.handle.freeze(False):
                rec.handle.signal(signal.SIGCONT)
        await self._finish(rec, grace)
        return rec

    async def _finish(self, rec: AgentRecord, grace: float) -> None:
        """Wait ``grace`` seconds for ``rec`` to exit, then SIGKILL it and wait."""
        try:
            await asyncio.wait_for(asyncio.shield(rec.exited.wait()), timeout=grace)
        except asyncio.TimeoutError:
            assert rec.handle is not None
            if rec.exit is None:  # not a process the reaper has already waited for
                rec.handle.signal(signal.SIGKILL)
            await rec.exited.wait()

    async def kill(self, rec: AgentRecord, *, reason: str = "killed") -> AgentRecord:
        return await self.stop(rec, reason=reason, grace=0.0)

    async def pause(self, rec: AgentRecord) -> None:
        if rec.handle is None:
            raise StateError(f"agent {rec.agent_id} is {rec.state}; it cannot be paused yet",
                             state=rec.state)
        rec.set_state("paused")
        assert rec.handle is not None
        if not rec.handle.freeze(True):
            rec.handle.signal(signal.SIGSTOP)
        await self.events.record("agent.paused", rec.agent_id, {"name": rec.name})

    async def resume(self, rec: AgentRecord) -> None:
        if rec.state != "paused":
            raise StateError(f"agent {rec.agent_id} is {rec.state}, not paused", state=rec.state)
        rec.set_state("running")
        assert rec.handle is not None
        if not rec.handle.freeze(False):
            rec.handle.signal(signal.SIGCONT)
        await self.events.record("agent.resumed", rec.agent_id, {"name": rec.name})

    async def wait(self, rec: AgentRecord, timeout: float | None) -> AgentRecord:
        """``rec`` once its exit is fully accounted for (``rec.exited``: set by the reaper after
        its tokens are revoked and ``agent.exited`` is recorded, or by an unwound spawn; the
        state reads ``exited`` from the same step), not merely once its process has ended."""
        if not rec.exited.is_set():
            try:
                await asyncio.wait_for(asyncio.shield(rec.exited.wait()), timeout=timeout)
            except asyncio.TimeoutError:
                raise Timeout(f"agent {rec.agent_id} still {rec.state} after {timeout:g}s",
                              agent_id=rec.agent_id, state=rec.state) from None
        return rec

    def status(self, rec: AgentRecord) -> dict[str, Any]:
        data = rec.summary()
        data.update({
            "workspace": str(rec.workspace),
            "log": str(rec.log_path),
            "restored": rec.restored,
            "manifest": rec.manifest.to_data(),
            "limits": rec.limits.model_dump(),
            "isolation": rec.isolation,
            "taint": sorted(rec.taint),
            "mailbox": rec.mailbox.statistics(),
            "result": rec.result,
            "resources": (rec.handle.stats() if rec.handle is not None and rec.live
                          else rec.last_stats),
            "budget": rec.budget.snapshot(self.clock.monotonic()) if rec.budget is not None else None,
        })
        return data

    async def wall_clock(self, rec: AgentRecord, seconds: float) -> None:
        await self.clock.sleep(seconds)
        if rec.live:
            await self.stop(rec, reason="timeout", detail=f"wall-clock limit of {seconds:g}s reached", grace=1.0)

    async def stop_for_budget(self, agent_id: str, reason: str) -> None:
        try:
            rec = self.table.get(agent_id)
        except NotFound:
            return
        await self.stop(rec, reason=reason, detail="budget exceeded", grace=1.0)

