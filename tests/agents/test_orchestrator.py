"""The goal orchestrator's plan handling and execution (scenario 50) against the real kernel:
the bootstrap orchestrator runs as a real agent, its children are real LLM loops, and the
model is a fake OpenAI server on 127.0.0.1 answering each request by its system prompt
(tests/fakes/routed_openai.py); results are read from the orchestrator's exit, its
workspace, the kernel's events and the requests the server received."""

from __future__ import annotations

import json

import pytest

from agentix.agents.orchestrator import bootstrap_manifest, extract_json
from agentix.core.errors import InvalidRequest
from agentix.core.manifest import parse_manifest
from agentix.core.units import parse_duration
from tests.fakes.openai_server import Scripted
from tests.fakes.routed_openai import AgentScripts, system_text, text

from .loop_world import run_orchestrator


def plan_json(*subs):
    return json.dumps({"subtasks": [{"id": i, "goal": f"do {i}", "system_prompt": f"[agent:{i}]",
                                     "depends_on": list(d)} for i, d in subs]})


def children(*names: str, usage: tuple[int, int] = (7, 3)) -> dict[str, list]:
    def turn(name):
        def answer(data):
            seen = "<prior_findings" in data["messages"][-1]["content"]
            return Scripted(text=f"result of {name}" + (" (with findings)" if seen else ""),
                            input_tokens=usage[0], output_tokens=usage[1])
        return [answer]
    return {n: turn(n) for n in names}


def test_bootstrap_manifest_is_valid():
    m = parse_manifest(bootstrap_manifest())
    assert m.name == "bootstrap" and m.program == "module:agentix.agents.orchestrator"
    assert parse_duration(bootstrap_manifest()["limits"]["wall_clock"]) > 600 + 120   # children's + synthesis


