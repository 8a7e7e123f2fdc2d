"""Spawning: admission, the program copied in, the confined process, its channel.

Admission is atomic (every check and the ``max_agents`` slot decided before the first
``await``); every later step is undone if a later one fails (``_unwind_spawn``): no
``spawning`` record, no workspace, no cgroup, no process, no tokens. The commit point starts
the agent's channel task (its system calls go through the pipeline), its reaper task
(``kernel/reap.py``) and its wall-clock timer (``kernel/control.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentix.core.budget import BudgetLedger, BudgetLimits
from agentix.core.caps import Token
from agentix.core.errors import AgentixError, InvalidRequest, IsolationUnavailable, LimitExceeded, NotFound, StateError
from agentix.core.mailbox import BoundedFifo
from agentix.core.manifest import Manifest
from agentix.kernel.agent_rows import AgentRows
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.clock import Clock
from agentix.kernel.config import KernelConfig
from agentix.kernel.control import Control
from agentix.kernel.dispatch import Caller, EventSink, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.messaging import Messaging, envelope_size
from agentix.kernel.process import AgentRecord, ExitRecord, LogSink, ProcessTable
from agentix.kernel.program import BOOT_MODULE, check_host_limits, install_program
from agentix.kernel.reap import Reaper
from agentix.rpc.server import InFlight, Notify, serve_socket
from agentix.sandbox.base import Handle, LaunchSpec, Substrate
from agentix.tools.thread_work import in_thread

__all__ = ["PersistentAgents", "Spawner"]

log = logging.getLogger(__name__)


class PersistentAgents(Protocol):
    """Where a persistent root agent is remembered, to be started again with the kernel."""

    def remember_agent(self, name: str, manifest: dict[str, Any]) -> None: ...


@dataclass(eq=False)
class Spawner:
    """Starts agent processes: admission, workspace, program, confinement, channel, reaper."""

    home: Home
    config: KernelConfig
    _: KW_ONLY
    table: ProcessTable
    substrate: Substrate
    events: EventSink
    caps: CapabilityService
    pipeline: Pipeline
    in_flight: InFlight
    control: Control
    reaper: Reaper
    rows: AgentRows
    persistent: PersistentAgents | None
    clock: Clock  # the kernel's one clock: records' times, budgets' start
    #: root agent id -> its tree's in-flight pool, and how many of the tree's channels are
    #: served (the pool goes with the last one)
    _tree_pools: dict[str, InFlight] = field(default_factory=dict, init=False)
    _tree_channels: dict[str, int] = field(default_factory=dict, init=False)
    #: set at shutdown: no new agents
    stopping: bool = field(default=False, init=False)

    def new_id(self) -> str:
        while True:
            aid = "ag-" + secrets.token_hex(4)
            try:
                self.table.get(aid)
            except NotFound:
                return aid

    async def spawn(
        self,
        manifest: Manifest,
        *,
        parent: AgentRecord | None = None,
        message: Any = None,
        program_base: Path | None = None,
        seed: Path | None = None,
        prepare: Callable[[AgentRecord], Awaitable[None]] | None = None,
    ) -> AgentRecord:
        """Start an agent process for ``manifest``. Refusals and failures leave nothing behind.

        Admission is atomic: every check, the name and the ``max_agents`` slot are decided
        and reserved synchronously, before the first ``await`` (the record enters the table
        in state ``spawning``), so concurrent spawns cannot all pass the same check. Every
        later step is undone if a later one fails (``_spawn``): no ``spawning`` record, no
        workspace, no cgroup, no process, no tokens.

        ``seed``: a verified, unpacked package tree (packages/unpack.py) whose entries are
        moved into the new workspace; ``manifest.program`` is then a path inside it.
        ``prepare``: an async function given the new record before its process starts (a
        snapshot restore puts back taint, mailbox, budget spent and state there); it
        undoes its own writes if the spawn fails after it."""
        if self.stopping:
            raise StateError("the kernel is shutting down; no new agents")
        depth = 0 if parent is None else parent.depth + 1
        if depth > self.config.max_depth:
            raise LimitExceeded(
                f"spawn depth {depth} exceeds the limit of {self.config.max_depth}",
                limit="max_depth", depth=depth, max_depth=self.config.max_depth)
        if self.table.live_count() >= self.config.max_agents:
            raise LimitExceeded(
                f"{self.table.live_count()} agents are live; the limit is {self.config.max_agents}",
                limit="max_agents", max_agents=self.config.max_agents)
        if parent is not None and not parent.live:
            raise StateError(f"parent {parent.agent_id} is {parent.state}")
        if parent is not None:  # a spawn loop of short-lived children is bounded too
            spawned = sum(1 for r in self.table if r.root == parent.root)
            if spawned >= self.config.max_tree_agents:
                raise LimitExceeded(
                    f"this agent's tree has spawned {spawned} agents in this kernel run; the limit is "
                    f"{self.config.max_tree_agents} ([kernel] max_tree_agents)",
                    limit="max_tree_agents", max=self.config.max_tree_agents, spawned=spawned)
        if manifest.program is None:
            raise InvalidRequest(
                "manifest has no program: set `program:` to a Python file or package directory",
                field="program")
        degraded_ok = self.config.isolation == "degraded" or manifest.isolation == "degraded"
        if parent is not None:
            parent_degraded = bool(parent.isolation.get("degraded"))
            if manifest.isolation == "degraded" and not parent_degraded and self.config.isolation != "degraded":
                raise IsolationUnavailable(
                    "a strictly isolated agent cannot spawn a child with `isolation: degraded`",
                    layer="all", field="isolation")
            degraded_ok = parent_degraded or self.config.isolation == "degraded"
        # constraints only accumulate (approval_required); a child gets no more than its parent
        # (limits, priority); LLM roots get finite default budgets
        manifest = self.caps.constrain(manifest, parent)
        limits = self.config.effective_limits(manifest.limits)
        check_host_limits(limits)
        agent_id = self.new_id()
        # delegation first: a refused grant leaves nothing behind (no workspace, no process)
        try:
            tokens = self.caps.tokens_for_spawn(manifest, parent, agent_id)
        except AgentixError as err:
            if parent is not None:
                await self.events.record("capability.denied", parent.agent_id, {
                    "method": "agent.spawn_child", "error": err.code, "message": err.message,
                    "child": manifest.name, **err.data})
            raise
        # tokens_for_spawn is synchronous, so nothing has moved since the checks above
        now = self.clock.monotonic()
        limits_b = BudgetLimits.from_manifest(manifest.budget)
        # a child's budget is carved out of its parent's remaining budget (refused if over)
        budget = parent.budget.carve(limits_b, now) if parent is not None else BudgetLedger(limits_b, now)
        rec = AgentRecord(
            agent_id=agent_id, name=self.table.unique_name(manifest.name), manifest=manifest,
            parent=parent.agent_id if parent else None, depth=depth,
            root=parent.root if parent else agent_id,
            workspace=self.home.workspaces / agent_id, log_path=self.home.logs / f"{agent_id}.log",
            limits=limits, created_at=self.clock.now(), started_mono=now, clock=self.clock,
        )
        rec.budget = budget
        rec.mailbox = BoundedFifo(self.config.mailbox_capacity, owner=rec.name,
                                  max_bytes=self.config.mailbox_bytes)
        if parent is not None:
            rec.taint |= parent.taint  # labels survive being passed on
        if message is not None:
            env = Messaging.envelope(parent, message, rec.taint, self.clock.now())
            rec.mailbox.put(env, envelope_size(env))
        self.table.add(rec)  # the reservation: the name and one max_agents slot
        try:
            return await self._spawn(rec, parent, program_base, degraded_ok, tokens, seed, prepare)
        except BaseException:
            if parent is not None:
                parent.budget.close_child(budget, self.clock.monotonic())
                parent.budget.children -= 1
            raise

    async def _spawn(self, rec: AgentRecord, parent: AgentRecord | None, program_base: Path | None,
                     degraded_ok: bool, tokens: list[Token], seed: Path | None = None,
                     prepare: Callable[[AgentRecord], Awaitable[None]] | None = None) -> AgentRecord:
        """The asynchronous steps of a spawn; on any failure every step taken is undone."""
        manifest, agent_id, name, workspace = rec.manifest, rec.agent_id, rec.name, rec.workspace
        handle = None
        kernel_sock: socket.socket | None = None
        persisted = remembered = False
        try:
            workspace.mkdir(mode=0o700)
            if seed is not None:
                # a package tree the kernel itself unpacked and verified (not agent-controlled)
                from agentix.packages.unpack import seed_workspace

                target = await in_thread(lambda: seed_workspace(seed, workspace, manifest.program))
            else:
                # a cancelled spawn (its parent's token revoked) is unwound once this copy is done
                target = await in_thread(lambda: install_program(manifest.program, workspace,
                                                                 parent, program_base))
            if prepare is not None:
                await prepare(rec)  # before the process exists: its first call sees what this put back
            # the agent's stdout and stderr: a pipe the kernel reads, never a kernel file
            rec.log_sink = LogSink(rec.log_path, self.config.log_max_bytes)
            rec.log_sink.start()
            kernel_sock, agent_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                os.set_inheritable(agent_sock.fileno(), True)
                spec = LaunchSpec(
                    agent_id=agent_id, name=name,
                    # -I: no PYTHON* variables, no user site, no script directory on sys.path,
                    # so nothing from the workspace runs before the confine step
                    argv=[sys.executable, "-I", "-B", "-u", "-m", BOOT_MODULE, target, *manifest.args],
                    workspace=workspace, env=self.agent_env(rec, agent_sock.fileno()),
                    channel_fd=agent_sock.fileno(), log_path=rec.log_path,
                    limits=rec.limits, network=False, degraded_ok=degraded_ok,
                    output_fd=rec.log_sink.write_fd,
                )
                handle = await self.substrate.spawn(spec)
            finally:
                agent_sock.close()  # the child holds its own copy now
                rec.log_sink.close_write_end()
            if handle.missing_layers and not degraded_ok:
                # a backend must refuse itself; this is the kernel's second line of defence
                raise IsolationUnavailable(
                    f"isolation layers unavailable: {', '.join(handle.missing_layers)}; set "
                    "`isolation: degraded` to run without them", layers=handle.missing_layers)
            rec.handle = handle
            rec.pid = handle.pid
            rec.isolation = {"backend": handle.backend, "layers": list(handle.layers),
                             "missing_layers": list(handle.missing_layers),
                             "degraded": bool(handle.missing_layers),
                             "start": "warm" if handle.warm else "cold"}
            await self.rows.persist_spawn(rec)
            persisted = True
            await self.events.record("agent.spawned", agent_id, {
                "name": name, "parent": rec.parent, "pid": rec.pid, "program": manifest.program,
                "capabilities": rec.manifest.to_data()["capabilities"],
                "limits": rec.limits.model_dump(), "isolation": rec.isolation,
            }, tuple(sorted(rec.taint)))
            await self.events.record("capability.granted", agent_id, {
                "tokens": [self.caps.describe_token(t) for t in tokens],
                "grants": [g for t in tokens for g in t.grants.strings()]})
            if handle.missing_layers:
                await self.events.record("isolation.degraded", agent_id,
                                         {"missing_layers": list(handle.missing_layers)})
            if parent is None and manifest.lifecycle == "persistent" and self.persistent is not None:
                # started again when the kernel starts (kernel/persistent.py), until the operator stops it
                remembered = True  # set first: a cancellation mid-write is forgotten by the unwinding
                await in_thread(lambda: self.persistent.remember_agent(name, manifest.to_data()))
        except BaseException as err:
            await asyncio.shield(self._unwind_spawn(rec, handle, kernel_sock, persisted, err, remembered))
            raise
        # the commit point: nothing below awaits or can fail on bad input
        self.caps.install(agent_id, tokens)
        if parent is not None:
            parent.children.append(agent_id)
        rec.set_state("running")
        rec.settled.set()
        assert kernel_sock is not None
        caller = Caller(agent_id=agent_id, name=name, workspace=workspace)
        rec.tasks.append(asyncio.create_task(self.serve_agent(rec, caller, kernel_sock)))
        rec.tasks.append(asyncio.create_task(self.reaper.reap(rec)))
        if rec.limits.wall_clock:
            rec.tasks.append(asyncio.create_task(self.control.wall_clock(rec, rec.limits.wall_clock)))
        return rec

    async def _unwind_spawn(self, rec: AgentRecord, handle: Handle | None, kernel_sock: socket.socket | None,
                            persisted: bool, err: BaseException, remembered: bool = False) -> None:
        """Undo a failed spawn (``_undo_spawn``), then its commit point, as the reaper's: the
        table entry goes (or, for an agent that lied about its confinement, stays, exited) and
        the state reads exited once all of it is done — or once a step of it failed (logged:
        the spawn's own error is the one raised) — and a stop or wait that waited returns."""
        failed = isinstance(err, AgentixError) and err.data.get("reason") == "isolation_failed"
        reason = "isolation_failed" if failed else "spawn_failed"
        rec.exit = ExitRecord(code=None, signal=None, reason=reason,
                              detail=getattr(err, "message", "") or type(err).__name__, at=self.clock.now())
        rec.ended_mono = self.clock.monotonic()  # no longer live (its exit is set); "exited" below
        try:
            await self._undo_spawn(rec, handle, kernel_sock, persisted, err, remembered)
        except Exception:
            log.exception("unwinding the spawn of %s failed", rec.agent_id)
        finally:
            if failed:
                # kept, exited, so `ps -a` shows that this agent lied about its confinement
                self.table.release_name(rec)
            else:
                self.table.discard(rec.agent_id)
            rec.state = "exited"
            rec.settled.set()
            rec.exited.set()

    async def _undo_spawn(self, rec: AgentRecord, handle: Handle | None, kernel_sock: socket.socket | None,
                          persisted: bool, err: BaseException, remembered: bool) -> None:
        """Undo a failed spawn: process, cgroup, socket, workspace, log, store rows."""
        if handle is not None:
            try:
                handle.signal(signal.SIGKILL)
                await asyncio.wait_for(handle.wait(), 10)
                await handle.cleanup()
            except Exception:
                log.exception("unwinding the spawn of %s: killing the process failed", rec.agent_id)
        if kernel_sock is not None:
            kernel_sock.close()
        if rec.log_sink is not None:
            rec.log_sink.close()
        await asyncio.to_thread(shutil.rmtree, rec.workspace, True)
        rec.log_path.unlink(missing_ok=True)
        if persisted:
            await self.rows.persist_exit(rec)
        if remembered and self.persistent is not None:
            # not started again at the next kernel start: this spawn never happened
            await asyncio.to_thread(self.persistent.forget_agent, rec.name)
        if isinstance(err, AgentixError):
            try:
                await self.events.record("agent.spawn_failed", None, {
                    "agent_id": rec.agent_id, "name": rec.name, "parent": rec.parent,
                    "error": err.code, "reason": rec.exit.reason if rec.exit else "spawn_failed",
                    "message": err.message})
            except Exception:
                log.exception("could not record the failed spawn of %s", rec.agent_id)

    def agent_env(self, rec: AgentRecord, fd: int) -> dict[str, str]:
        """The kernel's variables plus the manifest's ``env`` (validated at parse; the bwrap
        backend applies the manifest's inside the sandbox, after confinement)."""
        env = dict(rec.manifest.env)
        env.update({
            "AGENTIX_FD": str(fd),
            "AGENTIX_AGENT_ID": rec.agent_id,
            "AGENTIX_AGENT_NAME": rec.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/workspace" if self.substrate.name != "plain" else str(rec.workspace),
            "LANG": "C.UTF-8",
        })
        return env

    async def serve_agent(self, rec: AgentRecord, caller: Caller, sock: socket.socket) -> None:
        async def handler(method: str, params: dict[str, Any]) -> Any:
            rec.syscalls += 1
            return await self.pipeline.run(caller, method, params, taint=rec.taint, encoded=True)

        def opened(notify: Notify) -> None:   # streamed think text goes out through it
            rec.notify = notify

        # the tree's share of the kernel's in-flight pool: no tree locks the others out. It
        # lives while a channel of the tree is served: the last one to close removes it
        root = rec.root
        pool = self._tree_pools.get(root)
        if pool is None:
            pool = self._tree_pools[root] = self.in_flight.sub(self.config.in_flight_per_tree, "in_flight_tree")
        self._tree_channels[root] = self._tree_channels.get(root, 0) + 1
        try:
            await serve_socket(sock, handler, frame_limit=self.config.frame_limit, name=f"agent {rec.agent_id}",
                               in_flight_total=pool, on_open=opened)
        finally:
            self._tree_channels[root] -= 1
            if not self._tree_channels[root]:
                del self._tree_channels[root], self._tree_pools[root]
