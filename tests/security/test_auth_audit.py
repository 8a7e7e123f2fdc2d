"""The method table audited as an attacker: each hole found, attempted through a real kernel.

Every test is named after the attack, asserts the refusal (or the narrowing) and that the
world did not move: nothing run, charged or given beyond what the parent or the operator
holds. The harness is the scenarios' one (real kernel, real agent processes).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_scenarios_12_36 import World, run, tool  # noqa: E402  (same directory)
from conftest import until  # noqa: E402

from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.methods import POLICIES  # noqa: E402


def _ok(res: list[dict[str, Any]]) -> int:
    return sum(1 for r in res if "ok" in r)


# ---------------------------------------------------------------------------- agent.spawn_child
GREEDY_CHILD = {
    "name": "kid", "program": "probe.py", "isolation": "degraded", "capabilities": ["tool: echo"],
    "limits": {"memory": "64G", "cpu": 64, "pids": 100000, "wall_clock": "30d", "nofile": 100000,
               "disk": "1T"},
    "priority": 1000,
    "budget": {"max_tool_calls": 1000, "reset_period": 1},
}


def test_child_manifest_asking_for_more_than_its_parent_gets_at_most_the_parent(tmp_path):
    """limits, priority, tool calls and a budget that resets: a child gets no more than its
    parent has; the tool calls it makes are the parent's (carved, then charged back)."""
    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]", "tool: echo"], name="parent",
                               budget={"max_tool_calls": 3})
        await w.k.deliver(None, parent, {"calls": [tool("echo", message="p1"),
                                                   ["agent.spawn_child", {"manifest": GREEDY_CHILD}]],
                                         "exit": False})
        while not parent.children:
            await asyncio.sleep(0.05)
        child = w.k.table.get(parent.children[0])
        seen = (child.limits, child.manifest.priority, child.budget.limits, parent.budget.tool_calls_left())
        await w.k.deliver(None, child, {"calls": [tool("echo", message=f"c{i}") for i in range(5)]})
        await w.k.wait(child, 60)
        after_child = parent.budget.tool_calls_left()
        res = await w.calls(parent, [tool("echo", message=f"p{i}") for i in range(2, 5)])
        return parent, child, seen, after_child, res

    parent, child, seen, after_child, last = run(tmp_path, body)
    limits, priority, blimits, parent_left = seen
    plim = parent.limits
    assert limits.memory <= plim.memory and limits.pids <= plim.pids and limits.cpu <= plim.cpu
    assert limits.wall_clock <= plim.wall_clock and limits.nofile <= plim.nofile and limits.disk <= plim.disk
    assert priority <= parent.manifest.priority
    assert blimits.reset_period is None  # a carved budget never renews itself
    assert blimits.max_tool_calls == 2 and parent_left == 0  # 3 - the parent's one call, carved
    first = parent.result[0]
    assert "ok" in first[0] and "ok" in first[1], first
    child_res = child.result[-1]
    assert _ok(child_res) == 2 and all(r.get("error") for r in child_res[2:])
    assert after_child == 0 and _ok(last) == 0  # the child's calls were the parent's
    assert _ok(first) - 1 + _ok(child_res) + _ok(last) == 3  # exactly max_tool_calls in all


def test_child_manifest_dropping_its_parents_approval_required_still_asks(tmp_path):
    """approval_required only accumulates: a child whose manifest drops its parent's asks."""
    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]", "tool: echo"], name="parent",
                               approval_required=["echo"])
        kid = {**GREEDY_CHILD, "approval_required": []}
        await w.k.deliver(None, parent, {"calls": [["agent.spawn_child", {"manifest": kid}]], "exit": False})
        while not parent.children:
            await asyncio.sleep(0.05)
        child = w.k.table.get(parent.children[0])
        await w.k.deliver(None, child, {"calls": [tool("echo", message="x")], "exit": True})
        # the child's call asks (not a guessed delay: until its request is there or it exited)
        await until(lambda: bool(w.k.caps.approvals.pending(w.k.clock.now())) or child.exit is not None)
        pending = (await w.op("approval.list"))["approvals"]
        await w.op("approval.respond", id=pending[0]["id"], approve=False, reason="no")
        await w.k.wait(child, 30)
        await w.k.deliver(None, parent, "exit")
        return child, pending

    child, pending = run(tmp_path, body)
    assert child.manifest.approval_required == ["echo"]
    assert [p["tool"] for p in pending] == ["echo"] and pending[0]["agent"] == child.agent_id
    assert child.result[-1][0]["error"] == "approval_denied"


