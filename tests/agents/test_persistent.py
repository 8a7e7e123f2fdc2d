"""Persistent agents on a real kernel: agent.run delivers work and waits, the conversation
is kept between runs and survives a kernel restart (the agent spawned again by name).

A scripted ``think`` stands in for the inference layer (not on this branch); everything
else is real: the kernel, the loop program as a process, SQLite state.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import InvalidRequest, LimitExceeded, Timeout
from agentix.core.manifest import parse_manifest
from agentix.kernel import persistent
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import OPERATOR, Call, MethodSpec
from agentix.kernel.home import Home
from agentix.kernel.kernel import Kernel


def _think(call_params: dict[str, Any]) -> dict[str, Any]:
    users = [m["content"] for m in call_params["messages"] if m["role"] == "user"]
    return {"text": " | ".join(users), "tool_calls": [], "usage": {"input_tokens": 1, "output_tokens": 1},
            "stop_reason": "end_turn", "model": "script", "provider": "script", "scripted": True}


async def _kernel(home_dir: Path) -> tuple[Kernel, persistent.StateStore]:
    home = Home(home_dir)
    home.create()
    k = Kernel(home, KernelConfig(backend="plain", isolation="degraded"))
    await k.start()
    store = k.state_store  # the kernel registers persistence itself

    async def think(call: Call) -> dict[str, Any]:
        return _think(call.params)
    k.pipeline.register(MethodSpec("think", think, agent=True, checked=False), replace=True)
    real_info = k.pipeline._methods["sys.info"]

    async def info_with_manifest(call: Call) -> dict[str, Any]:   # the sys.info change asked of the kernel
        out = await real_info.handler(call)
        return {**out, "manifest": k.table.get(call.caller.agent_id).manifest.to_data()}
    k.pipeline._methods["sys.info"] = MethodSpec("sys.info", info_with_manifest, agent=True, checked=False)
    return k, store


KEEPER = {"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
          "isolation": "degraded", "system_prompt": "remember"}


def test_agent_run_conversation_survives_a_kernel_restart(tmp_path):
    async def first_kernel():
        k, store = await _kernel(tmp_path / "home")
        rec = await k.spawn(parse_manifest(KEEPER))
        r1 = await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "keeper", "message": "my name is Ada"})
        r2 = await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": rec.agent_id, "message": "and yours?"})
        with pytest.raises(InvalidRequest):
            await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "keeper", "message": "x", "timeout": -1})
        await k.shutdown()
        store.close()
        return r1, r2

    async def second_kernel():
        k, store = await _kernel(tmp_path / "home")
        await k.spawn(parse_manifest(KEEPER))
        r3 = await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "keeper", "message": "who am I?"})
        await k.shutdown()
        store.close()
        return r3

    r1, r2 = asyncio.run(first_kernel())
    assert r1["result"]["text"] == "my name is Ada" and r1["result"]["stop_reason"] == "complete"
    assert r2["result"]["text"] == "my name is Ada | and yours?"
    r3 = asyncio.run(second_kernel())
    assert r3["result"]["text"] == "my name is Ada | and yours? | who am I?"


def test_agent_run_times_out_when_nobody_answers(tmp_path):
    silent = tmp_path / "silent.py"
    silent.write_text("import time\nfrom agentix.sdk import agent\nk = agent.connect()\ntime.sleep(30)\n")

    async def go():
        k, store = await _kernel(tmp_path / "home")
        await k.spawn(parse_manifest({"name": "silent", "program": str(silent), "isolation": "degraded"}))
        with pytest.raises(Timeout):
            await k.pipeline.run(OPERATOR, "agent.run", {"agent_id": "silent", "message": "hi", "timeout": 0.5})
        await k.shutdown(grace=0.5)
        store.close()

    asyncio.run(go())


def test_state_store_identity_and_limits(tmp_path):
    s = persistent.StateStore(tmp_path / "db")
    s.save("root:keeper", "conversation", [{"role": "user", "content": "hi"}])
    assert s.load("root:keeper", "conversation") == [{"role": "user", "content": "hi"}]
    assert s.load("agent:ag-1", "conversation") is None
    with pytest.raises(LimitExceeded):
        s.save("root:keeper", "big", "x" * (persistent.MAX_STATE + 1))
    for i in range(persistent.MAX_KEYS - 1):
        s.save("root:keeper", f"k{i}", i)
    with pytest.raises(LimitExceeded):
        s.save("root:keeper", "one-too-many", 1)
    s.save("root:keeper", "k0", "overwrite is fine")
    assert s.load("root:keeper", "k0") == "overwrite is fine"
    assert s.load("root:keeper", "one-too-many") is None
    s.close()


ASKER = '''
import json
from agentix.sdk import agent
from agentix.agents.loop import LOOP_TOOLS, ToolLoop
k = agent.connect()
k.recv(timeout=10)
child = k.spawn({"name": "keeper", "program": "module:agentix.agents.loop", "lifecycle": "persistent",
                 "isolation": "degraded", "capabilities": ["message_send: asker"]})
res = ToolLoop(k, list(LOOP_TOOLS.values())).run("ask the keeper")
k.send(child.agent_id, {"kind": "shutdown"})
k.wait_child(child.agent_id, timeout=30)
k.exit(res.to_data())
'''


def test_send_and_wait_between_real_agents(tmp_path):
    prog = tmp_path / "asker.py"
    prog.write_text(ASKER)

    async def go():
        k, store = await _kernel(tmp_path / "home")
        k.pipeline._methods.pop("think")   # replace _kernel's echoing model with one per agent

        async def think(call: Call) -> dict[str, Any]:
            name = k.table.get(call.caller.agent_id).name
            msgs = call.params["messages"]
            if name == "asker":
                tools = [m for m in msgs if m["role"] == "tool"]
                if not tools:
                    return {"text": None, "stop_reason": "tool_use", "usage": {},
                            "tool_calls": [{"id": "c1", "name": "send_and_wait",
                                            "arguments": {"to": "keeper", "message": "ping", "timeout": 30}}]}
                return {"text": tools[0]["content"], "tool_calls": [], "usage": {}, "stop_reason": "end_turn"}
            return _think(call.params)
        k.pipeline.register(MethodSpec("think", think, agent=True, checked=False), replace=True)
        rec = await k.spawn(parse_manifest({"name": "asker", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["spawn_child: keeper",
                                                             "message_send: [keeper, asker]"]}),
                            message="go")
        await k.wait(rec, 60)
        await k.shutdown()
        store.close()
        return rec

    rec = asyncio.run(go())
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    answer = json.loads(rec.result["text"])
    assert answer["from"] == "keeper" and answer["result"]["text"] == "ping"
