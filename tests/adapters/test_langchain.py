"""LangChain / LangGraph on agentix: a real ``create_react_agent`` graph runs as a sandboxed
agent process; its model is ``think`` (the scripted provider through a real kernel) and its
tools are kernel tools, checked against the agent's grants and audited."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("langgraph.prebuilt", reason="the langchain extra is not installed (pip install agentix[langchain])")

from tests.adapters._harness import needs_bwrap, run_example  # noqa: E402

pytestmark = needs_bwrap


def test_langgraph_react_agent_runs_as_an_agentix_program(tmp_path):
    run = run_example(tmp_path, "langgraph_react", "write a haiku to haiku.txt")
    rec = run.rec
    assert rec.exit.reason == "completed", run.log
    out = rec.result
    # the graph ran to its end: model -> tool -> model -> refused tool -> model
    assert out["answer"] == "I wrote the haiku to haiku.txt."
    assert out["steps"] == ["human", "ai", "tool", "ai", "tool", "ai"]
    # the granted write happened, in the agent's workspace, through the kernel
    assert (rec.workspace / "haiku.txt").read_text() == "old pond / a frog jumps in / the sound of water"
    assert '"ok"' in out["tool_results"][0] or "haiku.txt" in out["tool_results"][0]
    # the ungranted read was refused by the kernel, and the model was told why
    assert out["tool_results"][1].startswith("error: capability_denied")
    # the streamed turn arrived through think's stream
    assert out["sign_off"] == "Farewell, friend." and out["pieces"] >= 1
    # every model call was a think (4 usage records), every tool call audited with its result
    assert len(run.of("usage.reported")) == 4
    assert [(e["data"]["tool"], e["data"]["ok"]) for e in run.of("tool.result")] == [("file_write", True)]
    denied = run.of("capability.denied")
    assert denied and denied[0]["data"].get("tool") == "file_write"
    assert not Path("/etc/agentix-was-here").exists()


def test_a_tool_the_agent_lacks_is_refused_and_nothing_is_written(tmp_path):
    """Same program, a write grant for another folder only: the kernel refuses both writes
    (no file anywhere), the graph goes on with each refusal as the tool's answer."""
    run = run_example(tmp_path, "langgraph_react", "write a haiku to haiku.txt",
                      capabilities=["model: sim:engine", "tool: echo", "file_write: /workspace/out/*"])
    rec = run.rec
    assert rec.exit.reason == "completed", run.log
    assert not (rec.workspace / "haiku.txt").exists()
    assert len(rec.result["tool_results"]) == 2
    assert all(r.startswith("error: capability_denied") for r in rec.result["tool_results"])
    assert not Path("/etc/agentix-was-here").exists()
    assert len(run.of("capability.denied")) == 2
    assert not [e for e in run.of("tool.result") if e["data"]["ok"]]
