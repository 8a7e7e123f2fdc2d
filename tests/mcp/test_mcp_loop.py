"""The LLM loop and MCP tools: what the model is offered (only the granted tools, each
description fenced as the server's untrusted words) and that its call reaches the server
through the kernel. The model is the fake OpenAI-compatible server on loopback; the kernel
runs in-process on the plain backend (isolation degraded: this is about what the model sees;
the sandbox is tested in test_mcp_tools.py)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mcp")

from test_mcp_tools import declare  # noqa: E402

from tests.agents.test_llm_loop_e2e import run_loop_agent  # noqa: E402
from tests.fakes.routed_openai import AgentScripts, call, text, tool_results  # noqa: E402


def test_the_model_sees_granted_mcp_tools_fenced_and_its_call_reaches_the_server(tmp_path) -> None:
    seen: list[str] = []

    def after(data):
        seen.extend(tool_results(data))
        return text("done")

    scripts = AgentScripts({"solo": [call("mcp__notes__add", a=2, b=3), after]})
    rec, events, bodies = run_loop_agent(tmp_path, scripts, ["mcp: notes/add"], extra_toml="\n" + declare("notes"))
    tools = {t["function"]["name"]: t["function"] for t in bodies[0]["tools"]}
    assert "mcp__notes__echo" not in tools  # listed by the server, not granted
    desc = tools["mcp__notes__add"]["description"]
    assert "<untrusted>Add two integers.</untrusted>" in desc and "not the operator" in desc
    assert tools["mcp__notes__add"]["parameters"]["required"] == ["a", "b"]
    assert json.loads(seen[0])["text"] == "5", seen
    results = [e for e in events if e["kind"] == "tool.result" and e["data"]["tool"] == "mcp__notes__add"]
    assert results and results[0]["data"]["ok"] is True and "external_tool:mcp:notes/add" in results[0]["taint"]
