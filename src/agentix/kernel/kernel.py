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
from agentix.core.manifest import Manifest, parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Caller, EventSink, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.process import AgentRecord, ExitRecord, ProcessTable
from agentix.rpc.server import serve_socket
from agentix.sandbox.base import LaunchSpec, Substrate
from agentix.tools.base import ToolRegistry

__all__ = ["Kernel"]

log = logging.getLogger(__name__)

BOOT_MODULE = "agentix.agents.boot"
MODULE_PREFIX = "module:"


def select_substrate(config: KernelConfig) -> Substrate:
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
            return BwrapSubstrate(pool=config.launcher_pool)
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
        self.substrate = substrate or select_substrate(config)
        # the tamper-evident audit log is the event sink unless one is given (tests)
        from agentix.kernel.audit import KernelAudit

        self.audit: KernelAudit | None = None
        if events is None:
            self.audit = KernelAudit.open(home)
            events = self.audit.sink
        self.events: EventSink = events
        self.table = ProcessTable()
        self.tools = ToolRegistry()
        self.pipeline = Pipeline(self.events)
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

    # ------------------------------------------------------------------ set-up
    def _register_builtin_tools(self) -> None:
        from agentix.tools import echo

        self.tools.register(echo.SPEC)  # file, web and exec tools: kernel/capabilities.install

    async def _persist_spawn(self, rec: AgentRecord) -> None:
        """The agent's record in the durable store, so a kernel restart can account for it."""
        if self.audit is None:
            return
        from agentix.store.state import AgentRecord as StoredAgent, AgentStore

        await AgentStore(self.audit.db).upsert(StoredAgent(
            id=rec.agent_id, name=rec.name, parent=rec.parent, manifest=rec.manifest.to_data(),
            state="running", persistent=rec.manifest.lifecycle == "persistent",
            created_at=_iso(rec.created_at), pid=rec.pid, pgid=rec.pid))

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
        await self.substrate.warm()  # pre-starts launchers if [kernel] launcher_pool > 0
        await self.events.record("kernel.started", None, {
            "version": __version__, "pid": os.getpid(), "backend": self.substrate.name})

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
                       "frame_limit": self.config.frame_limit},
            "syscalls": {"calls": self.pipeline.calls, "refusals": self.pipeline.refusals},
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
        """Start an agent process for ``manifest``. Refusals leave nothing behind.

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

        # constraints only accumulate (approval_required); LLM roots get finite default budgets
        manifest = self.caps.constrain(manifest, parent)
        now = time.monotonic()
        limits_b = BudgetLimits.from_manifest(manifest.budget)
        # a child's budget is carved out of its parent's remaining budget (refused if over)
        budget = parent.budget.carve(limits_b, now) if parent is not None else BudgetLedger(limits_b, now)
        try:
            return await self._spawn(manifest, parent, message, program_base, degraded_ok, depth, budget,
                                     seed, prepare)
        except BaseException:
            if parent is not None:
                parent.budget.close_child(budget, time.monotonic())
                parent.budget.children -= 1
            raise

    async def _spawn(self, manifest: Manifest, parent: AgentRecord | None, message: Any,
                     program_base: Path | None, degraded_ok: bool, depth: int,
                     budget: BudgetLedger, seed: Path | None = None, prepare: Any = None) -> AgentRecord:
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
        workspace = self.home.workspaces / agent_id
        log_path = self.home.logs / f"{agent_id}.log"
        name = self.table.unique_name(manifest.name)
        workspace.mkdir(mode=0o700)
        try:
            if seed is not None:
                from agentix.packages.unpack import seed_workspace

                target = await asyncio.to_thread(seed_workspace, seed, workspace, manifest.program)
            else:
                target = await asyncio.to_thread(self._install_program, manifest.program, workspace,
                                                 parent, program_base)
        except BaseException:
            shutil.rmtree(workspace, ignore_errors=True)
            raise
        limits = self.config.effective_limits(manifest.limits)
        rec = AgentRecord(
            agent_id=agent_id, name=name, manifest=manifest,
            parent=parent.agent_id if parent else None, depth=depth,
            root=parent.root if parent else agent_id,
            workspace=workspace, log_path=log_path, limits=limits,
        )
        rec.budget = budget
        rec.mailbox = BoundedFifo(self.config.mailbox_capacity, owner=name)
        if parent is not None:
            rec.taint |= parent.taint  # labels survive being passed on
        if message is not None:
            rec.mailbox.put(self._envelope(parent, message, rec.taint))
        if prepare is not None:
            try:
                await prepare(rec)
            except BaseException:
                shutil.rmtree(workspace, ignore_errors=True)
                raise

        kernel_sock, agent_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        os.set_inheritable(agent_sock.fileno(), True)
        env = self._agent_env(rec, agent_sock.fileno())
        spec = LaunchSpec(
            agent_id=agent_id, name=name,
            argv=[sys.executable, "-m", BOOT_MODULE, target, *manifest.args],
            workspace=workspace, env=env, channel_fd=agent_sock.fileno(), log_path=log_path,
            limits=limits, network=False, degraded_ok=degraded_ok,
        )
        try:
            handle = await self.substrate.spawn(spec)
        except BaseException as err:
            kernel_sock.close()
            agent_sock.close()
            shutil.rmtree(workspace, ignore_errors=True)
            log_path.unlink(missing_ok=True)
            if isinstance(err, AgentixError):
                await self.events.record("agent.spawn_failed", None, {
                    "name": name, "parent": rec.parent, "error": err.code, "message": err.message})
            raise
        finally:
            agent_sock.close()  # the child holds its own copy now
        if handle.missing_layers and not degraded_ok:
            # a backend must refuse itself; this is the kernel's second line of defence
            handle.signal(signal.SIGKILL)
            await handle.wait()
            await handle.cleanup()
            kernel_sock.close()
            shutil.rmtree(workspace, ignore_errors=True)
            raise IsolationUnavailable(
                f"isolation layers unavailable: {', '.join(handle.missing_layers)}; set "
                "`isolation: degraded` to run without them", layers=handle.missing_layers)
        rec.handle = handle
        rec.pid = handle.pid
        rec.isolation = {"backend": handle.backend, "layers": list(handle.layers),
                         "missing_layers": list(handle.missing_layers),
                         "degraded": bool(handle.missing_layers)}
        self.table.add(rec)
        await self._persist_spawn(rec)
        self.caps.install(agent_id, tokens)
        if parent is not None:
            parent.children.append(agent_id)
        rec.set_state("running")
        caller = Caller(agent_id=agent_id, name=name, workspace=workspace)
        rec.tasks.append(asyncio.create_task(self._serve_agent(rec, caller, kernel_sock)))
        rec.tasks.append(asyncio.create_task(self._reap(rec)))
        if limits.wall_clock:
            rec.tasks.append(asyncio.create_task(self._wall_clock(rec, limits.wall_clock)))
        await self.events.record("agent.spawned", agent_id, {
            "name": name, "parent": rec.parent, "pid": rec.pid, "program": manifest.program,
            "capabilities": rec.manifest.to_data()["capabilities"],
            "limits": limits.model_dump(), "isolation": rec.isolation,
        }, tuple(sorted(rec.taint)))
        await self.events.record("capability.granted", agent_id, {
            "tokens": [self.caps.describe_token(t) for t in tokens],
            "grants": [g for t in tokens for g in t.grants.strings()]})
        if parent is None and manifest.lifecycle == "persistent" and getattr(self, "state_store", None):
            # started again when the kernel starts (kernel/persistent.py), until the operator stops it
            await asyncio.to_thread(self.state_store.remember_agent, name, manifest.to_data())
        if handle.missing_layers:
            await self.events.record("isolation.degraded", agent_id,
                                     {"missing_layers": list(handle.missing_layers)})
        return rec

    def _agent_env(self, rec: AgentRecord, fd: int) -> dict[str, str]:
        env = dict(rec.manifest.env)
        env.update({
            "AGENTIX_FD": str(fd),
            "AGENTIX_AGENT_ID": rec.agent_id,
            "AGENTIX_AGENT_NAME": rec.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/workspace" if self.substrate.name != "plain" else str(rec.workspace),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        return env

    def _install_program(self, program: str, workspace: Path, parent: AgentRecord | None,
                         base: Path | None) -> str:
        """Copy the program into the workspace; return what boot runs (relative path or module:)."""
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
        if parent is not None:
            # a path inside the parent's own workspace, copied without following links
            return _copy_from_workspace(parent.workspace, program, workspace)
        src = Path(program)
        if not src.is_absolute():
            if base is None:
                raise InvalidRequest(
                    f"program {program!r} must be an absolute path (the CLI and SDK resolve "
                    "relative paths for you)", field="program")
            src = base / src
        if not src.exists():
            raise InvalidRequest(f"program {src} does not exist", field="program")
        if src.is_dir():
            if not (src / "__main__.py").is_file():
                raise InvalidRequest(f"program directory {src} has no __main__.py", field="program")
            dest = workspace / src.name
            shutil.copytree(src, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            return src.name
        if src.suffix != ".py":
            raise InvalidRequest(f"program {src} must be a .py file or a package directory", field="program")
        shutil.copy2(src, workspace / src.name)
        return src.name

    # ------------------------------------------------------------------ the channel
    async def _serve_agent(self, rec: AgentRecord, caller: Caller, sock: socket.socket) -> None:
        async def handler(method: str, params: dict[str, Any]) -> Any:
            rec.syscalls += 1
            return await self.pipeline.run(caller, method, params, taint=rec.taint)

        await serve_socket(sock, handler, frame_limit=self.config.frame_limit, name=f"agent {rec.agent_id}")

    # ------------------------------------------------------------------ exit
    async def _reap(self, rec: AgentRecord) -> None:
        assert rec.handle is not None
        info = await rec.handle.wait()
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
        target.mailbox.put(self._envelope(sender, message, taint))
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
        await self.substrate.close()
        await self.inference.aclose()
        await self.events.record("kernel.stopped", None, {"agents": len(self.table)})
        vault = getattr(self, "vault", None)
        if vault is not None:
            vault.uninstall()  # this kernel's log filters go with it
        if self.audit is not None:
            await self.audit.stop()
            return
        close = getattr(self.events, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                await res


def _builtin_program_exists(module: str) -> bool:
    """Whether ``module`` (under agentix.agents, already checked) can be run by boot."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def parse_spawn_manifest(params: dict[str, Any]) -> tuple[Manifest, Path | None]:
    """The manifest of an ``agent.spawn`` request: inline, or read from ``manifest_path``."""
    from agentix.core.manifest import load_manifest_text

    if "manifest" in params and params["manifest"] is not None:
        base = params.get("base_dir")
        return parse_manifest(params["manifest"]), Path(base) if isinstance(base, str) else None
    path = params.get("manifest_path")
    if not isinstance(path, str):
        raise InvalidRequest('agent.spawn needs "manifest" (an object) or "manifest_path"', field="manifest")
    p = Path(path)
    if not p.is_absolute():
        raise InvalidRequest("manifest_path must be absolute", field="manifest_path")
    try:
        text = p.read_text()
    except OSError as err:
        raise InvalidRequest(f"cannot read manifest {p}: {err.strerror}", field="manifest_path") from None
    return load_manifest_text(text), p.parent


