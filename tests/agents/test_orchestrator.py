"""The goal orchestrator's plan handling and execution (scenario 50), with a scripted model."""

from __future__ import annotations

import json
import threading

import pytest

from agentix.agents.orchestrator import Orchestrator, bootstrap_manifest, extract_json
from agentix.core.errors import InvalidRequest
from agentix.core.manifest import parse_manifest

from .fake_kernel import FakeKernel, reply

TOOLS = {"file_write", "memory_query", "memory_store"}


def plan_json(*subs):
    return json.dumps({"subtasks": [{"id": i, "goal": f"do {i}", "depends_on": list(d)} for i, d in subs]})


def make(script_plans, behaviour=None):
    plans = list(script_plans)
    written: dict[str, str] = {}
    stored: list[dict] = []

    def think(p):
        if p.get("purpose") == "plan":
            return reply(plans.pop(0))
        if p.get("purpose") == "synthesis":
            return reply("final answer")
        raise AssertionError(p)

    k = FakeKernel(think, tools={
        "file_write": lambda a: written.__setitem__(a["path"], a["content"]) or {"bytes": len(a["content"])},
        "memory_query": lambda a: {"memories": [{"category": "observation", "content": "split by topic",
                                                 "score": 0.9}]},
        "memory_store": lambda a: stored.append(a) or {"id": "mem_1"}})
    if behaviour:
        k.child_behaviour = behaviour
    manifest = bootstrap_manifest()
    return k, Orchestrator(k, manifest, TOOLS), written, stored


def test_bootstrap_manifest_is_valid():
    m = parse_manifest(bootstrap_manifest())
    assert m.name == "bootstrap" and m.program == "module:agentix.agents.orchestrator"


