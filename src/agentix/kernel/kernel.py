"""The kernel: composition root of agentixd.

``Kernel`` owns the process table, the substrate that starts agent processes, the
system-call pipeline, the tool registry, mailboxes and the event sink. The JSON-RPC
methods that expose it live in ``kernel/api.py``; this module holds the operations.

Concurrency: everything here runs on one asyncio loop; blocking work (file copies, tool
I/O) goes to threads. Each agent has a channel task (serving its system calls) and a
reaper task (waiting for its process); both end when the process ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from agentix import __version__
from agentix.core.budget import BudgetLedger, BudgetLimits
from agentix.core.errors import (
    AgentixError,
    BudgetExceeded,
    InvalidRequest,
    IsolationUnavailable,
    LimitExceeded,
    NotFound,
    StateError,
    Timeout,
)
from agentix.core.lifecycle import exit_reason
from agentix.core.mailbox import BoundedFifo
from agentix.core.manifest import Limits, Manifest, parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Caller, EventSink, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.process import AgentRecord, ExitRecord, LogSink, ProcessTable, proc_start_time
from agentix.rpc.server import InFlight, Limits as ChannelLimits, serve_socket
from agentix.sandbox import safewalk
from agentix.sandbox.base import LaunchSpec, Substrate
from agentix.store.db import Database
from agentix.tools.base import ToolRegistry

__all__ = ["Kernel"]

log = logging.getLogger(__name__)

BOOT_MODULE = "agentix.agents.boot"
MODULE_PREFIX = "module:"
#: what one spawn may copy into a workspace (a program file or package directory)
PROGRAM_BOUNDS = safewalk.Bounds(max_bytes=64 * 1024**2, max_entries=10_000, max_depth=32)


def select_substrate(config: KernelConfig, home: Home | None = None) -> Substrate:
    """The sandbox backend: bubblewrap when available, else the plain (unisolated) one.

    The plain backend reports every layer missing, so a strict spawn on it is refused
    with ``isolation_unavailable``; it only runs agents under ``isolation: degraded``.
    """
    if config.backend in ("auto", "bwrap"):
        try:
            from agentix.sandbox.bwrap import BwrapSubstrate  # type: ignore[import-not-found]
        except ImportError:
            if config.backend == "bwrap":
                raise
        else:
            from agentix.sandbox.cgroups import subtree_name

            # this kernel's own cgroup subtree, named by its home: kernels never touch each other's
            name = subtree_name(home.root) if home is not None else "agentix"
            if home is not None and config.warm_pool > 0:
                from agentix.sandbox.warm import WarmBwrapSubstrate

                return WarmBwrapSubstrate(warm_root=home.root / "warm", workspace_root=home.workspaces,
                                          warm_pool=config.warm_pool,
                                          shape=config.limits, pool=config.launcher_pool,
                                          cgroup_name=name, sweep=True)
            return BwrapSubstrate(pool=config.launcher_pool, cgroup_name=name, sweep=home is not None)
    from agentix.sandbox.plain import PlainSubstrate

    return PlainSubstrate()


class Kernel:
    caps: Any       # agentix.kernel.capabilities.CapabilityService
    cap_stage: Any  # agentix.kernel.capabilities.CapabilityStage
    memory: Any
    skills: Any
    state_store: Any
    vault: Any      # agentix.kernel.vault.Vault

    def __init__(
        self,
        home: Home,
        config: KernelConfig,
        *,
        substrate: Substrate | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.substrate = substrate or select_substrate(config, home)
        # the one database (every table, one writer: store/db.py); the tamper-evident audit
        # log in it is the event sink unless one is given (tests)
        from agentix.kernel.audit import KernelAudit

        self.db = Database(home.db, commit_window_s=config.audit_commit_window_ms / 1000)
        self.audit: KernelAudit | None = None
        if events is None:
            self.audit = KernelAudit.open(home, self.db)
            events = self.audit.sink
        self.events: EventSink = events
        self.table = ProcessTable()
        # requests in flight over every agent channel (rpc/server.py bounds)
        self.in_flight = InFlight(ChannelLimits(per_connection=config.in_flight_per_agent,
                                                batch=config.batch_limit, total=config.in_flight_total))
        self.tools = ToolRegistry()
        self.pipeline = Pipeline(self.events, tool_durability=self.tools.durability)
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.stopping = False
        self.shutdown_requested = asyncio.Event()
        self._register_builtin_tools()
        from agentix.kernel.inference import InferenceService
        from agentix.llm.config import load_config as load_inference_config

        # provider keys are read here, in the kernel, and never reach an agent
        self.inference = InferenceService(
            load_inference_config(home.root, os.environ),
            clock=time.monotonic,
            record=self.events.record,
            stop_agent=self._stop_for_budget,
        )
        from agentix.kernel import api
        from agentix.kernel.services import install_agent_services

        home.create()  # the store, archives and keys live in the home
        api.register(self)
        from agentix.kernel import capabilities

        capabilities.install(self)  # root key, tokens, the check stage, file/web/exec tools
        install_agent_services(self)
        from agentix.kernel import packages_api

        self.packages = packages_api.register(self)  # package.*, keys.*, trust.* (docs/packages.md)
        from agentix.kernel import snapshots_api

        snapshots_api.register(self)  # snapshot.create/restore/fork (docs/packages.md, "Snapshots")
        from agentix.kernel import dashboard_api, http_api

        self.http_tokens = http_api.register(self)  # tokens.* for the HTTP API (docs/http.md)
        from agentix.kernel import a2a_tool

        a2a_tool.register(self)  # the a2a_call tool, when a2a-sdk is installed (docs/integrations.md)
        from agentix.kernel import mcp_tools

        self.mcp = mcp_tools.register(self)  # declared MCP servers' tools, mcp.* (docs/integrations.md)
        dashboard_api.register(self)  # dashboard.agents for the web dashboard (docs/dashboard.md)

    # ------------------------------------------------------------------ set-up
    def _register_builtin_tools(self) -> None:
        from agentix.tools import echo

        self.tools.register(echo.SPEC)  # file, web and exec tools: kernel/capabilities.install

    async def _persist_spawn(self, rec: AgentRecord) -> None:
        """The agent's record in the durable store, so a kernel restart can account for it."""
        if self.audit is None:
            return
        from agentix.store.state import AgentStore, StoredAgent

        await AgentStore(self.audit.db).upsert(StoredAgent(
            id=rec.agent_id, name=rec.name, parent=rec.parent, manifest=rec.manifest.to_data(),
            state="running", persistent=rec.manifest.lifecycle == "persistent",
            created_at=_iso(rec.created_at), pid=rec.pid, pgid=rec.pid,
            start_time=proc_start_time(rec.pid) if rec.pid else None))

    async def _persist_exit(self, rec: AgentRecord) -> None:
        if self.audit is None or rec.exit is None:
            return
        from agentix.store.state import AgentStore

        try:
            await AgentStore(self.audit.db).mark_exited(
                rec.agent_id, rec.exit.reason, rec.exit.to_data(), _iso(rec.exit.at))
        except AgentixError as err:  # never recorded (e.g. the store was closed first)
            log.warning("could not record the exit of %s: %s", rec.agent_id, err.message)

    async def _stop_for_budget(self, agent_id: str, reason: str) -> None:
        try:
            rec = self.table.get(agent_id)
        except NotFound:
            return
        await self.stop(rec, reason=reason, detail="budget exceeded", grace=1.0)

    async def start(self) -> None:
        self.home.create()
        if self.audit is not None:
            report = await self.audit.start()
            if not report.chain_ok:
                log.error("audit log check at start failed: %s (run `agentix audit verify`)",
                          report.chain_detail)
            if report.exited:
                log.warning("the last kernel left %d agents running; recorded them exited "
                            "(kernel_restart)", len(report.exited))
                _kill_leftovers(report.exited)
            restored = self.caps.ledger.load()  # revocations and counts, after recovery's
            log.info("restored %d revocations, %d invocation counts, %d issued-token records "
                     "and %d pending approvals", restored["revocations"],
                     restored["invocation_counts"], restored["issued_tokens"],
                     len(report.pending_approvals))
            self._restore_records()
        # the backend audits what it decides alone (a warm worker that failed verification)
        self.substrate.record_event = lambda kind, aid, data: self.events.record(kind, aid, data)
        await self.substrate.warm()  # pre-starts launchers and warm workers ([kernel] *_pool)
        await self.events.record("kernel.started", None, {
            "version": __version__, "pid": os.getpid(), "backend": self.substrate.name})

    def _restore_records(self, keep: int = 10_000) -> None:
        """Put the store's agents of earlier runs in the table (exited), for ``ps -a`` and ``inspect``."""
        assert self.audit is not None
        from agentix.store.state import AgentStore

        for a in AgentStore(self.audit.db).list()[-keep:]:
            if a.state != "exited":
                continue
            try:
                self.table.get(a.id)
                continue
            except NotFound:
                pass
            try:
                manifest = parse_manifest(a.manifest)
            except Exception:  # noqa: BLE001 - an old or foreign record must not stop the start
                log.warning("agent record %s has a manifest this kernel cannot read; not listed", a.id)
                continue
            ex = a.exit_record or {}
            at = _ts(a.exited_at)
            rec = AgentRecord(
                agent_id=a.id, name=a.name, manifest=manifest, parent=a.parent, depth=0,
                root=a.id, workspace=self.home.workspaces / a.id,
                log_path=self.home.logs / f"{a.id}.log",
                limits=self.config.effective_limits(manifest.limits),
                created_at=_ts(a.created_at) or 0.0, state="exited", pid=a.pid, restored=True,
                exit=ExitRecord(code=ex.get("code"), signal=ex.get("signal"),
                                reason=a.exit_reason or str(ex.get("reason") or "unknown"),
                                detail=str(ex.get("detail") or ""), at=at or 0.0))
            rec.ended_mono = rec.started_mono
            rec.settled.set()
            rec.exited.set()
            self.table.restore(rec)

    def info(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for rec in self.table:
            states[rec.state] = states.get(rec.state, 0) + 1
        return {
            "version": __version__,
            "pid": os.getpid(),
            "home": str(self.home.root),
            "uptime_s": round(time.monotonic() - self.started_mono, 3),
            "agents": {"live": self.table.live_count(), "total": len(self.table), "by_state": states},
            "isolation": {"default": self.config.isolation, **self.substrate.describe()},
            "limits": {"max_depth": self.config.max_depth, "max_agents": self.config.max_agents,
                       "frame_limit": self.config.frame_limit,
                       **{key: getattr(self.config, key) for key in (
                           "batch_limit", "in_flight_per_agent", "in_flight_total", "mailbox_capacity",
                           "mailbox_bytes", "exec_per_agent", "exec_total", "exec_max_timeout",
                           "fetch_max_timeout", "log_max_bytes", "archive_quota", "state_quota")}},
            "syscalls": {"calls": self.pipeline.calls, "refusals": self.pipeline.refusals,
                         **self.in_flight.statistics()},
            "tools": self.tools.names(),
        }

    # ------------------------------------------------------------------ spawning
    def _new_id(self) -> str:
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
        prepare: Any = None,
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
        _check_host_limits(limits)
        agent_id = self._new_id()
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
        now = time.monotonic()
        limits_b = BudgetLimits.from_manifest(manifest.budget)
        # a child's budget is carved out of its parent's remaining budget (refused if over)
        budget = parent.budget.carve(limits_b, now) if parent is not None else BudgetLedger(limits_b, now)
        rec = AgentRecord(
            agent_id=agent_id, name=self.table.unique_name(manifest.name), manifest=manifest,
            parent=parent.agent_id if parent else None, depth=depth,
            root=parent.root if parent else agent_id,
            workspace=self.home.workspaces / agent_id, log_path=self.home.logs / f"{agent_id}.log",
            limits=limits,
        )
        rec.budget = budget
        rec.mailbox = BoundedFifo(self.config.mailbox_capacity, owner=rec.name,
                                  max_bytes=self.config.mailbox_bytes)
        if parent is not None:
            rec.taint |= parent.taint  # labels survive being passed on
        if message is not None:
            env = self._envelope(parent, message, rec.taint)
            rec.mailbox.put(env, _size(env))
        self.table.add(rec)  # the reservation: the name and one max_agents slot
        try:
            return await self._spawn(rec, parent, program_base, degraded_ok, tokens, seed, prepare)
        except BaseException:
            if parent is not None:
                parent.budget.close_child(budget, time.monotonic())
                parent.budget.children -= 1
            raise

    async def _spawn(self, rec: AgentRecord, parent: AgentRecord | None, program_base: Path | None,
                     degraded_ok: bool, tokens: list[Any], seed: Path | None = None,
                     prepare: Any = None) -> AgentRecord:
        """The asynchronous steps of a spawn; on any failure every step taken is undone."""
        manifest, agent_id, name, workspace = rec.manifest, rec.agent_id, rec.name, rec.workspace
        handle = None
        kernel_sock: socket.socket | None = None
        persisted = False
        try:
            workspace.mkdir(mode=0o700)
            if seed is not None:
                # a package tree the kernel itself unpacked and verified (not agent-controlled)
                from agentix.packages.unpack import seed_workspace

                target = await asyncio.to_thread(seed_workspace, seed, workspace, manifest.program)
            else:
                target = await asyncio.to_thread(self._install_program, manifest.program, workspace,
                                                 parent, program_base)
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
                    workspace=workspace, env=self._agent_env(rec, agent_sock.fileno()),
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
            await self._persist_spawn(rec)
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
            if parent is None and manifest.lifecycle == "persistent" and getattr(self, "state_store", None):
                # started again when the kernel starts (kernel/persistent.py), until the operator stops it
                await asyncio.to_thread(self.state_store.remember_agent, name, manifest.to_data())
        except BaseException as err:
            await asyncio.shield(self._unwind_spawn(rec, handle, kernel_sock, persisted, err))
            raise
        # the commit point: nothing below awaits or can fail on bad input
        self.caps.install(agent_id, tokens)
        if parent is not None:
            parent.children.append(agent_id)
        rec.set_state("running")
        rec.settled.set()
        assert kernel_sock is not None
        caller = Caller(agent_id=agent_id, name=name, workspace=workspace)
        rec.tasks.append(asyncio.create_task(self._serve_agent(rec, caller, kernel_sock)))
        rec.tasks.append(asyncio.create_task(self._reap(rec)))
        if rec.limits.wall_clock:
            rec.tasks.append(asyncio.create_task(self._wall_clock(rec, rec.limits.wall_clock)))
        return rec

    async def _unwind_spawn(self, rec: AgentRecord, handle: Any, kernel_sock: socket.socket | None,
                            persisted: bool, err: BaseException) -> None:
        """Undo a failed spawn: process, cgroup, socket, workspace, log, store row, table entry."""
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
        failed = isinstance(err, AgentixError) and err.data.get("reason") == "isolation_failed"
        reason = "isolation_failed" if failed else "spawn_failed"
        rec.exit = ExitRecord(code=None, signal=None, reason=reason,
                              detail=getattr(err, "message", "") or type(err).__name__, at=time.time())
        rec.ended_mono = time.monotonic()
        rec.state = "exited"
        if failed:
            # kept, exited, so `ps -a` shows that this agent lied about its confinement
            self.table.release_name(rec)
        else:
            self.table.discard(rec.agent_id)
        if persisted:
            await self._persist_exit(rec)
        rec.settled.set()
        rec.exited.set()
        if isinstance(err, AgentixError):
            try:
                await self.events.record("agent.spawn_failed", None, {
                    "agent_id": rec.agent_id, "name": rec.name, "parent": rec.parent,
                    "error": err.code, "reason": reason, "message": err.message})
            except Exception:
                log.exception("could not record the failed spawn of %s", rec.agent_id)

    def _agent_env(self, rec: AgentRecord, fd: int) -> dict[str, str]:
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

    def _install_program(self, program: str, workspace: Path, parent: AgentRecord | None,
                         base: Path | None) -> str:
        """Copy the program into the workspace; return what boot runs (relative path or module:).

        Every copy goes through the safe walker (``sandbox/safewalk.py``): a child's program
        is opened below its parent's workspace one component at a time without following a
        link; an operator's program file or directory is opened without following a link as
        its last component. Only regular files and directories are copied; a symlink, FIFO,
        socket or device anywhere is refused, and so is a copy over ``PROGRAM_BOUNDS``.
        """
        if program.startswith(MODULE_PREFIX):
            module = program[len(MODULE_PREFIX):]
            if not module.startswith("agentix.agents.") or not all(
                    p.isidentifier() for p in module.split(".")):
                raise InvalidRequest(
                    f"program {program!r}: only built-in programs under agentix.agents can be "
                    "named as modules", field="program")
            if not _builtin_program_exists(module):
                raise InvalidRequest(
                    f"program {program!r}: there is no built-in program {module}; built-in "
                    "programs are modules under agentix.agents (e.g. module:agentix.agents.loop)",
                    field="program")
            return program
        try:
            if parent is not None:
                # a path inside the parent's own workspace
                rel = program.removeprefix("/workspace/") if program.startswith("/workspace/") else program
                if program.startswith("/") and not program.startswith("/workspace/"):
                    raise safewalk.WalkError(program, "must be a path inside your workspace")
                root = safewalk.open_dir(parent.workspace)
                try:
                    fd, st = safewalk.open_beneath(root, rel)
                finally:
                    os.close(root)
                shown = program
            else:
                src = Path(program)
                if not src.is_absolute():
                    if base is None:
                        raise InvalidRequest(
                            f"program {program!r} must be an absolute path (the CLI and SDK resolve "
                            "relative paths for you)", field="program")
                    src = base / src
                if src.name in ("", ".", ".."):
                    raise safewalk.WalkError(str(src), "must name a file or directory")
                d = safewalk.open_dir(src.parent)
                try:
                    fd, st = safewalk.open_beneath(d, src.name)
                finally:
                    os.close(d)
                shown = str(src)
            try:
                name = shown.rstrip("/").rsplit("/", 1)[-1]
                if stat.S_ISREG(st.st_mode) and not name.endswith(".py"):
                    raise InvalidRequest(f"program {shown} must be a .py file or a package directory",
                                         field="program")
                ws = safewalk.open_dir(workspace, follow=False)
                try:
                    safewalk.copy_entry(fd, st, ws, name, bounds=PROGRAM_BOUNDS, special="refuse",
                                        skip_names=frozenset({"__pycache__"}), skip_suffixes=(".pyc",))
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            main = os.stat(f"{name}/__main__.py", dir_fd=ws, follow_symlinks=False)
                        except OSError:
                            main = None
                        if main is None or not stat.S_ISREG(main.st_mode):
                            raise InvalidRequest(f"program directory {shown} has no __main__.py",
                                                 field="program")
                finally:
                    os.close(ws)
            finally:
                os.close(fd)
        except safewalk.WalkError as err:
            where = f"{program}" if not err.path or err.path == program else f"{program} ({err.path})"
            raise InvalidRequest(f"program {where}: {err.why}; programs are copied as regular "
                                 "files and directories only", field="program") from None
        return name

    # ------------------------------------------------------------------ the channel
    async def _serve_agent(self, rec: AgentRecord, caller: Caller, sock: socket.socket) -> None:
        async def handler(method: str, params: dict[str, Any]) -> Any:
            rec.syscalls += 1
            return await self.pipeline.run(caller, method, params, taint=rec.taint)

        def opened(notify: Any) -> None:   # streamed think text goes out through it
            rec.notify = notify

        await serve_socket(sock, handler, frame_limit=self.config.frame_limit, name=f"agent {rec.agent_id}",
                           in_flight_total=self.in_flight, on_open=opened)

    # ------------------------------------------------------------------ exit
    async def _reap(self, rec: AgentRecord) -> None:
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
        rec.exit = ExitRecord(code=info.code, signal=info.signal, reason=reason, detail=detail, at=time.time())
        rec.ended_mono = time.monotonic()
        if rec.state != "exited":
            rec.state = "exited"
        self.table.release_name(rec)
        await self._persist_exit(rec)
        self.inference.cancel_agent(rec.agent_id)
        revoked = self.caps.revoke_agent(rec.agent_id)  # a dead agent's tokens die with it
        if revoked:
            await self.events.record("capability.revoked", rec.agent_id,
                                     {"token_ids": revoked, "why": "agent exited"})
        if rec.parent is not None and rec.budget is not None:
            parent = self.table.get(rec.parent)
            for sig in parent.budget.close_child(rec.budget, time.monotonic()):
                await self.events.record("budget.warning" if sig.kind == "warning" else "budget.exceeded",
                                         parent.agent_id, sig.to_data())
        try:
            rec.last_stats = rec.handle.stats()  # the last sample: the cgroup goes next
        except Exception:
            log.exception("stats of %s failed", rec.agent_id)
        try:
            await rec.handle.cleanup()
        except Exception:
            log.exception("cleanup of %s failed", rec.agent_id)
        for task in rec.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self.events.record("agent.exited", rec.agent_id, {
            "name": rec.name, **rec.exit.to_data(), "runtime_s": round(rec.runtime(), 3),
            "syscalls": rec.syscalls,
        })
        rec.exited.set()
        rec.mail_event.set()
        # the subtree does not outlive its root
        live_children = [self.table.get(c) for c in rec.children if self.table.get(c).live]
        if live_children:
            await asyncio.gather(*(self.stop(c, reason="killed", detail=f"parent {rec.agent_id} exited")
                                   for c in live_children), return_exceptions=True)

    async def _wall_clock(self, rec: AgentRecord, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if rec.live:
            await self.stop(rec, reason="timeout", detail=f"wall-clock limit of {seconds:g}s reached", grace=1.0)

    # ------------------------------------------------------------------ control
    async def stop(self, rec: AgentRecord, *, reason: str = "killed", detail: str = "",
                   grace: float | None = None) -> AgentRecord:
        """SIGTERM to the process group, grace period, SIGKILL; the subtree first."""
        if not rec.live:
            return rec
        if rec.state == "spawning" and not rec.settled.is_set():
            # mid-spawn: the spawn either commits or unwinds within its own bounds (program
            # copy bounded, the substrate's confine timeout); then stop what it became
            await rec.settled.wait()
            if not rec.live:
                return rec
        if rec.state == "stopping":
            await rec.exited.wait()
            return rec
        rec.requested_reason = reason
        rec.requested_detail = detail
        was_paused = rec.state == "paused"
        rec.set_state("stopping")
        children = [self.table.get(c) for c in rec.children]
        live = [c for c in children if c.live]
        if live:
            await asyncio.gather(*(self.stop(c, reason="killed", detail=f"parent {rec.agent_id} stopped",
                                             grace=grace) for c in live), return_exceptions=True)
        assert rec.handle is not None
        grace = self.config.stop_grace if grace is None else grace
        # no grace (agent.kill) means SIGKILL at once, not a SIGTERM the process may die of first
        rec.handle.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if was_paused:
            if not rec.handle.freeze(False):
                rec.handle.signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(asyncio.shield(rec.exited.wait()), timeout=grace)
        except asyncio.TimeoutError:
            rec.handle.signal(signal.SIGKILL)
            await rec.exited.wait()
        return rec

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
        if rec.live:
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
            "budget": rec.budget.snapshot(time.monotonic()) if rec.budget is not None else None,
        })
        return data

    # ------------------------------------------------------------------ messages
    @staticmethod
    def _envelope(sender: AgentRecord | None, message: Any, taint: set[str]) -> dict[str, Any]:
        return {
            "from": sender.agent_id if sender else None,
            "from_name": sender.name if sender else "operator",
            "message": message,
            "sent_at": time.time(),
            "taint": sorted(taint),
        }

    async def deliver(self, sender: AgentRecord | None, target: AgentRecord, message: Any) -> dict[str, Any]:
        if not target.live:
            raise NotFound(f"agent {target.name} ({target.agent_id}) has exited", agent=target.agent_id)
        taint = set(sender.taint) if sender else set()
        if sender is not None:
            taint.add("agent_message")
        env = self._envelope(sender, message, taint)
        target.mailbox.put(env, _size(env))
        target.mail_event.set()
        await self.events.record("message.sent", sender.agent_id if sender else None, {
            "to": target.agent_id, "to_name": target.name}, tuple(sorted(taint)))
        return {"delivered": True, "to": target.agent_id, "queued": len(target.mailbox)}

    async def receive(self, rec: AgentRecord, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            env = rec.mailbox.get()
            if env is not None:
                rec.taint |= set(env.get("taint", ()))
                await self.events.record("message.delivered", rec.agent_id,
                                         {"from": env["from"], "from_name": env["from_name"]},
                                         tuple(env.get("taint", ())))
                return env
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not rec.live:
                return None
            rec.mail_event.clear()
            try:
                await asyncio.wait_for(rec.mail_event.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return None

    # ------------------------------------------------------------------ shutdown
    async def shutdown(self, grace: float | None = None) -> None:
        """Stop every agent (roots first; each takes its subtree), then stop."""
        self.stopping = True
        roots = [r for r in self.table if r.live and r.parent is None]
        orphans = [r for r in self.table if r.live and r.parent is not None]
        await asyncio.gather(*(self.stop(r, reason="killed", detail="kernel shutting down", grace=grace)
                               for r in roots + orphans), return_exceptions=True)
        await self.mcp.close()
        await self.substrate.close()
        await self.inference.aclose()
        await self.events.record("kernel.stopped", None, {"agents": len(self.table)})
        vault = getattr(self, "vault", None)
        if vault is not None:
            vault.uninstall()  # this kernel's log filters go with it
        if self.audit is not None:
            await self.audit.stop()  # records the clean stop
        else:
            close = getattr(self.events, "close", None)
            if close is not None:
                res = close()
                if asyncio.iscoroutine(res):
                    await res
        self.db.close()  # the kernel opened it; every queued write is committed first


def _builtin_program_exists(module: str) -> bool:
    """Whether ``module`` (under agentix.agents, already checked) can be run by boot."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def parse_spawn_manifest(params: dict[str, Any]) -> tuple[Manifest, Path | None]:
    """The manifest of an ``agent.spawn`` request: inline, or read from ``manifest_path``.

    The SDK and CLI read a manifest file themselves (with the operator's own permissions)
    and send it inline. A ``manifest_path`` the kernel reads for a caller is opened without
    blocking (a FIFO or device is refused), read up to ``MAX_MANIFEST_TEXT`` bytes, and its
    errors never echo the file's content: the caller may not be able to read that file.
    """
    from agentix.core.manifest import MAX_MANIFEST_TEXT, load_manifest_text

    if "manifest" in params and params["manifest"] is not None:
        base = params.get("base_dir")
        if isinstance(base, str) and not os.path.isabs(base):
            raise InvalidRequest("base_dir must be absolute", field="base_dir")
        return parse_manifest(params["manifest"]), Path(base) if isinstance(base, str) else None
    path = params.get("manifest_path")
    if not isinstance(path, str):
        raise InvalidRequest('agent.spawn needs "manifest" (an object) or "manifest_path"', field="manifest")
    if "\x00" in path or not os.path.isabs(path):
        raise InvalidRequest("manifest_path must be absolute", field="manifest_path")
    p = Path(path)
    try:
        data = safewalk.read_file(None, str(p), MAX_MANIFEST_TEXT)
    except safewalk.WalkError as err:
        raise InvalidRequest(f"cannot read manifest {p}: {err.why}", field="manifest_path") from None
    text = data.decode("utf-8", errors="replace")
    return load_manifest_text(text, redact=True), p.parent


def _check_host_limits(limits: Limits) -> None:
    """Limits the manifest model cannot judge alone: what this kernel process can grant."""
    import resource

    if limits.nofile is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and limits.nofile > hard:
            raise InvalidRequest(
                f"invalid manifest: limits.nofile: {limits.nofile} is above the kernel's own hard "
                f"limit of {hard} open files (an unprivileged sandbox cannot be granted more)",
                field="limits.nofile", limit=hard)


def _size(envelope: dict[str, Any]) -> int:
    """What a queued message counts against its mailbox's byte limit (its JSON size)."""
    import orjson

    return len(orjson.dumps(envelope, default=str))


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _ts(iso: str | None) -> float | None:
    from datetime import datetime

    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _kill_leftovers(left: list[Any]) -> None:
    """Kill process groups a dead kernel left behind (bwrap dies with its kernel; this is the
    second line). A leftover is the recorded pid with the recorded start time (/proc/<pid>/stat
    field 22), never a command line: a reused pid has another start time and is left alone, and
    a record without a start time is not acted on (its cgroup is still swept at start)."""
    for a in left:
        if not a.pid or a.start_time is None:
            continue
        if proc_start_time(a.pid) != a.start_time:
            continue  # gone, or the pid now belongs to another process
        try:
            if a.pgid and os.getpgid(a.pid) == a.pgid:
                os.killpg(a.pgid, signal.SIGKILL)
            else:
                os.kill(a.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
