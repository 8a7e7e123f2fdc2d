"""The LLM loop against the real kernel, with the model played by a fake OpenAI-compatible
server on loopback (the real wire format): what the model is offered, what it is told when
it writes broken arguments, what the run costs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from tests.fakes.openai_server import Scripted
from tests.fakes.routed_openai import AgentScripts, RoutedOpenAIServer, call, config_toml, text

MODEL_GRANT = "model: fake:fake-model"   # think needs a model grant
PRICES = '\n[prices."fake:fake-model"]\ninput_per_mtok = 1000.0\noutput_per_mtok = 2000.0\n'


def run_loop_agent(tmp_path: Path, scripts: AgentScripts, capabilities: list[str], *, extra_toml: str = ""):
    server = RoutedOpenAIServer(scripts)
    server.start()

    async def go():
        home = Home(tmp_path / "home")
        home.create()
        (home.root / "config.toml").write_text(config_toml(server.base_url, kernel=False) + extra_toml)
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
        await k.start()
        rec = await k.spawn(parse_manifest({"name": "solo", "program": "module:agentix.agents.loop",
                                            "isolation": "degraded", "system_prompt": "[agent:solo]",
                                            "capabilities": [*capabilities, MODEL_GRANT]}), message="do it")
        await k.wait(rec, 120)
        events = k.audit.sink.tail(agent=rec.agent_id, limit=10_000)
        await k.shutdown()
        return rec, events

    try:
        rec, events = asyncio.run(go())
    finally:
        server.stop()
    assert rec.exit is not None and rec.exit.reason == "completed", Path(rec.log_path).read_text()
    return rec, events, server.stats.bodies


def offered(body: dict) -> list[str]:
    return sorted(t["function"]["name"] for t in body.get("tools") or [])


LOOP_NAMES = {"spawn_agent", "spawn_agents", "send_message", "send_and_wait", "recv_message"}


@pytest.mark.parametrize("caps,loop_tools", [
    (["tool: echo"], set()),
    (["tool: echo", "message_send: [someone]"], {"send_message", "send_and_wait", "recv_message"}),
    (["tool: echo", "spawn_child: [helper]"], {"spawn_agent", "spawn_agents"}),
])
def test_child_is_offered_only_the_tools_its_grants_allow(tmp_path, caps, loop_tools):
    """A tiny model burned its budget on spawn/message calls it could never make: the kernel
    now lists the loop tools the grants allow, and only those reach the model."""
    rec, _, bodies = run_loop_agent(tmp_path, AgentScripts({"solo": [text("done")]}), caps)
    assert rec.result["stop_reason"] == "complete"
    names = set(offered(bodies[0]))
    assert "echo" in names
    assert names & LOOP_NAMES == loop_tools


def test_malformed_tool_json_is_reported_as_invalid_json(tmp_path):
    seen: list[str] = []

    def after(data):
        seen.extend(m["content"] for m in data["messages"] if m.get("role") == "tool")
        return text("fixed it")

    scripts = AgentScripts({"solo": [Scripted(tool_calls=[{"name": "echo", "arguments": '{"message": "hi'}]),
                                     after]})
    rec, events, bodies = run_loop_agent(tmp_path, scripts, ["tool: echo"])
    assert rec.result["stop_reason"] == "complete"
    err = json.loads(seen[0])
    assert err["error"] == "invalid_json" and err["message"].startswith("your arguments are not valid JSON: ")
    assert "_raw" not in seen[0] and "missing" not in err["message"]
    # nothing ran: the broken call never reached the kernel's tool
    assert not [e for e in events if e["kind"] == "tool.invoked"]
    # the OpenAI wire carries no agentix-only keys
    assert all("is_error" not in m for b in bodies for m in b["messages"])


def test_loop_result_carries_cost_from_the_price_table(tmp_path):
    scripts = AgentScripts({"solo": [call("echo", message="x"), text("done")]})
    rec, events, _ = run_loop_agent(tmp_path, scripts, ["tool: echo"], extra_toml=PRICES)
    reported = sum(e["data"]["cost_usd"] for e in events if e["kind"] == "usage.reported")
    assert reported > 0 and rec.result["cost_usd"] == pytest.approx(reported, rel=1e-4)


def test_loop_result_cost_is_null_without_a_price(tmp_path):
    rec, _, _ = run_loop_agent(tmp_path, AgentScripts({"solo": [text("done")]}), ["tool: echo"])
    assert rec.result["cost_usd"] is None


PROBE = """
from agentix.sdk import agent
k = agent.connect()
k.exit(k.info())
"""


def test_sys_info_names_the_model_but_not_the_endpoint(tmp_path):
    server = RoutedOpenAIServer(AgentScripts({}))
    server.start()

    async def go():
        home = Home(tmp_path / "home")
        home.create()
        (home.root / "config.toml").write_text(config_toml(server.base_url, kernel=False))
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
        await k.start()
        prog = tmp_path / "probe.py"
        prog.write_text(PROBE)
        rec = await k.spawn(parse_manifest({"name": "probe", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["tool: echo"]}))
        await k.wait(rec, 60)
        await k.shutdown()
        return rec

    try:
        rec = asyncio.run(go())
    finally:
        server.stop()
    info = rec.result
    assert info["model"]["model"] == "fake:fake-model" and info["model"]["provider"] == "fake"
    assert "base_url" not in info["model"] and "127.0.0.1" not in json.dumps(info)
    assert info["loop_tools"] == []
