"""Reaping: what happens when an agent's process ends, whoever ended it.

The exit record (code, signal, reason: ``core.lifecycle.exit_reason``) is kept and stored;
the agent's tokens are revoked, its inference requests cancelled, its budget closed into its
parent's, its cgroup removed, and its live children stopped (the subtree does not outlive
its root). Each agent's reaper task starts at spawn (``kernel/spawn.py``).

The state reads ``exited`` only once all of that is done (the one commit point, with
``rec.exited`` set in the same step): while the reaper works the agent is ``stopping`` and
no longer ``live`` (its exit is seen: nothing signals, pauses or delivers to it), so a
reader that takes ``exited`` as done — ``status``, ``ps``, a parent's ``wait_child``, a
client polling — finds the tokens revoked, the budget closed and ``agent.exited`` recorded.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from agentix.core.lifecycle import exit_reason
from agentix.kernel.agent_rows import AgentRows
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.clock import Clock
from agentix.kernel.control import Control
from agentix.kernel.dispatch import EventSink
from agentix.kernel.inference import InferenceService
from agentix.kernel.process import AgentRecord, ExitRecord, ProcessTable
from agentix.tools.files import DiskTally

__all__ = ["Reaper"]

log = logging.getLogger(__name__)

#: seconds the reaper waits for a dead agent's ended calls to unwind (a thread finishing its
#: write, an exec's tree killed) before it says the agent exited anyway, with a warning
CALLS_END_WAIT = 10.0


@dataclass(eq=False)
class Reaper:
    """Waits for each agent's process and accounts for its exit."""

    table: ProcessTable
    events: EventSink
    caps: CapabilityService
    inference: InferenceService
    control: Control
    rows: AgentRows
    clock: Clock
    disk: DiskTally

    async def reap(self, rec: AgentRecord) -> None:
        """Wait for ``rec``'s process; record its exit; revoke, settle, clean up; stop its subtree."""
        assert rec.handle is not None
        info = await rec.handle.wait()
        if rec.log_sink is not None:  # what it printed last is in the log before it is reported exited
            await rec.log_sink.drained(timeout=2.0)
            rec.log_sink.close()
        reason = exit_reason(info.code, info.signal, requested=rec.requested_reason, oom=info.oom)
        detail = rec.requested_detail
        if reason == "crashed" and info.signal is not None and not detail:
            detail = f"killed by signal {signal.Signals(info.signal).name}" if info.signal in signal.valid_signals() else ""
        elif reason == "crashed" and info.code is not None:
            detail = detail or f"exit status {info.code}"
        rec.exit = ExitRecord(code=info.code, signal=info.signal, reason=reason, detail=detail, at=self.clock.now())
        rec.ended_mono = self.clock.monotonic()
        if rec.state != "stopping":  # not "exited" yet: that is said below, once it is accounted for
            rec.set_state("stopping")
        try:
            await self._account(rec)
        except Exception:
            log.exception("accounting for the exit of %s failed", rec.agent_id)
        finally:
            # the commit point, whatever happened above (a step that failed is logged; one that
            # was cancelled — the kernel shutting down — is cut short): an agent never stays
            # un-exited for want of a record, which would hang every wait, stop and shutdown
            rec.set_state("exited")
            rec.exited.set()
            rec.mail_event.set()

    async def _account(self, rec: AgentRecord) -> None:
        """Everything an exit settles, in order, each step on its own (one that fails is logged
        and the next still runs: a full disk refusing the audit record must not leave the
        cgroup, the agent's tasks or its subtree behind); ``exited`` is said after the last."""
        for step in (self._store, self._revoke, self._settle_budget, self._clean_up, self._record,
                     self._stop_children):
            try:
                await step(rec)
            except Exception:
                log.exception("%s for the exit of %s failed", step.__name__.strip("_"), rec.agent_id)

    async def _store(self, rec: AgentRecord) -> None:
        self.table.release_name(rec)
        await self.rows.persist_exit(rec)

    async def _revoke(self, rec: AgentRecord) -> None:
        self.inference.cancel_agent(rec.agent_id)
        revoked = self.caps.revoke_agent(rec.agent_id)  # a dead agent's tokens die with it,
        try:  # and its calls at work end before it reads exited (bounded: a stuck thread is logged)
            await asyncio.wait_for(self.caps.calls_ended(rec.agent_id), CALLS_END_WAIT)
        except asyncio.TimeoutError:
            log.warning("calls of %s still unwinding %gs after its exit", rec.agent_id, CALLS_END_WAIT)
        if revoked:
            await self.events.record("capability.revoked", rec.agent_id,
                                     {"token_ids": revoked, "why": "agent exited"})

    async def _settle_budget(self, rec: AgentRecord) -> None:
        if rec.parent is not None and rec.budget is not None:
            parent = self.table.get(rec.parent)
            for sig in parent.budget.close_child(rec.budget, self.clock.monotonic()):
                await self.events.record("budget.warning" if sig.kind == "warning" else "budget.exceeded",
                                         parent.agent_id, sig.to_data())

    async def _clean_up(self, rec: AgentRecord) -> None:
        assert rec.handle is not None
        try:
            rec.last_stats = rec.handle.stats()  # the last sample: the cgroup goes next
        except Exception:
            log.exception("stats of %s failed", rec.agent_id)
        try:
            await rec.handle.cleanup()
        finally:
            self.disk.forget(str(rec.workspace))  # its writes are over: the count goes with it
            for task in rec.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    async def _record(self, rec: AgentRecord) -> None:
        assert rec.exit is not None
        await self.events.record("agent.exited", rec.agent_id, {
            "name": rec.name, **rec.exit.to_data(), "runtime_s": round(rec.runtime(), 3),
            "syscalls": rec.syscalls,
        })

    async def _stop_children(self, rec: AgentRecord) -> None:
        """The subtree does not outlive its root: every child not yet accounted for (a stop of
        one whose exit is already being settled only waits for it) is stopped before the root
        reads exited, so a wait on the root returns once the whole tree is down (bounded: a
        child that will not die is left to its own stop, still running, and logged)."""
        live = [self.table.get(c) for c in rec.children if not self.table.get(c).exited.is_set()]
        if not live:
            return
        stops = [asyncio.ensure_future(self.control.stop(c, reason="killed", detail=f"parent {rec.agent_id} exited"))
                 for c in live]
        done, pending = await asyncio.wait(stops, timeout=CALLS_END_WAIT)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.warning("stopping a child of %s failed: %r", rec.agent_id, t.exception())
        if pending:
            log.warning("%d children of %s still stopping %gs after its exit", len(pending),
                        rec.agent_id, CALLS_END_WAIT)