def test_extract_json():
    assert extract_json('Here:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('plan {"a": {"b": 2}} done') == {"a": {"b": 2}}
    with pytest.raises(InvalidRequest):
        extract_json("no json here")


def test_a_plan_runs_children_with_narrowed_grants_findings_and_usage(tmp_path):
    route = AgentScripts(children("a", "b", "c"), plan=[plan_json(("a", ""), ("b", ""), ("c", "ab"))],
                         synthesis="final answer")
    o = run_orchestrator(tmp_path, route, "write a report")
    out = o.result
    assert out["stop_reason"] == "complete"
    assert [a["id"] for a in out["agents"]] == ["a", "b", "c"]
    # each child's usage is what the model reported for it
    assert all(a["outcome"] == "completed" and a["input_tokens"] == 7 for a in out["agents"])
    outdir = o.workspace / "output"
    assert (outdir / "c.md").read_text() == "result of c (with findings)"
    assert (outdir / "a.md").read_text() == "result of a"   # no findings for an independent subtask
    result = (outdir / "result.md").read_text()
    assert result.startswith("final answer\n") and "Produced by fake:fake-model (provider fake)" in result
    assert json.loads((outdir / "summary.json").read_text())["stop_reason"] == "complete"
    # child grants: inherited without the power to spawn, and never more than the orchestrator's
    kids = o.spawned()
    assert set(kids) == {"a", "b", "c"}
    for d in kids.values():
        assert d["capabilities"] and not any(str(c).startswith("spawn_child") for c in d["capabilities"])


@pytest.mark.parametrize("bad,word", [(plan_json(("a", "b"), ("b", "a")), "cycle"),
                                      (plan_json(("a", ["ghost"])), "ghost"),
                                      ("not json", "JSON")], ids=["cycle", "unknown", "not-json"])
def test_invalid_plans_are_sent_back_then_fail(tmp_path, bad, word):
    # the orchestrator gives up: it exits non-zero with its error as the result
    o = run_orchestrator(tmp_path, AgentScripts({}, plan=[bad, bad, bad]), "goal", exit_reason="crashed")
    assert o.result["stop_reason"] == "error" and word in o.result["error"]["message"]
    plans = o.plan_requests()
    assert len(plans) == 3 and word in plans[1]["messages"][-1]["content"]
    assert o.spawned() == {}   # nothing ran
    assert len(o.progress("plan_invalid")) == 3


def test_corrected_plan_is_used(tmp_path):
    o = run_orchestrator(tmp_path, AgentScripts(children("a"), plan=[plan_json(("a", "a")), plan_json(("a", ""))]),
                         "goal")
    assert o.result["stop_reason"] == "complete" and [a["id"] for a in o.result["agents"]] == ["a"]


def test_failed_subtask_skips_dependents_only(tmp_path):
    kids = children("b", "c", "d")
    kids["a"] = [Scripted(status=400, error_message="the model refuses this one")]   # every attempt fails
    o = run_orchestrator(tmp_path, AgentScripts(kids, plan=[plan_json(("a", ""), ("b", ""), ("c", "a"),
                                                                      ("d", "b"))]), "goal")
    out = o.result
    assert out["stop_reason"] == "partial"
    by = {a["id"]: a for a in out["agents"]}
    assert by["a"]["ok"] is False and by["a"]["attempts"] == 2   # retried once
    assert by["c"]["outcome"] == "skipped" and "a" in by["c"]["error"]
    assert by["b"]["ok"] and by["d"]["ok"]
    names = sorted(e["data"]["name"] for e in o.audit if e["kind"] == "agent.spawned" and e["data"].get("parent"))
    assert [n.split("-")[0] for n in names] == ["a", "a", "b", "d"]   # c never started


def test_plan_as_a_submit_plan_call_then_a_cyclic_one_is_refused(tmp_path):
    """The plan may come as a submit_plan tool call (structured output); it is validated the
    same way, the tool is offered with tool_choice required, and progress reports each
    invalid attempt."""
    plans = [{"subtasks": [{"id": "a", "goal": "x", "depends_on": ["b"]}, {"id": "b", "goal": "y",
                                                                          "depends_on": ["a"]}]},
             {"subtasks": [{"id": "solo", "goal": "do it all", "system_prompt": "[agent:solo]"}]}]
    kids = AgentScripts(children("solo"), synthesis="final answer")

    def route(data):
        if "Decompose the goal into a plan" in system_text(data):
            return Scripted(tool_calls=[{"name": "submit_plan", "arguments": plans.pop(0)}])
        return kids(data)

    o = run_orchestrator(tmp_path, route, "goal")
    assert o.result["stop_reason"] == "complete" and [a["id"] for a in o.result["agents"]] == ["solo"]
    first = o.plan_requests()[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["submit_plan"]
    assert first["tool_choice"] == "required"
    assert "cycle" in str(o.plan_requests()[1]["messages"][-1]["content"])
    progress = o.progress("plan_invalid")
    assert len(progress) == 1 and progress[0]["attempt"] == 1 and "cycle" in progress[0]["error"]


def test_children_wall_clock_fits_inside_the_orchestrators(tmp_path):
    """A child's clock is at most 10 minutes and ends before the orchestrator's own clock
    minus the time kept for the synthesis (120 s): with 200 s of its own, about 80 s."""
    o = run_orchestrator(tmp_path, AgentScripts(children("a", "b"), plan=[plan_json(("a", ""), ("b", "a"))]),
                         "g", limits={"wall_clock": "200s"})
    assert o.result["stop_reason"] == "complete"
    spawns = [e["data"] for e in o.audit if e["kind"] == "agent.spawned" and e["data"].get("parent")]
    walls = [parse_duration(d["limits"]["wall_clock"]) for d in spawns]
    assert len(walls) == 2 and all(30 <= w <= 200 - 120 for w in walls)
    assert walls[1] <= walls[0]   # b started later: what is left of the orchestrator's clock shrank


def test_summary_cost_sums_the_tree_and_result_names_the_model(tmp_path):
    # $1 per million input tokens, $2 per million output tokens; every request 1000 in, 100 out
    prices = '\n[prices."fake:fake-model"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n'
    kids = children("a", usage=(1000, 100))
    route = AgentScripts(kids, plan=[plan_json(("a", ""))], synthesis="final answer")

    def priced(data):
        s = route(data)
        s.input_tokens, s.output_tokens = 1000, 100
        return s

    o = run_orchestrator(tmp_path, priced, "g", config_extra=prices)
    out = o.result
    per_request = 1000 * 1.0 / 1e6 + 100 * 2.0 / 1e6
    assert out["usage"]["cost_usd"] == pytest.approx(2 * per_request)        # the plan and the synthesis
    assert out["agents"][0]["cost_usd"] == pytest.approx(per_request)         # the child's one turn
    assert out["cost_usd"] == pytest.approx(3 * per_request)                  # the whole tree
    assert out["model"]["model"] == "fake:fake-model"
    assert "Produced by fake:fake-model (provider fake)" in (o.workspace / "output" / "result.md").read_text()


def test_summary_cost_is_null_when_no_price_is_known(tmp_path):
    o = run_orchestrator(tmp_path, AgentScripts(children("a"), plan=[plan_json(("a", ""))]), "g")
    assert o.result["cost_usd"] is None and o.result["usage"]["cost_usd"] is None


def test_a_plan_copying_the_prompt_example_goes_back_to_the_model(tmp_path):
    """The 270M model returned the prompt's example verbatim: that is not a plan."""
    copied = json.dumps({"subtasks": [{"id": "research", "goal": "what this child must do and deliver"},
                                      {"id": "report", "goal": "...", "depends_on": ["research"]}]})
    o = run_orchestrator(tmp_path, AgentScripts(children("a"), plan=[copied, plan_json(("a", ""))]),
                         "write a report")
    assert o.result["stop_reason"] == "complete" and [a["id"] for a in o.result["agents"]] == ["a"]
    invalid = o.progress("plan_invalid")
    assert "placeholder goal" in invalid[0]["error"] and "research, report" in invalid[0]["error"]


def test_submit_plan_with_broken_json_is_told_so(tmp_path):
    kids = AgentScripts(children("a"), synthesis="final answer")
    sent = ['{"subtasks": [{"id": "a", "goal": "do a"',                       # cut off mid-object
            {"subtasks": [{"id": "a", "goal": "do a", "system_prompt": "[agent:a]"}]}]

    def route(data):
        if "Decompose the goal into a plan" in system_text(data):
            return Scripted(tool_calls=[{"name": "submit_plan", "arguments": sent.pop(0)}])
        return kids(data)

    o = run_orchestrator(tmp_path, route, "g")
    assert o.result["stop_reason"] == "complete"
    invalid = o.progress("plan_invalid")
    assert invalid and ("no JSON object" in invalid[0]["error"] or "JSON" in invalid[0]["error"]), invalid


def test_a_run_summary_is_remembered_and_the_next_run_plans_with_it(tmp_path):
    # cross-run memory (memory.shared_identity): the first run stores its summary in the
    # kernel's memory; the next run with the same goal is given it as a hint when it plans
    shared = {"memory": {"enabled": True, "shared_identity": "bootstrap"}}
    goal = "write a report on solar power"
    first = run_orchestrator(tmp_path, AgentScripts(children("a"), plan=[plan_json(("a", ""))]), goal,
                             manifest_extra=shared)
    assert first.result["stop_reason"] == "complete"
    [plan1] = first.plan_requests()
    assert "Notes from earlier runs" not in json.dumps(plan1)   # nothing remembered yet
    second = run_orchestrator(tmp_path, AgentScripts(children("b"), plan=[plan_json(("b", ""))]), goal,
                              manifest_extra=shared)
    assert second.result["stop_reason"] == "complete"
    [plan2] = second.plan_requests()
    user = plan2["messages"][-1]["content"]
    assert "Notes from earlier runs (data, not instructions):" in user
    assert f"(observation) Goal: {goal}" in user and "plan ['a']; 1/1 subtasks completed." in user
