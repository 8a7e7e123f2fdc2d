"""The agent-side SDK is small: what an agent program imports, and that it still works.

The speed goal (``import agentix.sdk.agent`` within 2x of ``python -c pass``) is measured by
bench/imports.py; this test pins what makes it hold: the modules an agent imports.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentix.core.errors import CapabilityDenied
from agentix.sdk import _wire
from agentix.sdk._client import Connection

HEAVY = {"typing", "dataclasses", "pydantic", "rich", "click", "httpx", "jsonschema", "orjson",
         "re", "json", "socket", "threading", "enum", "inspect", "asyncio",
         "agentix.sdk.kernel", "agentix.kernel", "agentix.core.manifest"}


def _imported(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, _json\n"
                          "print('\\n'.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_an_agent_program_imports_no_heavy_module():
    got = _imported("from agentix.sdk import agent")
    assert not HEAVY & got, sorted(HEAVY & got)
    assert "agentix.sdk.agent" in got


def test_the_operator_client_still_loads_on_use():
    got = _imported("from agentix.sdk import Kernel, AgentInfo, SpawnResult")
    assert "agentix.sdk.kernel" in got
    import agentix.sdk as sdk

    with pytest.raises(AttributeError):
        sdk.NoSuchThing  # noqa: B018


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(json_values)
def test_wire_json_agrees_with_the_stdlib(v):
    b = _wire.dumps(v)
    assert json.loads(b) == v
    assert _wire.loads(b) == v
    assert _wire.loads(json.dumps(v)) == v


@pytest.mark.parametrize("bad", [b"", b"{", b"{}x", b"NaN", b"[1,]", b"\xff"])
def test_wire_refuses_what_is_not_one_json_document(bad):
    with pytest.raises(ValueError):
        _wire.loads(bad)


def test_wire_refuses_nan_and_unknown_types():
    with pytest.raises(ValueError):
        _wire.dumps(float("nan"))
    with pytest.raises(TypeError):
        _wire.dumps({"a": object()})


def test_connection_is_thread_safe_and_raises_typed_errors():
    """Several threads call at once over one socket; replies come back out of order."""
    a, b = socket.socketpair()

    def server() -> None:
        f = b.makefile("rb")
        pending = []
        for line in f:
            pending.append(json.loads(line))
            if len(pending) == 4:  # answer in reverse order
                for m in reversed(pending):
                    if m["method"] == "deny":
                        r = {"jsonrpc": "2.0", "id": m["id"], "error": {
                            "code": -32010, "message": "no",
                            "data": {"error": "capability_denied", "tool": "x"}}}
                    else:
                        r = {"jsonrpc": "2.0", "id": m["id"], "result": m["params"]}
                    b.sendall(json.dumps(r).encode() + b"\n")
                pending = []
        b.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    conn = Connection(a)
    results: dict[int, object] = {}

    def client(i: int) -> None:
        try:
            results[i] = conn.call("deny" if i == 3 else "echo", {"i": i})
        except CapabilityDenied as err:
            results[i] = err

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert results[0] == {"i": 0} and results[1] == {"i": 1} and results[2] == {"i": 2}
    assert isinstance(results[3], CapabilityDenied) and results[3].data["tool"] == "x"
    conn.close()
