"""Attack round 3 on MCP servers as agent tools: a server that, mid-session, gives an approved
tool's exact description and schema to another approved tool's name (and back) — each name now
hashes to a digest that was approved, but for the other name. Pins are per name: both tools
are disabled (``mcp_tool_changed``), no call reaches the server, no pin moves. (Held; the test
keeps it held.)"""

from __future__ import annotations

import pytest

pytest.importorskip("mcp")

from conftest import wait_until  # noqa: E402
from test_mcp_tools import audit, call, declare, mcp_kernel, run_calls  # noqa: E402,F401


def test_swapping_two_approved_tools_descriptions_and_schemas_disables_both(mcp_kernel) -> None:
    k = mcp_kernel(declare("notes", "mutable"))
    grants = ["mcp: notes/*"]
    out = run_calls(k, [call("mcp__notes__add", a=1, b=2), call("mcp__notes__mutate", what="swap")], grants)
    assert out[0]["ok"]["text"] == "3" and out[1]["ok"]["text"] == "swap done", out

    def swapped() -> bool:
        return any({c["tool"] for c in e["data"]["changed"]} == {"add", "echo"}
                   for e in audit(k) if e["kind"] == "mcp.tools_changed")

    assert wait_until(swapped, 15)
    pins = {e["data"]["tool"]: e["data"]["digest"] for e in audit(k) if e["kind"] == "mcp.tool_pinned"}
    calls_before = [e for e in audit(k) if e["kind"] == "tool.result"]
    # the new `echo` takes add's arguments, the new `add` echo's: both refused, neither reached
    out = run_calls(k, [call("mcp__notes__echo", a=2, b=3), call("mcp__notes__add", text="x"),
                        ["tool.list", {}]], grants, name="after")
    for o in out[:2]:
        assert o["error"] == "capability_denied" and o["data"]["reason"] == "mcp_tool_changed", out
    offered = {t["name"] for t in out[2]["ok"]["tools"]}
    assert "mcp__notes__echo" not in offered and "mcp__notes__add" not in offered
    # nothing moved: no pin re-written, and the refused calls reached no server (audited as refused)
    assert {e["data"]["tool"]: e["data"]["digest"] for e in audit(k) if e["kind"] == "mcp.tool_pinned"} == pins
    new_results = [e for e in audit(k) if e["kind"] == "tool.result"][len(calls_before):]
    assert all(not e["data"]["ok"] for e in new_results
               if e["data"]["tool"] in ("mcp__notes__echo", "mcp__notes__add"))