# ---------------------------------------------------------------------------- operator methods
#: plausible parameters, so a refusal is the method table's and not a missing argument's
OP_PARAMS: dict[str, dict[str, Any]] = {
    "agent.spawn": {"manifest": {"name": "evil", "program": "/bin/true"}},
    "cap.grant": {"agent_id": "SELF", "grants": ["file_read: /*"]},
    "cap.revoke": {"token_id": "x"},
    "tool.invoke": {"name": "echo", "args": {"message": "x"}},
    "approval.respond": {"id": "x", "approve": True},
    "kernel.shutdown": {},
    "agent.stop": {"agent_id": "SELF"},
    "agent.kill": {"agent_id": "SELF"},
    "agent.send": {"to": "SELF", "message": "x"},
    "agent.submit_goal": {"goal": "take over"},
    "trust.allow_unsigned": {"name": "*"},
    "keys.generate": {"name": "mine"},
}


def test_every_operator_method_called_by_an_agent_is_refused_and_changes_nothing(tmp_path):
    async def body(w: World):
        rec = await w.spawn([], name="attacker")
        names = sorted(s.name for s in w.k.pipeline.specs() if s.operator and not s.agent)
        calls = []
        for n in names:
            params = {k: (rec.agent_id if v == "SELF" else v) for k, v in OP_PARAMS.get(n, {}).items()}
            calls.append([n, params])
        tokens_before = {h: len(t) for h, t in w.k.caps.held.items()}
        res = await w.calls(rec, calls)
        agents = [r.name for r in w.k.table]
        return names, res, tokens_before, {h: len(t) for h, t in w.k.caps.held.items()}, agents, \
            w.k.shutdown_requested.is_set(), (await w.op("approval.list"))["approvals"]

    names, res, before, after, agents, shut, approvals = run(tmp_path, body)
    assert {"agent.spawn", "cap.grant", "kernel.shutdown", "audit.verify", "package.run"} <= set(names)
    assert {n for n in names if n not in POLICIES} == set()
    refused = {n: r.get("error") for n, r in zip(names, res)}
    assert all(code == "method_not_found" for code in refused.values()), refused
    assert before == after and agents == ["attacker"] and not shut and approvals == []


# ---------------------------------------------------------------------------- names resolved twice
class _Swap:
    """A stage after the capability stage that models the await between the decision and the
    handler: the child the decision was about exits, and an unrelated agent takes its name."""

    def __init__(self, w: World, victim_prog: str) -> None:
        self.w, self.prog, self.victim = w, victim_prog, None

    async def before(self, call) -> None:
        if call.method != "agent.stop_child":
            return
        kid = self.w.k.table.get(call.caller.agent_id).children[0]
        await self.w.k.kill(self.w.k.table.get(kid))
        self.victim = await self.w.k.spawn(parse_manifest(
            {"name": "kid", "program": self.prog, "isolation": "degraded"}))

    async def after(self, call, result, error) -> None:
        return None


def test_stop_child_by_name_acts_on_the_agent_decided_on_not_one_that_took_the_name_since(tmp_path):
    async def body(w: World):
        swap = _Swap(w, str(w.prog))
        w.k.pipeline.add_stage(swap)
        parent = await w.spawn(["spawn_child: [kid]"], name="parent")
        await w.k.deliver(None, parent, {"calls": [["agent.spawn_child", {"manifest": {
            "name": "kid", "program": "probe.py", "isolation": "degraded"}}]], "exit": False})
        while not parent.children:
            await asyncio.sleep(0.05)
        res = await w.calls(parent, [["agent.stop_child", {"agent_id": "kid"}]])
        victim = swap.victim
        alive = victim is not None and victim.live
        if alive:
            await w.k.deliver(None, victim, "exit")
        return res, victim, alive

    res, victim, alive = run(tmp_path, body)
    assert victim is not None and victim.name == "kid" and victim.parent is None
    assert alive, "the unrelated agent that took the child's name was stopped"
    assert "ok" in res[0] and res[0]["ok"]["agent_id"] != victim.agent_id


