"""Each seam lets only the family out, exactly once: the pipeline (a handler's exception),
a tool's backend (``ToolSpec.run``), an inference provider (``Provider.complete``) and a
sandbox backend (``Substrate.spawn``). And every ``tool.invoked`` gets its ``tool.result``,
whatever the backend raised.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import (
    AgentixError,
    CapabilityDenied,
    InternalError,
    IsolationUnavailable,
    ProviderError,
    ToolError,
)
from agentix.core.manifest import Limits
from agentix.kernel.dispatch import Call, Caller, MethodPolicy, MethodSpec, Pipeline
from agentix.llm.base import InferenceRequest, InferenceResponse, Provider
from agentix.llm.openai import OpenAIProvider
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.plain import PlainSubstrate
from agentix.tools.base import ToolContext, ToolRegistry, ToolSpec

AGENT = Caller(agent_id="a1", name="a")


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def record(self, kind: str, agent_id: str | None, data: dict[str, Any],
                     taint: tuple[str, ...] = (), *, durable: bool = True) -> None:
        self.records.append((kind, data))


class Settle:
    """A stage that remembers what ``after`` saw (a budget settles there)."""

    def __init__(self) -> None:
        self.after_errors: list[BaseException | None] = []

    async def before(self, call: Call) -> None:
        return None

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        self.after_errors.append(error)


def _pipeline(raise_: BaseException) -> tuple[Pipeline, Sink, Settle]:
    sink, settle = Sink(), Settle()
    tools = ToolRegistry()

    async def backend(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        raise raise_

    tools.register(ToolSpec("file_read", "", {"type": "object", "properties": {}}, backend))
    p = Pipeline(sink, tool_durability=tools.durability)
    p.add_stage(settle)

    async def tool_call(call: Call) -> dict[str, Any]:
        assert call.tool is not None
        ctx = ToolContext(agent=None, call=call, agent_id="a1", workspace=None)
        return await tools.get(call.tool).run(ctx, call.args)

    p.register(MethodSpec("tool.call", tool_call, MethodPolicy(
        "effect", "test", resources=lambda *a: [], recorded=True, tool_call=True), agent=True))
    return p, sink, settle


BACKEND_FAILURES = [
    (FileNotFoundError(2, "No such file or directory", "/host/secret/path"), ToolError, "ENOENT"),
    (PermissionError(13, "Permission denied"), ToolError, "EACCES"),
    (IsADirectoryError(21, "Is a directory"), ToolError, "EISDIR"),
    (OSError("no errno at all"), ToolError, "EIO"),
    (ValueError("a bug in the tool"), InternalError, None),
    (KeyError("missing"), InternalError, None),
    (CapabilityDenied("refused inside the tool", reason="late"), CapabilityDenied, None),
]


@pytest.mark.parametrize("exc,want,errno_name", BACKEND_FAILURES,
                         ids=[type(e).__name__ for e, _, _ in BACKEND_FAILURES])
def test_a_backend_failure_leaves_as_the_family_with_its_result_record(exc, want, errno_name):
    p, sink, settle = _pipeline(exc)
    with pytest.raises(AgentixError) as ei:
        asyncio.run(p.run(AGENT, "tool.call", {"name": "file_read", "args": {}}))
    err = ei.value
    assert type(err) is want
    if errno_name is not None:
        assert err.data["errno"] == errno_name and err.data["tool"] == "file_read"
    if want is InternalError:  # no detail of the bug leaves the kernel
        assert "bug" not in err.message and "missing" not in err.message and err.data == {}
    assert "/host/secret" not in repr(err.to_rpc())
    kinds = [k for k, _ in sink.records]
    assert kinds == ["tool.invoked", "tool.result"]
    result = sink.records[-1][1]
    assert result["ok"] is False and result["error"] == err.code and result["tool"] == "file_read"
    assert settle.after_errors == [err]  # the stages settled with the error the caller got


def test_a_cancelled_call_still_gets_its_result_record_and_stays_cancelled():
    p, sink, settle = _pipeline(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(p.run(AGENT, "tool.call", {"name": "file_read", "args": {}}))
    assert [k for k, _ in sink.records] == ["tool.invoked", "tool.result"]
    assert sink.records[-1][1]["error"] == "internal_error"
    assert "cancelled" in sink.records[-1][1]["message"]
    assert len(settle.after_errors) == 1 and isinstance(settle.after_errors[0], InternalError)


def test_every_tool_invoked_has_its_result_on_the_real_kernel(kernel):
    """A missing file, a missing directory, a directory read as a file: the kernel's own
    backends fail, the caller gets a family error that is not internal_error, and the
    audit has a result for every invocation."""
    k = kernel.client
    aid = kernel.spawn("sleeper.py")
    (Path(k.status(aid).raw["workspace"]) / "d").mkdir()
    calls = [("file_read", {"path": "missing.txt"}), ("file_list", {"path": "no-such-dir"}),
             ("file_read", {"path": "d"})]
    for tool, args in calls:
        with pytest.raises(AgentixError) as ei:
            k.invoke(tool, args, agent=aid)
        assert ei.value.code in ("not_found", "tool_error", "invalid_request"), ei.value
    tool_events = k.events(kind="tool", agent=aid)
    invoked = [e for e in tool_events if e["kind"] == "tool.invoked"]
    results = [e for e in tool_events if e["kind"] == "tool.result"]
    assert len(invoked) == len(results) >= len(calls)
    failed = [e for e in results if not e["data"]["ok"]]
    assert len(failed) >= len(calls)
    assert all(e["data"]["error"] != "internal_error" for e in failed)


# -- the provider seam


class _Raises(Provider):
    name = "flaky"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def _complete(self, req: InferenceRequest, on_delta: Any) -> InferenceResponse:
        raise self.exc


REQ = InferenceRequest.from_params({"messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("exc,retryable", [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (TimeoutError(), True),
    (KeyError("choices"), False),
    (TypeError("'str' object is not subscriptable"), False),
])
def test_whatever_a_provider_lets_out_leaves_as_provider_error(exc, retryable):
    with pytest.raises(ProviderError) as ei:
        asyncio.run(_Raises(exc).complete(REQ))
    assert ei.value.data["provider"] == "flaky" and ei.value.data["retryable"] is retryable
    assert type(exc).__name__ in ei.value.message


def test_a_provider_error_passes_through_unchanged():
    mine = ProviderError("flaky: 503", provider="flaky", status=503, retryable=True)
    with pytest.raises(ProviderError) as ei:
        asyncio.run(_Raises(mine).complete(REQ))
    assert ei.value is mine


class _Malformed(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"choices": "not a list", "usage": 7}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        pass


def test_a_real_provider_fed_a_malformed_body_raises_provider_error():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Malformed)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()

    async def go() -> None:
        p = OpenAIProvider("local", f"http://127.0.0.1:{srv.server_address[1]}/v1", None, timeout=10)
        try:
            await p.complete(REQ)
        finally:
            await p.aclose()

    try:
        with pytest.raises(ProviderError) as ei:
            asyncio.run(go())
    finally:
        srv.shutdown()
    assert ei.value.data["provider"] == "local"


def test_a_real_provider_against_a_closed_port_raises_retryable_provider_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    async def go() -> None:
        p = OpenAIProvider("local", f"http://127.0.0.1:{port}/v1", None, timeout=5)
        try:
            await p.complete(REQ)
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as ei:
        asyncio.run(go())
    assert ei.value.data["retryable"] is True


# -- the substrate seam


def test_a_backend_that_cannot_start_the_process_raises_isolation_unavailable(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    spec = LaunchSpec(agent_id="ag-missing1", name="missing", argv=[str(tmp_path / "no-such-python")],
                      workspace=ws, env={}, channel_fd=0, log_path=tmp_path / "log",
                      limits=Limits(), degraded_ok=True)
    with pytest.raises(IsolationUnavailable) as ei:
        asyncio.run(PlainSubstrate().spawn(spec))
    assert ei.value.data == {"layer": "substrate", "backend": "plain"}
    assert "FileNotFoundError" in ei.value.message
    assert not isinstance(ei.value, OSError)


def test_a_backends_own_refusal_passes_through(tmp_path):
    spec = LaunchSpec(agent_id="ag-plain001", name="p", argv=[sys.executable, "-c", "pass"],
                      workspace=tmp_path, env={}, channel_fd=0, log_path=tmp_path / "log",
                      limits=Limits(), degraded_ok=False)
    with pytest.raises(IsolationUnavailable) as ei:
        asyncio.run(PlainSubstrate().spawn(spec))
    assert ei.value.data["missing"] and "degraded" in ei.value.message
    assert not (tmp_path / "log").exists()  # refused before anything ran

