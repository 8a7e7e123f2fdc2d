"""`agentix mcp --http`: the MCP face over Streamable HTTP, spoken to by the `mcp` package's
client over real HTTP, authenticated with the HTTP API's tokens.

Each refusal asserts the status and that nothing reached the kernel's methods: no agent
spawned, and the audit log gained only the refusal's record.

The module's tests share one kernel and one face (a daemon and an `agentix mcp --http` per
test cost seconds each): each names its own tokens and agents and asserts on what it
added, never on a fresh kernel's emptiness."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("mcp")

import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from conftest import program, serve_mcp_http  # noqa: E402


@pytest.fixture
def kernel(module_kernel: Any) -> Any:
    """This module's kernel: the shared one (see the module's docstring)."""
    return module_kernel


@pytest.fixture(scope="module")
def http_face(module_kernel: Any) -> Iterator[str]:
    with serve_mcp_http(module_kernel.home) as (url, _port):
        yield url


def token(kernel: Any, name: str, role: str) -> str:
    return kernel.client.call("tokens.create", name=name, role=role)["token"]


def with_client(url: str, tok: str | None, body: Any) -> Any:
    async def go() -> Any:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http)) as c:
                return await body(c)
    return asyncio.run(go())


def test_operator_token_spawns_over_mcp_http_and_the_audit_names_the_face(kernel, http_face) -> None:
    tok = token(kernel, "claude", "operator")
    tail = kernel.client.audit_tail(0, limit=10_000)
    before = tail[-1]["seq"] if tail else 0

    async def body(c: Client) -> Any:
        names = {t.name for t in (await c.list_tools()).tools}
        r = await c.call_tool("spawn", {"program": program("sleeper.py"), "name": "via-http"})
        assert not r.is_error, r.content
        info = await c.call_tool("kernel_info", {})
        return names, r.structured_content["agent_id"], info.structured_content

    names, aid, info = with_client(http_face, tok, body)
    assert {"spawn", "stop_agent", "audit_verify"} <= names
    assert info["pid"] > 0
    assert kernel.client.status(aid).state == "running"
    spawned = [e for e in kernel.client.audit_tail(before, limit=10_000) if e["kind"] == "agent.spawn"]
    assert len(spawned) == 1 and spawned[0]["data"]["by"] == "mcp-http"
    kernel.client.kill(aid)


def test_viewer_token_gets_only_the_read_only_tools(kernel, http_face) -> None:
    tok = token(kernel, "watcher", "viewer")
    agents = len(kernel.client.list())

    async def body(c: Client) -> Any:
        return {t.name for t in (await c.list_tools()).tools}

    names = with_client(http_face, tok, body)
    assert "list_agents" in names and "audit_verify" in names
    assert not names & {"spawn", "stop_agent", "kill_agent", "respond_approval", "run_goal"}
    assert len(kernel.client.list()) == agents


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer agx_0000_nope", "Basic dXNlcjpwYXNz"])
def test_requests_without_a_valid_token_are_refused_before_mcp(kernel, http_face, header) -> None:
    tail = kernel.client.audit_tail(0, limit=10_000)
    before = tail[-1]["seq"] if tail else 0
    agents = len(kernel.client.list())
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if header:
        headers["Authorization"] = header
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "spawn", "arguments": {"program": program("sleeper.py")}}}
    r = httpx2.post(http_face, json=body, headers=headers, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert len(kernel.client.list()) == agents
    new = [e["kind"] for e in kernel.client.audit_tail(before, limit=10_000)]
    assert set(new) <= {"http.refused", "session.bind"}


def test_a_revoked_token_stops_working_at_once(kernel, http_face) -> None:
    tok = token(kernel, "temp", "operator")

    async def body(c: Client) -> Any:
        return len((await c.list_tools()).tools)

    assert with_client(http_face, tok, body) > 0
    kernel.client.call("tokens.revoke", name="temp")
    r = httpx2.post(http_face, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Authorization": f"Bearer {tok}", "Accept": "application/json, text/event-stream"},
                    timeout=10)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
