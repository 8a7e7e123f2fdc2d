"""`agentix mcp` over the real protocol: the `mcp` package's client starts `agentix mcp` on
stdio against a real kernel daemon in a temporary home, and speaks MCP to it.

Each refusal test asserts the refusal (an MCP tool error with the kernel's code, or a
refused kernel method) and then that nothing changed: no agent spawned or stopped, and the
audit log holds only the refusal's record.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from agentix.kernel.methods import POLICIES  # noqa: E402
from agentix.mcp.server import TOOLS  # noqa: E402
from agentix.sdk.errors import CapabilityDenied, InvalidRequest  # noqa: E402
from conftest import Daemon, program, shared_daemon, short_tmp, wait_until  # noqa: E402

MUTATING = {t.name for t in TOOLS if any(POLICIES[m].durability == "effect" for m in t.methods)}
READING = {t.name for t in TOOLS} - MUTATING


def serve(kernel: Any, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "agentix.cli.main", "--home", str(kernel.home), "mcp", *extra],
        env={**os.environ, "AGENTIX_HOME": str(kernel.home)})


def with_client(kernel: Any, body: Callable[[Client], Awaitable[Any]], *extra: str) -> Any:
    async def go() -> Any:
        async with Client(serve(kernel, *extra)) as client:
            return await body(client)
    return asyncio.run(go())


def audit(kernel: Any) -> list[dict[str, Any]]:
    return kernel.client.audit_tail(0, limit=1000)


@pytest.fixture(scope="module")
def idle_kernel(isolation_mode: str) -> Iterator[Daemon]:
    """One kernel for the refusal cases that must leave it empty: no test starts an agent on
    it (a daemon per case cost seconds each), so each still asserts "no agent at all"."""
    yield from shared_daemon(isolation_mode)


def by_mcp(entries: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["kind"], e["data"]) for e in entries if e["data"].get("by") == "mcp"]


# ---------------------------------------------------------------- the tool list
def test_every_operator_tool_is_listed_with_a_precise_schema(kernel) -> None:
    async def body(c: Client) -> Any:
        return (await c.list_tools()).tools

    tools = {t.name: t for t in with_client(kernel, body)}
    assert set(tools) == {t.name for t in TOOLS}
    assert {"spawn", "run_goal", "list_agents", "agent_status", "agent_logs", "stop_agent",
            "kill_agent", "list_approvals", "respond_approval", "audit_tail", "audit_verify"} <= set(tools)
    for t in tools.values():
        assert t.description and t.input_schema["type"] == "object"
        for name, prop in t.input_schema.get("properties", {}).items():
            assert prop.get("description"), f"{t.name}.{name} has no description"
        # read-only hints come from the method table, not from a list in the server
        assert t.annotations.read_only_hint is (t.name in READING), t.name
    assert tools["agent_logs"].input_schema["required"] == ["agent"]
    assert set(tools["respond_approval"].input_schema["required"]) == {"id", "approve"}
    assert tools["respond_approval"].input_schema["properties"]["approve"]["type"] == "boolean"
    assert tools["audit_tail"].input_schema["properties"]["limit"]["maximum"] == 1000
    assert tools["stop_agent"].annotations.destructive_hint is True
    assert {"spawn", "stop_agent", "kill_agent", "respond_approval", "run_goal"} <= MUTATING


# ---------------------------------------------------------------- the operator's work
def test_spawn_list_logs_stop_over_mcp_and_the_audit_names_mcp(kernel) -> None:
    async def body(c: Client) -> dict[str, Any]:
        r = await c.call_tool("spawn", {"program": program("sleeper.py"), "name": "via-mcp"})
        assert not r.is_error, r.content
        aid = r.structured_content["agent_id"]
        assert r.structured_content["name"] == "via-mcp" and r.structured_content["pid"] > 0
        listed = await c.call_tool("list_agents", {})
        assert aid in [a["agent_id"] for a in listed.structured_content["agents"]]
        assert aid in listed.content[0].text  # the same result as text
        status = await c.call_tool("agent_status", {"agent": "via-mcp"})
        assert status.structured_content["state"] == "running"
        for _ in range(100):
            logs = await c.call_tool("agent_logs", {"agent": aid})
            if "ready" in logs.structured_content["text"]:
                break
            await asyncio.sleep(0.1)
        assert logs.structured_content["text"] == "ready\n" and logs.structured_content["live"]
        again = await c.call_tool("agent_logs", {"agent": aid, "offset": 2, "max_bytes": 2})
        assert again.structured_content["text"] == "ad"
        stopped = await c.call_tool("stop_agent", {"agent": aid, "grace": 2})
        assert not stopped.is_error and stopped.structured_content["state"] == "exited"
        verify = await c.call_tool("audit_verify", {})
        assert verify.structured_content["ok"] is True
        return {"aid": aid}

    aid = with_client(kernel, body)["aid"]
    info = kernel.client.status(aid)
    assert info.state == "exited" and info.reason == "killed"
    entries = audit(kernel)
    binds = [e["data"] for e in entries if e["kind"] == "session.bind"]
    assert binds == [{"ok": True, "face": "mcp", "read_only": False}]
    done = by_mcp(entries)
    assert ("agent.spawn", {"ok": True, "by": "mcp", "agent_id": aid}) in done
    assert ("agent.stop", {"ok": True, "by": "mcp", "agent_id": aid}) in done
    # reads are not recorded, and nothing else claims to be the mcp face
    assert {k for k, _ in done} == {"agent.spawn", "agent.stop"}


def test_a_kernel_error_is_a_tool_error_with_its_code_and_the_server_keeps_serving(kernel) -> None:
    before = audit(kernel)

    async def body(c: Client) -> None:
        r = await c.call_tool("agent_status", {"agent": "ag-nothere"})
        assert r.is_error and r.structured_content["error"] == "not_found"
        assert r.content[0].text.startswith("not_found: ")
        r = await c.call_tool("stop_agent", {"agent": "ag-nothere"})
        assert r.is_error and r.structured_content["error"] == "not_found"
        r = await c.call_tool("respond_approval", {"id": "ap-nothere", "approve": True})
        assert r.is_error and r.structured_content["error"] == "not_found"
        info = await c.call_tool("kernel_info", {})
        assert not info.is_error and info.structured_content["pid"] == kernel.proc.pid

    with_client(kernel, body)
    assert kernel.client.list() == []
    # the refused stop is recorded as the mcp face's failed call; nothing else was added
    new = [(e["kind"], e["data"]) for e in audit(kernel)[len(before):]]
    assert [k for k, d in new if k != "session.bind"] == ["agent.stop", "approval.respond"]
    assert all(d.get("ok") is False and d["by"] == "mcp" for k, d in new if k != "session.bind")


@pytest.mark.parametrize("args, what", [
    ({}, "agent"),                                        # a required field missing
    ({"agent": 42}, "agent"),                             # the wrong type
    ({"agent": "x", "max_bytes": 10**9}, "max_bytes"),    # over the schema's maximum
    ({"agent": "x", "offset": -1}, "offset"),             # under its minimum
])
def test_an_invalid_argument_is_a_tool_error_and_the_server_keeps_serving(idle_kernel, args, what) -> None:
    kernel = idle_kernel

    async def body(c: Client) -> None:
        r = await c.call_tool("agent_logs", args)
        assert r.is_error and what in r.content[0].text
        ok = await c.call_tool("list_agents", {})
        assert not ok.is_error and ok.structured_content == {"agents": []}

    with_client(kernel, body)


@pytest.mark.parametrize("args, field", [
    ({"program": "relative/worker.py"}, "program"),
    ({"manifest": {"name": "m", "program": "worker.py"}}, "manifest.program"),
    ({}, "program"),                                                       # neither
    ({"program": "/x.py", "manifest": {"name": "m", "program": "/x.py"}}, "program"),  # both
    ({"program": "/nonexistent/agent.py"}, None),                          # the kernel refuses it
])
def test_a_bad_spawn_is_refused_and_starts_nothing(idle_kernel, args, field) -> None:
    kernel = idle_kernel

    async def body(c: Client) -> Any:
        return await c.call_tool("spawn", args)

    r = with_client(kernel, body)
    assert r.is_error and r.structured_content["error"] == "invalid_request"
    if field is not None:
        assert r.structured_content["data"]["field"] == field
    assert kernel.client.list() == []
    assert not [e for e in audit(kernel) if e["kind"] == "agent.spawned"]


def test_spawn_grants_exactly_what_it_is_given(kernel) -> None:
    async def body(c: Client) -> Any:
        bare = await c.call_tool("spawn", {"program": program("sleeper.py"), "name": "bare"})
        granted = await c.call_tool("spawn", {
            "manifest": {"name": "granted", "program": program("sleeper.py"), "capabilities": ["tool: echo"]},
            "grants": ["file_read: /workspace/*"], "args": ["30"]})
        return bare.structured_content["agent_id"], granted.structured_content["agent_id"]

    bare, granted = with_client(kernel, body)
    grants = {aid: sorted(g for t in kernel.client.caps(aid) for g in t["grants"]) for aid in (bare, granted)}
    assert grants[bare] == []
    assert grants[granted] == ["file_read: /workspace/*", "tool: echo"]
    for aid in (bare, granted):
        kernel.client.kill(aid)


# ---------------------------------------------------------------- read-only
def test_read_only_mode_lists_no_mutating_tool_and_refuses_calling_one(kernel) -> None:
    before = len(audit(kernel))

    async def body(c: Client) -> Any:
        names = {t.name for t in (await c.list_tools()).tools}
        spawned = await c.call_tool("spawn", {"program": program("sleeper.py")})
        listed = await c.call_tool("list_agents", {})
        return names, spawned, listed

    names, spawned, listed = with_client(kernel, body, "--read-only")
    assert names == READING and not names & MUTATING
    assert spawned.is_error and not listed.is_error
    assert kernel.client.list() == []
    new = audit(kernel)[before:]
    assert [(e["kind"], e["data"]) for e in new] == [
        ("session.bind", {"ok": True, "face": "mcp", "read_only": True})]


def test_a_read_only_connection_is_refused_every_effect_method_by_the_kernel(kernel) -> None:
    """The kernel enforces read-only on the connection itself: a face that offered a
    mutating tool by mistake would still be refused, and the refusal names the face."""
    aid = kernel.spawn("sleeper.py")
    with kernel.connect() as k:
        bound = k.bind("mcp", read_only=True)
        assert bound["methods"] and all(d == "no_effect" for d in bound["methods"].values())
        assert "agent.spawn" not in bound["methods"] and "agent.list" in bound["methods"]
        before = len(audit(kernel))
        for method, params in [("agent.spawn", {"manifest": {"name": "x", "program": program("sleeper.py")}}),
                               ("agent.kill", {"agent_id": aid}), ("kernel.shutdown", {}),
                               ("tool.invoke", {"name": "echo", "args": {"text": "hi"}})]:
            with pytest.raises(CapabilityDenied) as ei:
                k.call(method, **params)
            assert ei.value.data["reason"] == "read_only" and "read-only" in ei.value.message
        assert [a.agent_id for a in k.list()] == [aid]  # reads still work
        with pytest.raises(InvalidRequest):
            k.bind("mcp")  # binds once: it cannot widen itself back
    assert kernel.client.status(aid).state == "running" and len(kernel.client.list()) == 1
    refused = audit(kernel)[before:]
    assert [e["kind"] for e in refused] == ["capability.denied"] * 4 + ["session.bind"]
    assert all(e["data"]["by"] == "mcp" and e["data"]["reason"] == "read_only" for e in refused[:4])
    assert refused[4]["data"]["ok"] is False and refused[4]["data"]["error"] == "invalid_request"


@pytest.mark.parametrize("face", ["operator", "", "MCP", "a" * 33, "m cp", "../x"])
def test_a_bad_face_name_is_refused_and_the_connection_stays_the_operator(module_kernel, face) -> None:
    kernel = module_kernel
    tail = audit(kernel)
    before = tail[-1]["seq"] if tail else 0
    with kernel.connect() as k:
        with pytest.raises(InvalidRequest) as ei:
            k.bind(face)
        assert ei.value.data["field"] == "face"
        r = k.spawn(program=program("sleeper.py"))  # still the operator: not read-only
        k.kill(r.agent_id)
    new = kernel.client.audit_tail(before, limit=1000)
    assert new and not by_mcp(new) and not [e for e in new if e["data"].get("by")]
    wait_until(lambda: kernel.client.status(r.agent_id).state == "exited", timeout=10)


# ---------------------------------------------------------------- a lost kernel
def test_a_lost_kernel_is_a_tool_error_and_a_restarted_one_is_reached_again(isolation_mode) -> None:
    tmp = short_tmp()
    first = Daemon(tmp / "h", isolation_mode)
    second: list[Daemon] = []

    async def body(c: Client) -> None:
        assert not (await c.call_tool("list_agents", {})).is_error
        first.stop()
        lost = await c.call_tool("list_agents", {})
        # the SDK's own code for a broken connection (it was internal_error, as if a kernel bug)
        assert lost.is_error and lost.structured_content["error"] == "connection_closed"
        down = await c.call_tool("kernel_info", {})  # no kernel: refused, the server still serves
        assert down.is_error and "agentix up" in down.structured_content["message"]
        assert down.structured_content["error"] == "kernel_not_running"
        second.append(Daemon(tmp / "h", isolation_mode))
        back = await c.call_tool("kernel_info", {})
        assert not back.is_error and back.structured_content["pid"] == second[0].proc.pid

    try:
        with_client(first, body)
        # the log outlives the kernel: one bind for the first connection, one for the new one
        assert [e["data"]["face"] for e in audit(second[0]) if e["kind"] == "session.bind"] == ["mcp", "mcp"]
    finally:
        for d in [first, *second]:
            if d.proc.poll() is None:
                d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
