"""Persistent agents on a real kernel: agent.run delivers work and waits, the conversation
is kept between runs and survives a kernel restart — the daemon, restarted as a real
subprocess, starts the persistent agent again by itself.

The model is a fake OpenAI-compatible server on 127.0.0.1 (the real wire format), named in
$AGENTIX_HOME/config.toml; the kernel's real ``think`` talks to it. Everything else is
real: the kernel, the loop program as a process, SQLite state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import InvalidRequest, LimitExceeded, Timeout
from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import OPERATOR
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.sdk import Kernel as SdkKernel
from agentix.store.db import Database
from agentix.store.saved_state import MAX_KEYS, MAX_STATE, StateStore
from tests.agents.daemon_util import start_daemon, stop_daemon
from tests.fakes.openai_server import Scripted
from tests.fakes.routed_openai import RoutedOpenAIServer, config_toml, system_text, text


def echo_users(data: dict[str, Any]) -> Scripted:
    """The model: answers with every user message so far, joined (shows what it remembers)."""
    return text(" | ".join(str(m["content"]) for m in data["messages"] if m["role"] == "user"))


@pytest.fixture
def model() -> Iterator[RoutedOpenAIServer]:
    s = RoutedOpenAIServer(echo_users)
    s.start()
    yield s
    s.stop()


async def _kernel(home_dir: Path, base_url: str) -> tuple[KernelRoot, StateStore]:
    home = Home(home_dir)
    home.create()
    (home_dir / "config.toml").write_text(config_toml(base_url, kernel=False))
    k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
    await k.start()
    return k, k.state_store  # the kernel registers persistence itself


KEEPER = {"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
          "isolation": "degraded", "system_prompt": "remember", "capabilities": ["model: *"]}


def test_agent_run_conversation_survives_a_kernel_restart(tmp_path, model):
    async def first_kernel():
        k, store = await _kernel(tmp_path / "home", model.base_url)
        rec = await k.spawn(parse_manifest(KEEPER))
        r1 = await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "keeper", "message": "my name is Ada"})
        r2 = await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": rec.agent_id, "message": "and yours?"})
        with pytest.raises(InvalidRequest):
            await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "keeper", "message": "x", "timeout": -1})
        await k.shutdown()
        return r1, r2

    async def second_kernel():
        k, store = await _kernel(tmp_path / "home", model.base_url)
        assert [n for n, _ in store.persistent_agents()] == ["keeper"]
        await k.respawn_persistent()    # what the daemon does at start
        r3 = await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "keeper", "message": "who am I?"})
        await k.shutdown()
        return r3

    r1, r2 = asyncio.run(first_kernel())
    assert r1["result"]["text"] == "my name is Ada" and r1["result"]["stop_reason"] == "complete"
    assert r2["result"]["text"] == "my name is Ada | and yours?"
    r3 = asyncio.run(second_kernel())
    assert r3["result"]["text"] == "my name is Ada | and yours? | who am I?"


def test_agent_run_times_out_when_nobody_answers(tmp_path, model):
    silent = tmp_path / "silent.py"
    silent.write_text("import time\nfrom agentix.sdk import agent\nk = agent.connect()\ntime.sleep(30)\n")

    async def go():
        k, store = await _kernel(tmp_path / "home", model.base_url)
        await k.spawn(parse_manifest({"name": "silent", "program": str(silent), "isolation": "degraded"}))
        with pytest.raises(Timeout):
            await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "silent", "message": "hi", "timeout": 0.5})
        await k.shutdown(grace=0.5)

    asyncio.run(go())


def test_state_store_identity_and_limits(tmp_path):
    db = Database(tmp_path / "db")
    s = StateStore(db)
    s.save("root:keeper", "conversation", [{"role": "user", "content": "hi"}])
    assert s.load("root:keeper", "conversation") == [{"role": "user", "content": "hi"}]
    assert s.load("agent:ag-1", "conversation") is None
    with pytest.raises(LimitExceeded):
        s.save("root:keeper", "big", "x" * (MAX_STATE + 1))
    for i in range(MAX_KEYS - 1):
        s.save("root:keeper", f"k{i}", i)
    with pytest.raises(LimitExceeded):
        s.save("root:keeper", "one-too-many", 1)
    s.save("root:keeper", "k0", "overwrite is fine")
    assert s.load("root:keeper", "k0") == "overwrite is fine"
    assert s.load("root:keeper", "one-too-many") is None
    db.close()


ASKER = '''
import json
from agentix.sdk import agent
from agentix.agents.loop import LOOP_TOOLS, ToolLoop
k = agent.connect()
k.recv(timeout=10)
child = k.spawn({"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
                 "isolation": "degraded", "system_prompt": "[agent:keeper]",
                 "capabilities": ["model: *", "message_send: asker"]})
res = ToolLoop(k, list(LOOP_TOOLS.values()), system_prompt="[agent:asker]").run("ask the keeper")
k.send(child.agent_id, {"kind": "shutdown"})
k.wait_child(child.agent_id, timeout=30)
k.exit(res.to_data())
'''


def test_send_and_wait_between_real_agents(tmp_path, model):
    prog = tmp_path / "asker.py"
    prog.write_text(ASKER)

    def route(data: dict[str, Any]) -> Scripted:
        if "[agent:asker]" not in system_text(data):
            return echo_users(data)
        tools = [m for m in data["messages"] if m["role"] == "tool"]
        if not tools:
            return Scripted(tool_calls=[{"name": "send_and_wait",
                                         "arguments": {"to": "keeper", "message": "ping", "timeout": 30}}])
        return text(tools[0]["content"])

    model.route = route

    async def go():
        k, store = await _kernel(tmp_path / "home", model.base_url)
        rec = await k.spawn(parse_manifest({"name": "asker", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["model: *", "spawn_child: keeper",
                                                             "message_send: [keeper, asker]"]}),
                            message="go")
        await k.wait(rec, 60)
        await k.shutdown()
        return rec

    rec = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    answer = json.loads(rec.result["text"])
    assert answer["from"] == "keeper" and answer["result"]["text"] == "ping"


def test_daemon_restart_starts_the_persistent_agent_again(tmp_path, model):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(config_toml(model.base_url))
    proc = start_daemon(home)
    try:
        with SdkKernel(home) as k:
            a = k.spawn(KEEPER)
            r1 = k.run_agent("keeper", "my name is Ada", timeout=60)
            r2 = k.run_agent("keeper", "and yours?", timeout=60)
    finally:
        stop_daemon(home, proc)
    assert r1["result"]["text"] == "my name is Ada"
    assert r2["result"]["text"] == "my name is Ada | and yours?"

    proc = start_daemon(home)           # nobody spawns it: the kernel starts it again
    try:
        with SdkKernel(home) as k:
            live = [x for x in k.list(all=False) if x.name == "keeper"]
            assert len(live) == 1 and live[0].agent_id != a.agent_id
            r3 = k.run_agent("keeper", "who am I?", timeout=60)
            respawned = [e for e in k.events(0) if e["kind"] == "agent.respawned"]
            k.stop("keeper")            # the operator stops it: it is forgotten
    finally:
        stop_daemon(home, proc)
    assert r3["result"]["text"] == "my name is Ada | and yours? | who am I?"
    assert respawned and respawned[0]["agent"] == live[0].agent_id

    proc = start_daemon(home)
    try:
        with SdkKernel(home) as k:
            assert [x.name for x in k.list(all=False)] == []   # not started again
            # the records of earlier runs are still listed (ps -a), exited
            assert {x.state for x in k.list(all=True)} == {"exited"}
    finally:
        stop_daemon(home, proc)