# ---------------------------------------------------------------------------- persistent restart
def test_persistent_llm_agent_stored_before_model_grants_is_refused_at_restart_naming_the_grant(tmp_path):
    stored = {"keeper": {"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
                         "isolation": "degraded", "capabilities": []},
              "namer": {"name": "namer", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
                        "isolation": "degraded", "model": "openai:gpt-4o-mini", "capabilities": ["tool: echo"]}}

    async def body(w: World):
        for name, m in stored.items():  # what an older kernel left in the store
            await asyncio.to_thread(w.k.state_store.remember_agent, name, m)
        started = await w.k.respawn_persistent()
        return (started, w.events("agent.respawn_failed"), [r.name for r in w.k.table],
                [n for n, _ in w.k.state_store.persistent_agents()], w.k.inference.config.default_model)

    started, failed, agents, still, default = run(tmp_path, body)
    assert started == [] and agents == []  # nothing started with a model it may not use
    by = {e["data"]["name"]: e["data"] for e in failed}
    assert by["keeper"]["error"] == "capability_denied" and by["keeper"]["reason"] == "model_not_granted"
    assert by["keeper"]["grant_to_add"] == f"model: {default}" and f"'model: {default}'" in by["keeper"]["message"]
    assert by["namer"]["grant_to_add"] == "model: openai:gpt-4o-mini"
    assert "stored before models became a capability" in by["namer"]["message"]
    assert sorted(still) == ["keeper", "namer"]  # kept: the operator decides (stop forgets it)


def test_persistent_llm_agent_with_its_model_granted_starts_again(tmp_path):
    async def body(w: World):
        m = {"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
             "isolation": "degraded", "capabilities": ["model: *"]}
        await asyncio.to_thread(w.k.state_store.remember_agent, "keeper", m)
        started = await w.k.respawn_persistent()
        return started, w.events("agent.respawn_failed")

    started, failed = run(tmp_path, body)
    assert len(started) == 1 and failed == []


@pytest.mark.parametrize("method,params", [
    ("agent.stop_child", {"agent_id": "parent"}),
    ("agent.kill_child", {"agent_id": "parent"}),
])
def test_a_child_cannot_stop_or_kill_its_parent(tmp_path, method, params):
    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]"], name="parent")
        await w.k.deliver(None, parent, {"calls": [["agent.spawn_child", {"manifest": {
            "name": "kid", "program": "probe.py", "isolation": "degraded"}}]], "exit": False})
        while not parent.children:
            await asyncio.sleep(0.05)
        kid = w.k.table.get(parent.children[0])
        res = await w.calls(kid, [[method, params]])
        alive = parent.live
        await w.k.deliver(None, parent, "exit")
        return res, alive, w.events("capability.denied", kid.agent_id)

    res, alive, denied = run(tmp_path, body)
    assert res[0]["error"] == "capability_denied" and alive and denied



# ---------------------------------------------------------------------------- dry_run on any method
def test_dry_run_on_a_method_other_than_tool_call_has_no_effect_and_charges_nothing(tmp_path):
    """``dry_run`` is a pure check on every method the table decides: ``ipc.send`` with
    ``dry_run`` must not deliver (it did, uncharged: a 1-invocation grant sent without limit),
    ``think`` must not reach the provider, ``agent.spawn_child`` must not spawn."""
    async def body(w: World):
        target = await w.spawn([], name="target")
        rec = await w.spawn([{"grant": "message_send: [target]", "max_invocations": 1},
                             {"grant": "spawn_child: [kid]", "max_invocations": 1}], name="sender")
        before = len(w.events("message.sent", rec.agent_id))
        used0 = {t.id: w.k.caps.ledger.used(t.id) for t in w.k.caps.held[rec.agent_id]}
        res = await w.calls(rec, [
            ["ipc.send", {"to": "target", "message": "dry", "dry_run": True}],
            ["ipc.send", {"to": "target", "message": "dry", "dry_run": True}],
            ["agent.spawn_child", {"manifest": {"name": "kid", "program": "probe.py",
                                                "isolation": "degraded"}, "dry_run": True}],
        ])
        used1 = {t.id: w.k.caps.ledger.used(t.id) for t in w.k.caps.held[rec.agent_id]}
        out = (res, len(w.events("message.sent", rec.agent_id)) - before, used0, used1, list(rec.children))
        await w.k.deliver(None, target, "exit")
        return out

    res, delivered, used0, used1, children = run(tmp_path, body)
    assert [r["ok"]["allowed"] for r in res] == [True, True, True], res
    assert delivered == 0 and children == [] and used1 == used0
