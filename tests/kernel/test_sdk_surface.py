"""The SDK's public surface is deliberate (trio's and httpx's export tests are the model):
this test fails when a public name is added, removed or renamed without its list here
changing too. And the typed tool methods, made from the kernel's tool schemas, work against
a real kernel: positional and keyword arguments, docstrings from the schema, and an unknown
tool name refused before anything is sent.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import agentix.sdk
from agentix.core.errors import CLASSES, NoSuchTool

PUBLIC: dict[str, set[str]] = {
    "agentix.sdk": {"AgentInfo", "Kernel", "SpawnResult"},
    "agentix.sdk.agent": {"LOOP_EVENTS", "AgentKernel", "Child", "ChildExit", "Message", "Reply",
                          "StateValue", "ThinkStream", "ToolCall", "connect"},
    "agentix.sdk.kernel": {"AgentInfo", "Kernel", "SpawnResult", "default_home"},
    "agentix.sdk.audit": {"SignedHead", "check_proof", "export_file", "verify_file"},
    "agentix.sdk.errors": {
        "CLASSES", "CODES", "LOCAL_CODES", "AgentixError", "ApprovalDenied", "BudgetExceeded",
        "CapabilityDenied", "CapabilityExhausted", "CapabilityExpired", "CapabilityRevoked",
        "ConnectionClosed", "HandoffEscalationDenied", "InternalError", "InvalidParams",
        "InvalidRequest", "IsolationUnavailable", "KernelNotRunning", "LayerError",
        "LimitExceeded", "MethodNotFound", "NoSuchTool", "NotFound", "PackageRejected",
        "ParseError", "ProviderError", "RefusedError", "RegistryError", "RequestError",
        "StateError", "TaintViolation", "Timeout", "ToolError", "Unauthenticated",
        "UnknownError"},
}
PRIVATE_MODULES = {"_client", "_results", "_tools", "_wire"}


def test_the_sdk_has_exactly_these_public_and_private_modules():
    found = {m.name for m in pkgutil.iter_modules(agentix.sdk.__path__)}
    public = {n for n in found if not n.startswith("_")}
    assert public == {m.rsplit(".", 1)[1] for m in PUBLIC if m != "agentix.sdk"}
    assert found - public == PRIVATE_MODULES


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_module_exports_exactly_its_list(name):
    mod = importlib.import_module(name)
    assert set(mod.__all__) == PUBLIC[name], sorted(set(mod.__all__) ^ PUBLIC[name])
    assert len(mod.__all__) == len(set(mod.__all__))
    for attr in mod.__all__:
        assert getattr(mod, attr) is not None, attr
    star: dict[str, object] = {}
    exec(f"from {name} import *", star)  # noqa: S102
    assert set(star) - {"__builtins__"} == PUBLIC[name]


@pytest.mark.parametrize("name", sorted(PRIVATE_MODULES))
def test_each_private_module_still_says_what_it_exports(name):
    mod = importlib.import_module(f"agentix.sdk.{name}")
    assert mod.__all__ and all(hasattr(mod, a) for a in mod.__all__)


def test_every_error_class_is_importable_from_the_sdk():
    from agentix.sdk import errors

    for code, cls in CLASSES.items():
        assert getattr(errors, cls.__name__) is cls, code


def test_a_token_cannot_be_constructed_outside_the_authority():
    from agentix.core.caps import Authority, Token, generate_root_key

    with pytest.raises(TypeError, match="Authority"):
        Token((), b"forged")
    key = generate_root_key()
    tok = Authority(key).mint("ag-1", ["tool: echo"], now=1000.0)  # the authority still makes them
    assert Authority(key).verify(tok.serialized, "ag-1", 1001.0).id == tok.id


def test_records_from_kernel_replies_are_immutable():
    from agentix.sdk.agent import Child, Reply, StateValue

    r = Reply._of({"text": "hi", "tool_calls": [{"id": "1", "name": "echo", "arguments": {"m": 1}}],
                   "stop_reason": "tool_calls", "usage": {"input_tokens": 3, "output_tokens": 1},
                   "model": "m", "provider": "p", "cost_usd": None})
    assert r.text == "hi" and r.tool_calls[0].name == "echo" and r.tool_calls[0].arguments == {"m": 1}
    # it reads as the raw reply too (the adapters were written against the mapping)
    assert r["usage"] == {"input_tokens": 3, "output_tokens": 1} and r.get("nope", 7) == 7
    for rec in (r, Child("a", "b"), StateValue(1, ())):
        with pytest.raises(AttributeError):
            rec.text = "changed"  # type: ignore[misc,attr-defined]


TOOLS_PROGRAM = r'''
import inspect
k.tools.file_write("a.txt", "hello world")                # positional
k.tools.file_write(path="b.txt", content="x", append=True)  # keyword
out = {"read": k.tools.file_read("a.txt")["content"],
       "limited": k.tools.file_read("a.txt", limit=5)["content"],
       "sig": str(inspect.signature(k.tools.file_read)),
       "doc": k.tools.file_read.__doc__,
       "has_nope": hasattr(k.tools, "no_such_tool"),
       "in_dir": "file_read" in dir(k.tools)}
try:
    k.tools.no_such_tool("x")
except Exception as e:
    out["nope"] = [type(e).__name__, e.code, isinstance(e, AttributeError), e.message]
try:
    k.tools.file_read("a.txt", 0)                            # optional arguments are keyword-only
except TypeError as e:
    out["positional_optional"] = "TypeError"
try:
    k.tools.file_read()
except TypeError as e:
    out["missing"] = "TypeError"
out["by_name"] = k.tools.call("echo", {"message": "m"})
result = out
'''


def test_typed_tool_methods_work_against_the_real_kernel(kernel):
    info = kernel.run("probe.py", TOOLS_PROGRAM, timeout=60)
    assert info.reason == "completed", kernel.client.logs(info.agent_id)[0][-2000:]
    out = info.result
    assert out["read"] == "hello world" and out["limited"] == "hello"
    assert out["sig"].startswith("(path, *, offset=") and "limit=" in out["sig"]
    assert out["doc"].startswith("Read a file") and "path (string)" in out["doc"]
    assert out["has_nope"] is False and out["in_dir"] is True
    name, code, is_attr, message = out["nope"]
    assert (name, code, is_attr) == ("NoSuchTool", "not_found", True)
    assert "file_read" in message  # it names the tools there are
    assert out["positional_optional"] == "TypeError" and out["missing"] == "TypeError"
    assert out["by_name"] == {"echo": "m"}
    # the refused names were never sent: exactly the five calls that ran were invoked
    invoked = [e for e in kernel.client.events(kind="tool.invoked", agent=info.agent_id)]
    assert [e["data"]["tool"] for e in invoked] == ["file_write", "file_write", "file_read",
                                                    "file_read", "echo"]


def test_no_such_tool_in_the_sdk_without_a_kernel():
    """The same refusal, offline: a ``Tools`` built from a schema list."""
    from agentix.sdk._tools import build_tools

    class Conn:
        sent: list[tuple[str, object]] = []

        def call(self, method: str, params: object = None) -> object:
            self.sent.append((method, params))
            if method == "tool.list":
                return {"tools": [
                    {"name": "echo", "description": "Echo.", "input_schema": {
                        "type": "object", "properties": {"message": {}}, "required": ["message"],
                        "additionalProperties": False}},
                    {"name": "mcp:srv.tool", "description": "", "input_schema": {}},
                    {"name": "class", "description": "", "input_schema": {}},
                    {"name": "odd", "description": "", "input_schema": {
                        "properties": {"not valid": {}}}},
                ]}
            return {"ok": params}

    conn = Conn()
    tools = build_tools(conn)  # type: ignore[arg-type]
    assert tools.echo("hi") == {"ok": {"name": "echo", "args": {"message": "hi"}}}
    for bad in ("nope", "odd", "mcp"):
        with pytest.raises(NoSuchTool):
            getattr(tools, bad)
    assert tools.call("mcp:srv.tool", {"a": 1}) == {"ok": {"name": "mcp:srv.tool", "args": {"a": 1}}}
    assert [m for m, _ in conn.sent] == ["tool.list", "tool.call", "tool.call"]


def test_the_sdk_knows_the_loop_event_kinds_the_kernel_records():
    from agentix.kernel.loop_events import KINDS
    from agentix.sdk.agent import LOOP_EVENTS

    assert set(LOOP_EVENTS) == set(KINDS)
