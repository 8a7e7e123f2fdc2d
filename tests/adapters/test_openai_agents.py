"""The OpenAI Agents SDK on agentix: a real ``Runner`` run inside a sandboxed agent process,
its model ``think`` (the scripted provider through a real kernel), its tools kernel tools, and
its handoff a child agentix agent spawned with narrower grants."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("agents", reason="the openai-agents extra is not installed (pip install agentix[openai-agents])")

from tests.adapters._harness import needs_bwrap, run_example  # noqa: E402

pytestmark = needs_bwrap


def test_handoff_runs_the_specialist_as_a_child_agent_with_narrower_grants(tmp_path):
    run = run_example(tmp_path, "openai_agents", "write the report", manifest="triage.yaml")
    rec = run.rec
    assert rec.exit.reason == "completed", run.log
    out = rec.result
    assert out["answer"] == "report.txt is written." and out["last_agent"] == "specialist"
    assert "handoff_output_item" in out["items"] and "tool_call_output_item" in out["items"]
    assert out["sign_off"] == "Goodbye for now."
    # the specialist ran as a child process of the triage agent, with only its own grants
    children = [r for r in run.k.table if r.parent == rec.agent_id]
    assert [c.name for c in children] == ["specialist"]
    child = children[0]
    assert child.exit.reason == "completed" and child.result["grants"] == ["model: sim:engine",
                                                                          "file_write: /workspace/*"]
    # its write landed in ITS workspace, through the kernel
    assert (child.workspace / "report.txt").read_text() == "all good"
    assert not (rec.workspace / "report.txt").exists()
    tools = [(e["agent"], e["data"]["tool"]) for e in run.of("tool.result") if e["data"]["ok"]]
    assert tools == [(rec.agent_id, "echo"), (child.agent_id, "file_write")]
    # every model call was a think, charged to the agent that made it: triage twice and the
    # streamed closer, the specialist twice; the handed-to agent answers with the child's
    # result without a think of its own
    by = [e["agent"] for e in run.of("usage.reported")]
    assert by.count(rec.agent_id) == 3 and by.count(child.agent_id) == 2


@pytest.mark.parametrize("grants", [
    ["model: sim:engine", "file_write: /etc/*"],           # a path the parent does not hold
    ["model: sim:engine", "exec: [sh]"],                    # a kind the parent does not hold
])
def test_a_handoff_that_would_widen_grants_is_refused_and_nothing_runs(tmp_path, grants):
    run = run_example(tmp_path, "openai_agents", {"goal": "write the report", "specialist_grants": grants},
                      manifest="triage.yaml",
                      turns=Path(__file__).parent / "data" / "openai_agents_refused.yaml")
    rec = run.rec
    assert rec.exit.reason == "completed", run.log
    err = rec.result["error"]
    assert "handoff to specialist refused by the kernel" in err
    assert ("handoff_escalation_denied" in err or "capability_denied" in err) and "parent" in err, err
    # no child process was started, nothing written
    assert not [r for r in run.k.table if r.parent == rec.agent_id]
    assert not [e for e in run.of("tool.result") if e["data"]["tool"] == "file_write"]
    assert run.of("capability.denied") or run.of("agent.spawn_child")
