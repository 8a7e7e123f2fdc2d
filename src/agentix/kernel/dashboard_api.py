"""``dashboard.agents``: every agent with what the dashboard's process tree shows, in one read.

    dashboard.agents {all?, agents?}   operator, no effect
        -> {agents: [summary + {taint, isolation, budget}], now}

``agents``: only these ids (at most ``MAX_IDS``; unknown ids are left out) — the tree asks for
the rows an event named instead of every row.

``agent.list`` gives the summary only; ``agent.status`` gives everything for one agent. The
tree needs a little more than the first for every agent at once (taint labels, isolation
layers, budget spent), and one call instead of N keeps the first load of a 500-agent
dashboard to one round trip. Read-only: a viewer token may call it.
"""

from __future__ import annotations

from typing import Any

from agentix.core.errors import InvalidRequest
from agentix.kernel.clock import Clock
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.methods import method
from agentix.kernel.process import AgentRecord, ProcessTable

__all__ = ["MAX_IDS", "register", "tree_row"]

MAX_IDS = 1000


def _isolation(rec: AgentRecord) -> dict[str, Any]:
    iso = rec.isolation or {}
    return {k: iso[k] for k in ("backend", "layers", "missing_layers", "degraded") if k in iso}


def tree_row(rec: AgentRecord, now_mono: float) -> dict[str, Any]:
    """One agent as the tree shows it (the summary plus taint, isolation and budget spent)."""
    row = rec.summary()
    budget = rec.budget.snapshot(now_mono) if rec.budget is not None else None
    row.update({
        "taint": sorted(rec.taint),
        "isolation": _isolation(rec),
        "budget": None if budget is None else {"used": budget["used"], "limits": budget["limits"],
                                               "tool_calls": budget["tool_calls"]},
    })
    return row


def register(pipeline: Pipeline, *, table: ProcessTable, clock: Clock) -> None:
    """Add ``dashboard.agents`` (it reads the process table only, at the kernel's ``clock``)."""

    async def dashboard_agents(call: Call) -> dict[str, Any]:
        show_all = bool(call.params.get("all", True))
        ids = call.params.get("agents")
        if ids is not None:
            if (not isinstance(ids, list) or len(ids) > MAX_IDS
                    or not all(isinstance(i, str) for i in ids)):
                raise InvalidRequest(f'"agents" must be a list of at most {MAX_IDS} agent ids', field="agents")
            wanted = set(ids)
            recs = sorted((r for r in table if r.agent_id in wanted and (show_all or r.state != "exited")),
                          key=lambda r: r.created_at)
        else:
            recs = sorted((r for r in table if show_all or r.state != "exited"), key=lambda r: r.created_at)
        now = clock.monotonic()
        return {"agents": [tree_row(r, now) for r in recs], "now": clock.now()}

    pipeline.register(method("dashboard.agents", dashboard_agents, operator=True))