def test_extract_json():
    assert extract_json('Here:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('plan {"a": {"b": 2}} done') == {"a": {"b": 2}}
    with pytest.raises(InvalidRequest):
        extract_json("no json here")


def test_independent_subtasks_run_concurrently_and_deps_get_findings():
    lock = threading.Lock()
    seen: dict[str, str] = {}

    def behaviour(manifest, message, attempt):
        with lock:
            seen[manifest["name"]] = message
        return 0.2, "completed", {"stop_reason": "complete", "text": f"result of {manifest['name']}",
                                  "usage": {"input_tokens": 7, "output_tokens": 3}}

    k, orch, written, stored = make([plan_json(("a", ""), ("b", ""), ("c", "ab"))], behaviour)
    out = orch.run("write a report")
    assert out["stop_reason"] == "complete"
    assert k.max_live == 2                               # a and b together
    assert "<prior_findings" in seen["c"] and "result of a" in seen["c"] and "result of b" in seen["c"]
    assert "<prior_findings" not in seen["a"]
    assert [a["id"] for a in out["agents"]] == ["a", "b", "c"]
    assert all(a["outcome"] == "completed" and a["input_tokens"] == 7 for a in out["agents"])
    assert written["output/c.md"] == "result of c" and written["output/result.md"].startswith("final answer\n")
    assert "Produced by fake:fake (provider fake)" in written["output/result.md"]
    assert json.loads(written["output/summary.json"])["stop_reason"] == "complete"
    # child grants: inherited without spawning
    caps = [p["manifest"]["capabilities"] for m, p in k.calls if m == "agent.spawn_child"][0]
    assert caps and not any(c.startswith("spawn_child") for c in caps)
    # memory hints reached the planner; a run summary was stored
    assert "split by topic" in k.thinks[0]["messages"][1]["content"]
    assert stored and stored[0]["category"] == "observation"


@pytest.mark.parametrize("bad,word", [(plan_json(("a", "b"), ("b", "a")), "cycle"),
                                      (plan_json(("a", ["ghost"])), "ghost"),
                                      ("not json", "JSON")])
def test_invalid_plans_are_sent_back_then_fail(bad, word):
    k, orch, written, _ = make([bad, bad, bad])
    out = orch.run("goal")
    assert out["stop_reason"] == "error" and word in out["error"]["message"]
    assert len(k.thinks) == 3 and word in k.thinks[1]["messages"][-1]["content"]
    assert not [m for m, _ in k.calls if m == "agent.spawn_child"]   # nothing ran


def test_corrected_plan_is_used():
    k, orch, _, _ = make([plan_json(("a", "a")), plan_json(("a", ""))])
    assert orch.run("goal")["stop_reason"] == "complete"


def test_failed_subtask_skips_dependents_only():
    def behaviour(manifest, message, attempt):
        if manifest["name"] == "a":
            return 0, "failed", None
        return 0, "completed", {"stop_reason": "complete", "text": "fine"}

    k, orch, written, _ = make([plan_json(("a", ""), ("b", ""), ("c", "a"), ("d", "b"))], behaviour)
    out = orch.run("goal")
    assert out["stop_reason"] == "partial"
    by = {a["id"]: a for a in out["agents"]}
    assert by["a"]["outcome"] == "failed" and by["a"]["attempts"] == 2
    assert by["c"]["outcome"] == "skipped" and "a" in by["c"]["error"]
    assert by["b"]["ok"] and by["d"]["ok"]
    assert sorted(n for n, _ in k.spawned) == ["a", "a", "b", "d"]


def test_plan_as_a_submit_plan_call_then_a_cyclic_one_is_refused():
    """The plan may come as a submit_plan tool call (structured output); it is validated the
    same way, the tool is offered with tool_choice required, and progress reports each
    invalid attempt."""
    plans = [{"subtasks": [{"id": "a", "goal": "x", "depends_on": ["b"]}, {"id": "b", "goal": "y",
                                                                          "depends_on": ["a"]}]},
             {"subtasks": [{"id": "solo", "goal": "do it all"}]}]

    def think(p):
        if p.get("purpose") == "plan":
            return reply(None, calls=[("submit_plan", plans.pop(0))])
        return reply("final answer")

    k = FakeKernel(think, tools={"file_write": lambda a: {"bytes": len(a["content"])}})
    k.child_behaviour = lambda m, msg, attempt: (0.0, "completed", {"stop_reason": "complete", "text": "done"})
    out = Orchestrator(k, bootstrap_manifest(), {"file_write"}).run("goal")
    assert out["stop_reason"] == "complete" and [a["id"] for a in out["agents"]] == ["solo"]
    first = k.thinks[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["submit_plan"]
    assert first["tool_choice"] == "required" and first["max_tokens"] == 1024
    assert "cycle" in k.thinks[1]["messages"][-1]["content"]
    progress = [p["data"] for m, p in k.calls if m == "loop.event" and p["data"]["stage"] == "plan_invalid"]
    assert len(progress) == 1 and progress[0]["attempt"] == 1 and "cycle" in progress[0]["error"]


def test_children_wall_clock_fits_inside_the_orchestrators():
    """The orchestrator was killed during synthesis: it had its children's 10-minute clock."""
    from agentix.agents.orchestrator import OrchestratorConfig

    t = [0.0]
    k, _, _, _ = make([plan_json(("a", ""), ("b", "a"))],
                      lambda m, msg, n: (t.__setitem__(0, t[0] + 500) or 0.0, "completed",
                                         {"stop_reason": "complete", "text": "ok"}))
    orch = Orchestrator(k, bootstrap_manifest(), TOOLS, OrchestratorConfig(wall_clock=1200.0), clock=lambda: t[0])
    assert orch.run("g")["stop_reason"] == "complete"
    walls = [p["manifest"]["limits"]["wall_clock"] for m, p in k.calls if m == "agent.spawn_child"]
    # a: min(600, 1200 - 0 - 120); b starts 500 s later: 1200 - 500 - 120
    assert walls == ["600s", "580s"]
    from agentix.core.units import parse_duration

    assert parse_duration(bootstrap_manifest()["limits"]["wall_clock"]) > 600 + 120


def test_summary_cost_sums_the_tree_and_result_names_the_model():
    def think(p):
        if p.get("purpose") == "plan":
            return {**reply(plan_json(("a", ""))), "cost_usd": 0.25}
        return {**reply("final answer"), "cost_usd": 0.5}

    written: dict[str, str] = {}
    k = FakeKernel(think, tools={"file_write": lambda a: written.__setitem__(a["path"], a["content"]) or {}})
    k.child_behaviour = lambda m, msg, n: (0.0, "completed", {"stop_reason": "complete", "text": "x",
                                                              "cost_usd": 1.0})
    model = {"model": "local:gemma-3-270m", "provider": "local", "kind": "local", "scripted": False,
             "notice": "a 270M-parameter local model"}
    out = Orchestrator(k, bootstrap_manifest(), {"file_write"}, model=model).run("g")
    assert out["usage"]["cost_usd"] == 0.75 and out["cost_usd"] == 1.75
    assert out["agents"][0]["cost_usd"] == 1.0 and out["model"]["model"] == "local:gemma-3-270m"
    result = written["output/result.md"]
    assert "Produced by local:gemma-3-270m (provider local)" in result
    assert "**Note:** a 270M-parameter local model" in result


def test_summary_cost_is_null_when_no_price_is_known():
    k, orch, _, _ = make([plan_json(("a", ""))])
    out = orch.run("g")
    assert out["cost_usd"] is None and out["usage"]["cost_usd"] is None


def test_a_plan_copying_the_prompt_example_goes_back_to_the_model():
    """The 270M model returned the prompt's example verbatim: that is not a plan."""
    copied = json.dumps({"subtasks": [{"id": "research", "goal": "what this child must do and deliver"},
                                      {"id": "report", "goal": "...", "depends_on": ["research"]}]})
    k, orch, _, _ = make([copied, plan_json(("a", ""))])
    out = orch.run("write a report")
    assert out["stop_reason"] == "complete" and [a["id"] for a in out["agents"]] == ["a"]
    invalid = [d for kind, d in k.events if kind == "progress" and d["stage"] == "plan_invalid"]
    assert "placeholder goal" in invalid[0]["error"] and "research, report" in invalid[0]["error"]


def test_submit_plan_with_broken_json_is_told_so():
    def think(p):
        if p.get("purpose") == "plan":
            if not any(m["role"] == "assistant" for m in p["messages"]):
                return reply(calls=[("submit_plan", '{"subtasks": [{"id": "a", "goal": "do a"')])
            return reply(calls=[("submit_plan", {"subtasks": [{"id": "a", "goal": "do a"}]})])
        return reply("final answer")

    k = FakeKernel(think, tools={"file_write": lambda a: {}})
    out = Orchestrator(k, bootstrap_manifest(), {"file_write"}).run("g")
    assert out["stop_reason"] == "complete"
    invalid = [d for kind, d in k.events if kind == "progress" and d["stage"] == "plan_invalid"]
    assert "no JSON object" in invalid[0]["error"]
