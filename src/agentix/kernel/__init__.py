"""agentixd, the kernel: what it is made of, and where each system call lives.

The kernel is one composition root, ``kernel.KernelRoot``: its ``__init__`` builds every service
below once, in this order, and passes each the services it uses (no service is looked up
or attached later, nothing is patched). Imports point down this list; no module imports
another in a circle (``tests/test_layering.py``).

Construction order (``kernel/kernel.py``)::

    0. clock.Clock               the one clock (clock.SystemClock; a test passes a VirtualClock
                                 and steps it): every service that decides by time is given it
    1. store.db.Database         the one store (agentix.db: every table, one writer)
       audit_log.KernelAudit     the tamper-evident log in it; its sink records every event
                                 (a test may pass its own sink)
    2. vault.Vault               secrets and provider keys; vault.sink(events) redacts every
                                 event, Pipeline(redactor=vault) every reply and error
       record_gate.RecordGate    the events (event_sink.EventSink: they only write; reading
                                 is the log's, KernelRoot.audit.sink): each caller's quota of
                                 no-change records
       sandbox Substrate         kernel.select_substrate (or the one given); the warm pool
                                 audits a worker it rejects through the events
    3. process.ProcessTable      every agent's record, live or exited (its log: process.LogSink,
                                 a pipes.PipeReader like one_shot.CappedOutput)
       tools.base.ToolRegistry   the tools, by name
       dispatch.Pipeline         one call: method table row -> stages -> handler -> audit
                                 (live_calls.LiveCalls: decided calls at work, ended when
                                 a revocation or an expiry ends their authority)
    4. control.Control           stop (subtree first), kill, pause, resume, wait, status
       inference.InferenceService   think: per-provider scheduler, rate limits, budgets
       cap_service.CapabilityService  root key, tokens, the one decision, approvals
       lookup.Lookup             what the method table's resource functions may read
       messaging.Messaging       mailboxes: deliver, receive (taint travels)
       store.saved_state.StateStore  saved state and persistent roots
       agent_rows.AgentRows      agents' rows in the store (restart accounting)
       reap.Reaper               what happens when a process ends
       spawn.Spawner             admission, program copy (program.py), confinement, channel
       memory.store.MemoryStore, tools.skills.SkillCatalog
       packages.service.PackageStore  the local package store (registry/, keys, trust) and
                                 its one writer's lock (package.* and snapshot.* share both)
    5. stages                    cap_stage.CapabilityStage, then trusted_state.DurableStateStage
    6. tools                     echo, files, net_exec (web_fetch, exec), memory, skills,
                                 (exec and package build steps: one_shot.run_once, one
                                 sandboxed run with a deadline and capped output)
                                 a2a_tool (a2a_call, when a2a-sdk is installed),
                                 mcp_tools.McpTools (declared MCP servers' mcp__* tools; its parts:
                                 mcp_config declarations, mcp_server one server's lifecycle,
                                 mcp_stdio/mcp_remote the wires, mcp_pins the approvals; what
                                 they use of the kernel is one mcp_host.McpHost)
    7. system calls              the calls_* modules and the areas below;
                                 http_api.KernelHttpBackend (what the HTTP face calls)

Every method has one row in ``methods.POLICIES`` (who may call it, what it touches and how
that is authorised, whether it is recorded, its durability); a method without a row cannot
be registered, and an unknown one is refused. The handlers, by area:

    area        module                 methods
    kernel      calls_kernel.py        kernel.info kernel.shutdown events.tail session.bind
    agents      calls_agents.py        agent.spawn .list .status .wait .stop .kill .pause .resume
                                       .logs; sys.info sys.exit agent.spawn_child .wait_child
                                       .children .stop_child .kill_child
    tools       calls_tools.py         tool.list tool.call tool.invoke
    mcp         mcp_tools.py           mcp.servers .tools .approve .restart
    ipc         calls_ipc.py           ipc.send ipc.recv ipc.broadcast agent.send
    inference   calls_inference.py     think inference.stats
    caps        calls_caps.py          cap.list .grant .revoke .check .delegate sys.untaint
                                       approval.list approval.respond
    audit       calls_audit.py         audit.tail .verify .prove .head
    state       persistent.py          agent.run agent.reply agent.state_save agent.state_load
    loop        loop_events.py         loop.event
    goals       goals.py               agent.submit_goal
    packages    packages_api.py        package.* keys.* trust.*
    snapshots   snapshots_api.py       snapshot.create .restore .fork
    http        http_api.py            tokens.create .list .revoke .verify (and the HTTP face itself)
    dashboard   dashboard_api.py       dashboard.agents

No handler module is handed the kernel: each ``register`` takes, as arguments, exactly the
services its handlers use (``persistent.register(pipeline, table=, mail=, store=)``,
``snapshots_api.register(pipeline, table=, control=, spawner=, caps=, ...)``), and a tool
sees only its ``tools.base.ToolContext`` (the call, the agent it acts for, the decision).
Stored persistent agents are started again by ``KernelRoot.respawn_persistent``.

Around the root: ``daemon.py`` runs a kernel (sockets, signals, pidfile) and turns on
``telemetry.py`` (metrics, traces: it wraps ``pipeline.run`` only when on, and reads the
``telemetry.MetricSources`` the daemon names); ``config.py`` and
``home.py`` are its configuration and directories; ``param_checks.py`` the handlers'
parameter checks; ``method_params.py`` the operator methods' JSON Schemas (OpenAPI).
"""
