"""The integration points against the real kernel: real agent processes, real system calls.

Memory and skill tools and ``loop.event`` are installed by a real ``KernelRoot`` (plain
backend, degraded isolation); ``think`` is the kernel's real inference path, configured in
$AGENTIX_HOME/config.toml to use a fake OpenAI-compatible server on 127.0.0.1 that plays
scripted model turns over the real wire format (the one fake: a model). Everything else —
spawning the loop program as real processes, spawn_agents over real children, tool
calls, archive files — is the real thing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.memory.store import MemoryStore
from tests.fakes.openai_server import Scripted
from tests.fakes.routed_openai import AgentScripts, RoutedOpenAIServer, call, config_toml, text

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


async def _kernel(tmp_path: Path, server: RoutedOpenAIServer | None = None) -> tuple[KernelRoot, MemoryStore]:
    home = Home(tmp_path / "home")
    home.create()
    if server is not None:
        (home.root / "config.toml").write_text(config_toml(server.base_url, kernel=False))
    k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
    await k.start()
    return k, k.memory  # the kernel registers memory, skill and loop-event services itself


def _serve(route) -> RoutedOpenAIServer:
    s = RoutedOpenAIServer(route)
    s.start()
    return s


def test_tools_and_loop_event_in_a_real_agent(tmp_path):
    async def go():
        k, store = await _kernel(tmp_path)
        prog = tmp_path / "probe.py"
        prog.write_text(PROBE)
        rec = await k.spawn(parse_manifest({"name": "probe", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["model: *", "tool: *"]}),
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
    kinds = [e["kind"] for e in k.audit.sink.tail(agent=rec.agent_id)]
    assert "loop.context_summarised" in kinds


def test_loop_program_runs_spawn_agents_over_real_children(tmp_path):
    children = [{"manifest": {"name": n, "isolation": "degraded", "system_prompt": f"[agent:{n}]"},
                 "message": f"task {n}"} for n in ("alpha", "broken", "gamma")]
    calls: dict[str, int] = {}

    def child(name):
        def turn(data):
            calls[name] = calls.get(name, 0) + 1
            if name == "broken":   # the provider refuses this child's request (HTTP 400)
                return Scripted(status=400, error_message="scripted provider failure")
            return text(f"{name} did {data['messages'][-1]['content']}")
        return [turn]

    def summarise(data):
        results = json.loads(data["messages"][-1]["content"])
        return text(json.dumps([[r["name"], r["ok"], r["attempts"]] for r in results["results"]]))

    scripts = AgentScripts({"root": [call("spawn_agents", agents=children), summarise],
                            **{n: child(n) for n in ("alpha", "broken", "gamma")}})
    server = _serve(scripts)

    async def go():
        k, _ = await _kernel(tmp_path, server)
        rec = await k.spawn(parse_manifest({"name": "root", "program": "module:agentix.agents.loop",
                                            "isolation": "degraded", "system_prompt": "[agent:root]",
                                            "capabilities": ["model: *", "spawn_child: *"]}),
                            message="fan out")
        await k.wait(rec, 120)
        await k.shutdown()
        return rec

    try:
        rec = asyncio.run(go())
    finally:
        server.stop()
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
                 "capabilities": ["model: *", "tool: *"], "memory": {"enabled": True, "shared_identity": "bootstrap"}}, message="go")
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
                                            "capabilities": ["model: *", "tool: *", "file_write: {workspace}/*",
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
    from agentix.agents.orchestrator import bootstrap_manifest

    plan = {"subtasks": [{"id": n, "goal": g, "system_prompt": f"[agent:{n}]", **extra}
                         for n, g, extra in (("a", "part a", {}), ("b", "part b", {}),
                                             ("c", "combine", {"depends_on": ["a", "b"]}))]}

    def child(name):
        def turn(data):
            seen = "<prior_findings" in data["messages"][-1]["content"]
            return text(f"{name}: saw prior findings" if seen else f"{name}: done")
        return [turn]

    server = _serve(AgentScripts({n: child(n) for n in "abc"}, plan=plan))

    async def go():
        k, _ = await _kernel(tmp_path, server)
        boot = bootstrap_manifest()  # think is a capability: `agentix run --goal` adds the model grant
        manifest = {**boot, "isolation": "degraded", "capabilities": [*boot["capabilities"], "model: *"]}
        rec = await k.spawn(parse_manifest(manifest), message={"goal": "write about a and b"})
        await k.wait(rec, 120)
        await k.shutdown()
        return k, rec

    try:
        k, rec = asyncio.run(go())
    finally:
        server.stop()
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    out = rec.result
    assert out["stop_reason"] == "complete", out
    assert [a["id"] for a in out["agents"]] == ["a", "b", "c"] and all(a["ok"] for a in out["agents"])
    # a and b ran at the same time; c started after both finished
    ev = k.audit.sink.tail(limit=10_000)
    spawned = {e["data"]["name"]: e["seq"] for e in ev if e["kind"] == "agent.spawned"}
    ids = {e["data"]["name"]: e["agent"] for e in ev if e["kind"] == "agent.spawned"}
    exited = {e["agent"]: e["seq"] for e in ev if e["kind"] == "agent.exited"}
    assert max(spawned["a"], spawned["b"]) < min(exited[ids["a"]], exited[ids["b"]])
    assert spawned["c"] > max(exited[ids["a"]], exited[ids["b"]])
    outdir = rec.workspace / "output"
    assert (outdir / "c.md").read_text() == "c: saw prior findings"
    assert (outdir / "result.md").read_text().startswith("final synthesis\n\n---\n*Produced by fake:fake-model")
    assert json.loads((outdir / "summary.json").read_text())["stop_reason"] == "complete"


PERSISTENT_ROOT = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=10)
child = k.spawn({"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
                 "isolation": "degraded", "capabilities": ["model: *", "message_send: root"]})
replies = []
for i in (1, 2):
    k.send(child.agent_id, {"task": f"question {i}", "request_id": i})
    replies.append(k.recv(timeout=30).body)
k.send(child.agent_id, {"kind": "shutdown"})
ex = k.wait_child(child.agent_id, timeout=30)
k.exit({"replies": replies, "child_reason": ex.reason})
'''


def test_persistent_loop_serves_its_mailbox_and_keeps_the_conversation(tmp_path):
    def echo_users(data):
        users = [m["content"] for m in data["messages"] if m["role"] == "user"]
        return text(f"seen {len(users)}: {' | '.join(users)}")

    server = _serve(echo_users)

    async def go():
        k, _ = await _kernel(tmp_path, server)
        prog = tmp_path / "root.py"
        prog.write_text(PERSISTENT_ROOT)
        rec = await k.spawn(parse_manifest({"name": "root", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["model: *", "spawn_child: keeper",
                                                             "message_send: [keeper, root]"]}),
                            message="go")
        await k.wait(rec, 90)
        await k.shutdown()
        return rec

    try:
        rec = asyncio.run(go())
    finally:
        server.stop()
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    r1, r2 = rec.result["replies"]
    assert r1["in_reply_to"] == 1 and r1["result"]["text"] == "seen 1: question 1"
    assert r2["in_reply_to"] == 2 and r2["result"]["text"] == "seen 2: question 1 | question 2"
    assert rec.result["child_reason"] == "completed"