def _copy_from_workspace(root: Path, rel: str, dest_ws: Path) -> str:
    """Copy ``rel`` from a parent's workspace into ``dest_ws`` without following symlinks."""
    p = rel.removeprefix("/workspace/") if rel.startswith("/workspace/") else rel
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or ".." in parts or rel.startswith("/") and not rel.startswith("/workspace/"):
        raise InvalidRequest(f"program {rel!r} must be a path inside your workspace", field="program")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            nfd = os.open(name, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        try:
            leaf = os.open(parts[-1], flags, dir_fd=fd)
        except OSError as err:
            raise InvalidRequest(f"program {rel!r}: {err.strerror} (symlinks are not followed)",
                                 field="program") from None
    except OSError as err:
        raise InvalidRequest(f"program {rel!r}: {err.strerror} (symlinks are not followed)",
                             field="program") from None
    finally:
        os.close(fd)
    try:
        st = os.fstat(leaf)
        if stat.S_ISDIR(st.st_mode):
            _copy_tree_fd(leaf, dest_ws / parts[-1])
            if not (dest_ws / parts[-1] / "__main__.py").is_file():
                raise InvalidRequest(f"program directory {rel!r} has no __main__.py", field="program")
        elif stat.S_ISREG(st.st_mode):
            if not parts[-1].endswith(".py"):
                raise InvalidRequest(f"program {rel!r} must be a .py file", field="program")
            with os.fdopen(os.dup(leaf), "rb") as src, open(dest_ws / parts[-1], "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            raise InvalidRequest(f"program {rel!r} is not a file or directory", field="program")
    finally:
        os.close(leaf)
    return parts[-1]


def _copy_tree_fd(dir_fd: int, dest: Path, depth: int = 0) -> None:
    """Copy regular files and directories below ``dir_fd``; symlinks and devices are skipped."""
    if depth > 16:
        raise InvalidRequest("program directory is nested too deeply", field="program")
    dest.mkdir()
    with os.scandir(dir_fd) as it:
        entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    for name, st in entries:
        if name == "__pycache__":
            continue
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            try:
                _copy_tree_fd(sub, dest / name, depth + 1)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            f = os.open(name, flags, dir_fd=dir_fd)
            with os.fdopen(f, "rb") as src, open(dest / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _kill_leftovers(left: list[Any]) -> None:
    """Kill process groups a dead kernel left behind (bwrap dies with its kernel; this is the
    second line). A pid is only signalled if it still runs a sandbox launcher or python, so a
    reused pid of an unrelated process is left alone."""
    for a in left:
        pgid = a.pgid or a.pid
        if not pgid:
            continue
        try:
            with open(f"/proc/{pgid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue  # gone
        if b"bwrap" in cmd or b"agentix" in cmd:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
