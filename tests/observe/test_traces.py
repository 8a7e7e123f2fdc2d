"""Traces: one span per system call and per inference request, parented so that everything
an operator's spawn sets off — the agent's calls, its children's spawns and their calls — is
one trace. Captured with OpenTelemetry's in-memory exporter from a kernel in this process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from _world import SCRIPTED, World, run  # noqa: E402

from agentix.kernel import telemetry  # noqa: E402

THINK = ["think", {"messages": [{"role": "user", "content": "hi"}]}]
ECHO = ["tool.call", {"name": "echo", "args": {"text": "x"}}]


def _ancestors(span: Any, by_id: dict[int, Any]) -> list[str]:
    out = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        out.append(span.name)
    return out


def test_a_spawned_tree_is_one_trace_with_a_span_per_call_and_per_inference(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()

    async def body(w: World) -> dict[str, Any]:
        tel = telemetry.install(w.k.pipeline, span_exporter=exporter)
        assert tel is not None and w.k.pipeline.observer is tel
        r = await w.op("agent.spawn", manifest={
            "name": "boss", "program": str(w.prog), "isolation": "degraded",
            "capabilities": ["spawn_child: [kid]", "tool: echo", "model: sim:*"]})
        boss = w.k.table.get(r["agent_id"])
        await w.k.deliver(None, boss, {"calls": [THINK, ["agent.spawn_child", {"manifest": {
            "name": "kid", "program": "probe.py", "isolation": "degraded",
            "capabilities": ["tool: echo"]}}]], "exit": False})
        while not boss.children:
            await asyncio.sleep(0.05)
        kid = w.k.table.get(boss.children[0])
        kid_res = await w.calls(kid, [ECHO])
        boss_res = await w.calls(boss, [ECHO])
        await w.op("kernel.info")   # an unrelated operator call: a trace of its own
        return {"boss": boss.agent_id, "kid": kid.agent_id, "kid_res": kid_res, "boss_res": boss_res}

    out = run(tmp_path, body, SCRIPTED)
    assert "ok" in out["kid_res"][0] and "ok" in out["boss_res"][0], out
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def find(name: str, agent: str | None = None) -> Any:
        got = [s for s in spans if s.name == name and (agent is None or s.attributes.get("agentix.agent_id") == agent)]
        assert got, f"no span {name} for {agent}: {sorted({s.name for s in spans})}"
        return got[0]

    root = find("agentix.call agent.spawn")
    assert root.parent is None and root.attributes["agentix.spawned"] == out["boss"]
    trace = root.context.trace_id
    spawn_child = find("agentix.call agent.spawn_child", out["boss"])
    kid_echo = find("agentix.call tool.call", out["kid"])
    boss_echo = find("agentix.call tool.call", out["boss"])
    think = find("agentix.call think", out["boss"])
    inference = find("agentix.inference")
    for s in (spawn_child, kid_echo, boss_echo, think, inference):
        assert s.context.trace_id == trace, s.name
    # the kid's call hangs under the boss's spawn_child call, which hangs under the operator's spawn
    assert _ancestors(kid_echo, by_id) == ["agentix.call agent.spawn_child", "agentix.call agent.spawn"]
    assert _ancestors(boss_echo, by_id) == ["agentix.call agent.spawn"]
    assert inference.parent.span_id == think.context.span_id
    assert inference.attributes["gen_ai.usage.output_tokens"] == 2
    assert kid_echo.attributes["agentix.tool"] == "echo"
    info = find("agentix.call kernel.info")
    assert info.parent is None and info.context.trace_id != trace


def test_a_refused_call_is_an_error_span(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()

    async def body(w: World) -> Any:
        telemetry.install(w.k.pipeline, span_exporter=exporter)
        rec = await w.spawn([], name="empty")
        return rec.agent_id, await w.calls(rec, [ECHO])

    aid, res = run(tmp_path, body)
    assert res[0]["error"] == "capability_denied"
    [span] = [s for s in exporter.get_finished_spans()
              if s.name == "agentix.call tool.call" and s.attributes.get("agentix.agent_id") == aid]
    assert span.attributes["agentix.error"] == "capability_denied"
    assert span.status.status_code.name == "ERROR"


def test_telemetry_off_leaves_the_pipeline_unobserved(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("AGENTIX_TRACES", raising=False)

    async def body(w: World) -> Any:
        tel = telemetry.install(w.k.pipeline)
        # nothing wraps the call path: run is the class's own method
        return tel, getattr(w.k.pipeline, "observer", None), w.k.pipeline.run.__func__ is type(w.k.pipeline).run

    assert run(tmp_path, body) == (None, None, True)
