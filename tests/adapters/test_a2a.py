"""A2A both ways, real protocol on both sides: an agentix agent published as an A2A server
(``agentix.a2a.server`` on uvicorn, on loopback) in front of a real kernel daemon, talked to
by ``a2a-sdk``'s client and by raw HTTP for the bad inputs; and an agent calling it through
the kernel tool ``a2a_call`` under a ``network:`` grant, its answer tainted ``external_tool``."""

from __future__ import annotations

import asyncio
import os
import uuid

import httpx
import pytest
import yaml

pytest.importorskip("a2a", reason="the a2a extra is not installed (pip install agentix[a2a])")
pytest.importorskip("uvicorn")

from a2a.client import ClientConfig, create_client  # noqa: E402
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState  # noqa: E402

from agentix.a2a.server import CARD_PATH  # noqa: E402
from agentix.sdk import Kernel  # noqa: E402
from tests.adapters._a2a import TOKEN, serve  # noqa: E402
from tests.adapters._harness import EXAMPLES  # noqa: E402

ECHO = EXAMPLES / "a2a" / "echo.yaml"


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path, yaml.safe_load(ECHO.read_text()), ECHO.parent) as s:
        yield s


@pytest.fixture(scope="module")
def idle_served(tmp_path_factory):
    """One served echo for the module's refusal tests: none of them runs anything, so each
    still finds that no agent ever ran (its kernel and face are started once, not per test)."""
    with serve(tmp_path_factory.mktemp("idle"), yaml.safe_load(ECHO.read_text()), ECHO.parent) as s:
        yield s


def _send(text: str, **kw):
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, parts=[Part(text=text)],
                                              message_id=str(uuid.uuid4()), **kw))


def test_a2a_client_gets_the_card_and_a_completed_task(served):
    async def go():
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            card = (await http.get(served.url.rstrip("/") + CARD_PATH)).json()
            client = await create_client(served.url, ClientConfig(httpx_client=http, streaming=False))
            last = None
            async for resp in client.send_message(_send("hello there")):
                last = resp
            task = await client.get_task(GetTaskRequest(id=last.task.id))
            return card, last, task

    card, last, task = asyncio.run(go())
    # the card comes from the manifest, and says a bearer token is required
    assert card["name"] == "echo" and card["description"] == "Answers every task with the text it was sent."
    assert "bearer" in card["securitySchemes"] and card["securityRequirements"]
    assert last.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for a in last.task.artifacts for p in a.parts] == ["echo: hello there"]
    assert task.id == last.task.id and task.status.state == TaskState.TASK_STATE_COMPLETED
    # the task was one run of the published agent, spawned by the a2a face (audited as such)
    agents = served.agents()
    assert [a.name for a in agents] == ["echo"] and agents[0].reason == "completed"
    spawns = served.events("agent.spawn")
    assert spawns and spawns[-1]["data"].get("by") == "a2a"


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_a_request_without_the_token_is_refused_and_nothing_runs(idle_served, auth):
    headers = {"Authorization": auth} if auth else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "hi"}]}}}
    r = httpx.post(idle_served.url, json=body, headers=headers, timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "authentication required" in r.json()["error"]["message"]
    assert idle_served.agents() == []


def test_an_oversized_payload_is_refused_before_it_is_parsed_and_nothing_runs(idle_served):
    big = "x" * (65 * 1024)
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": big}]}}}
    h = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(idle_served.url, json=body, headers=h, timeout=30)
    assert r.status_code == 413 and "limit of 65536 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the bound holds while the body is read
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"parts": [{"text": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}]}}}'

    r = httpx.post(idle_served.url, content=chunks(), headers={**h, "content-type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert idle_served.agents() == []


def test_an_unknown_task_id_is_a_clear_protocol_error(idle_served):
    h = {"Authorization": f"Bearer {TOKEN}", "A2A-Version": "1.0"}
    r = httpx.post(idle_served.url, json={"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "no-such-task"}},
                   headers=h, timeout=30)
    err = r.json()["error"]
    assert err["code"] == -32001 and "not found" in err["message"].lower()
    assert idle_served.agents() == []


def _spawn_caller(served, grants, body):
    with Kernel(served.home) as k:
        a = k.spawn({"name": "caller", "program": str(EXAMPLES / "a2a" / "caller.py"), "isolation": "degraded",
                     "capabilities": grants}, message=body)
        return k.wait(a.agent_id, 90)


def test_an_agent_calls_a_remote_a2a_agent_and_its_context_is_tainted(served):
    info = _spawn_caller(served, ["network: 127.0.0.1", "secret: A2A_TOKEN"],
                         {"url": served.url, "text": "from an agent", "secret": "A2A_TOKEN"})
    assert info.reason == "completed", info
    out = info.result
    assert out["first"]["state"] == "completed" and out["first"]["text"] == "echo: from an agent"
    assert TOKEN not in str(out)  # the bearer token came from the vault; the agent never saw it
    label = f"external_tool:a2a:{served.url}"
    assert label in out["taint"]
    # a second message would carry the first answer out of the machine: refused
    assert out["second_error"] == "taint_violation"
    echo_runs = [a for a in served.agents() if a.name == "echo"]
    assert len(echo_runs) == 1


@pytest.mark.parametrize("grants,why", [
    ([], "holds no capability"),                                      # nothing at all
    (["network: example.com"], "127.0.0.1"),                          # another host
    (["network: *"], "needs a grant naming the host explicitly"),     # loopback must be named
])
def test_a2a_call_without_a_grant_for_the_host_is_refused_and_nothing_is_sent(served, grants, why):
    info = _spawn_caller(served, grants, {"url": served.url, "text": "should not arrive"})
    assert info.reason == "completed", info
    code, message = info.result["first_error"]
    assert code == "capability_denied" and why in message, message
    assert [a.name for a in served.agents()] == ["caller"]  # the published agent never ran
    # refused by the decision: nothing came back from the world. (The address check of
    # ``network: *`` runs inside the tool, after resolution, and labels the context like
    # web_fetch does: a resolver's answer is world text.)
    if grants != ["network: *"]:
        assert not info.result["taint"]


def test_the_cli_refuses_to_serve_without_a_token(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "AGENTIX_A2A_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "agentix.cli.quick", "--home", str(tmp_path), "a2a", "serve",
                        str(ECHO)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "needs a bearer token" in r.stderr
