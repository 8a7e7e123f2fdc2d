"""MCP servers at run time: what a server does while it runs, after it was started and pinned.

- a remote (Streamable HTTP) server that floods notifications is held to the same limiter as a
  stdio one (``max_notifications_per_s``): its session ends, the call gets a clear error, the
  kernel keeps answering, and the kernel stops reading the flood;
- a server that changes its tools mid-session (``notifications/tools/list_changed``, or a
  changed description on the next listing) is re-listed at once: a changed tool is disabled
  until re-approved (audited), a new tool waits unapproved, a removed one is gone.

Real servers: a raw Streamable HTTP server on loopback for the flood (it writes exactly what
a hostile server would), and tests/mcp/servers/notes_server.py (the ``mcp`` package's
MCPServer, sandboxed by the kernel) for the tool changes.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

pytest.importorskip("mcp")

from conftest import wait_until  # noqa: E402
from tests.fakes.mcp_raw import RawMcpServer  # noqa: E402
from test_mcp_tools import audit, call, declare, mcp_kernel, run_calls, server_state  # noqa: E402,F401

NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x" * 64}}


class FloodServer(RawMcpServer):
    """A Streamable HTTP MCP server on loopback that answers ``tools/call`` with an SSE stream
    of notifications without end (until the client goes away). ``written`` counts them."""

    name, description = "flood", "floods"

    def __init__(self) -> None:
        self.written = 0
        self.stopped = threading.Event()   # the flood ended: the kernel closed the stream
        super().__init__()

    def on_call(self, handler: Any, msg: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        handler.end_headers()
        event = b"event: message\ndata: " + json.dumps(NOTE).encode() + b"\n\n"
        try:
            while True:
                handler.wfile.write(event * 50)
                self.written += 50
        except OSError:
            self.stopped.set()
        handler.close_connection = True


# ---------------------------------------------------------------- a remote server's flood
def test_a_remote_server_flooding_notifications_is_stopped_by_the_same_limiter(mcp_kernel) -> None:
    flood = FloodServer()
    try:
        k = mcp_kernel(f'[mcp.servers.far]\nurl = "http://127.0.0.1:{flood.port}/mcp"\n'
                       "max_notifications_per_s = 50\nstart_timeout = 10\ncall_timeout = 20\n")
        t0 = time.monotonic()
        out = run_calls(k, [call("mcp__far__t"), call("echo", message="alive"), ["sys.info", {}]],
                        ["mcp: far/*", "tool: echo"])
        assert out[0]["error"] == "tool_error", out[0]
        assert "max_notifications_per_s" in out[0]["message"] and out[0]["data"]["reason"] == "mcp_server_died"
        # refused at the bound, not when call_timeout ran out
        assert time.monotonic() - t0 < 15
        assert out[1]["ok"] == {"echo": "alive"}  # the kernel kept answering
        assert "external_tool:mcp:far/t" in out[2]["ok"]["taint"]  # the error quotes the server's deed
        st = server_state(k, "far")
        assert st["state"] == "backoff" and "max_notifications_per_s" in st["last_error"]
        # the kernel stopped reading: the server's stream was closed under it, and it wrote a
        # bounded amount (what the sockets buffered), not an endless stream
        assert flood.stopped.wait(10), "the kernel kept reading the flood"
        written = flood.written
        time.sleep(0.5)
        assert flood.written == written
        assert k.client.call("kernel.info")["pid"] > 0
        res = [e for e in audit(k) if e["kind"] == "tool.result" and e["data"]["tool"] == "mcp__far__t"]
        assert len(res) == 1 and res[0]["data"]["ok"] is False
    finally:
        flood.close()


# ---------------------------------------------------------------- tools that change mid-session
def _changes(k: Any, why: str | None = None) -> list[dict[str, Any]]:
    return [e["data"] for e in audit(k) if e["kind"] == "mcp.tools_changed"
            and (why is None or e["data"]["why"] == why)]


def _pins(k: Any) -> dict[str, str | None]:
    return {t["tool"]: t["pinned"] for t in k.client.call("mcp.tools", server="notes")["tools"]}


def test_a_tool_changed_mid_session_is_disabled_at_once_and_a_new_one_waits_unapproved(mcp_kernel) -> None:
    k = mcp_kernel(declare("notes", "mutable"))
    grants = ["mcp: notes/*"]
    out = run_calls(k, [call("mcp__notes__echo", text="a"), call("mcp__notes__mutate", what="describe"),
                        call("mcp__notes__mutate", what="add")], grants)
    assert out[0]["ok"]["text"] == "a" and out[2]["ok"]["text"] == "add done", out
    # the server said its tools changed: the kernel re-lists while it runs (no restart)
    assert wait_until(lambda: any(c["added"] for c in _changes(k, "list_changed")), 15), _changes(k)
    changes = _changes(k, "list_changed")
    changed = [c for ch in changes for c in ch["changed"]]
    added = [a for ch in changes for a in ch["added"]]
    assert [c["tool"] for c in changed] == ["echo"] and changed[0]["state"] == "changed"
    assert [(a["tool"], a["state"]) for a in added] == [("extra", "new")]
    srv = server_state(k)
    assert srv["state"] == "running" and srv["starts"] == 1 and srv["relists"] >= 1
    pins_before = {e["data"]["tool"]: e["data"]["digest"] for e in audit(k) if e["kind"] == "mcp.tool_pinned"}
    out = run_calls(k, [call("mcp__notes__echo", text="b"), call("mcp__notes__extra"),
                        call("mcp__notes__add", a=2, b=3), ["tool.list", {}]], grants, name="after")
    assert out[0]["error"] == "capability_denied" and out[0]["data"]["reason"] == "mcp_tool_changed"
    assert out[1]["error"] == "capability_denied" and out[1]["data"]["reason"] == "mcp_tool_unapproved"
    assert "first listing" in out[1]["message"] and "agentix mcp approve notes/extra" in out[1]["message"]
    assert out[2]["ok"]["text"] == "5"  # the unchanged sibling still works
    offered = {t["name"]: t for t in out[3]["ok"]["tools"]}
    assert "mcp__notes__add" in offered
    assert "mcp__notes__echo" not in offered and "mcp__notes__extra" not in offered
    assert all("ssh" not in t["description"] for t in offered.values())  # the new words reach no model
    # nothing moved: no pin was written, the refused calls never reached the server
    assert {e["data"]["tool"]: e["data"]["digest"] for e in audit(k)
            if e["kind"] == "mcp.tool_pinned"} == pins_before
    assert "extra" not in pins_before
    res = [e["data"]["ok"] for e in audit(k) if e["kind"] == "tool.result"
           and e["data"]["tool"] in ("mcp__notes__echo", "mcp__notes__extra")]
    assert res == [True, False, False]
    # the operator looks and re-approves: the tools work again, each pin audited
    got = {a["tool"]: a for a in k.client.call("mcp.approve", tool="notes/*")["approved"]}
    assert got["notes/echo"]["changed"] and got["notes/extra"]["changed"] and not got["notes/add"]["changed"]
    out = run_calls(k, [call("mcp__notes__echo", text="c"), call("mcp__notes__extra")], grants, name="approved")
    assert out[0]["ok"]["text"] == "c" and out[1]["ok"]["text"] == "extra"


def test_a_removed_tool_is_gone_and_a_silent_change_is_seen_on_the_next_listing(mcp_kernel) -> None:
    k = mcp_kernel(declare("notes", "mutable"))
    grants = ["mcp: notes/*"]
    out = run_calls(k, [call("mcp__notes__mutate", what="remove"), call("mcp__notes__mutate", what="describe:silent")],
                    grants)
    assert out[1]["ok"]["text"] == "describe done"
    assert wait_until(lambda: any(c["removed"] for c in _changes(k)), 15), _changes(k)
    assert [c["removed"] for c in _changes(k) if c["removed"]] == [["add"]]
    # the silent change: nothing said, so the kernel still holds the old listing...
    assert not [c for c in _changes(k) if c["changed"]]
    # ...until the next listing (an operator's `agentix mcp tools`) shows the change, audited
    tools = {t["tool"]: t for t in k.client.call("mcp.tools", server="notes")["tools"]}
    assert tools["echo"]["state"] == "changed" and "add" not in tools
    assert [c["changed"][0]["tool"] for c in _changes(k, "operator")] == ["echo"]
    out = run_calls(k, [call("mcp__notes__echo", text="x"), call("mcp__notes__add", a=1, b=1)], grants,
                    name="after")
    assert out[0]["data"]["reason"] == "mcp_tool_changed"
    assert out[1]["error"] == "not_found"


def test_first_use_approves_only_the_first_listing_a_tool_added_for_a_restart_waits(mcp_kernel) -> None:
    k = mcp_kernel(declare("notes", "mutable"))
    grants = ["mcp: notes/*"]
    assert run_calls(k, [call("mcp__notes__add", a=1, b=1)], grants)[0]["ok"]["text"] == "2"
    first = set(_pins(k))
    # the server comes back with one more tool (an upgrade, or a server that crashed itself
    # after adding one): declaring it approved what it offered at first, not this
    (k.home / "workspaces" / "mcp-notes" / "extra_tools.txt").write_text("later\n")
    k.client.call("mcp.restart", server="notes")
    tools = {t["tool"]: t for t in k.client.call("mcp.tools", server="notes")["tools"]}
    assert tools["later"]["state"] == "new" and tools["later"]["pinned"] is None
    assert {n for n, t in tools.items() if t["state"] == "approved"} == first
    out = run_calls(k, [call("mcp__notes__later")], grants, name="after")
    assert out[0]["data"]["reason"] == "mcp_tool_unapproved"


def test_a_server_churning_list_changed_is_relisted_at_most_once_a_second(mcp_kernel) -> None:
    k = mcp_kernel(declare("notes", "mutable", max_notifications_per_s=10_000))
    t0 = time.monotonic()
    out = run_calls(k, [call("mcp__notes__mutate", what="churn"), call("echo", message="alive")],
                    ["mcp: notes/*", "tool: echo"])
    took = time.monotonic() - t0
    assert out[0]["ok"]["text"] == "churn done" and out[1]["ok"] == {"echo": "alive"}
    time.sleep(1.5)
    srv = server_state(k)
    assert srv["state"] == "running"
    # thousands of notifications, a handful of listings (one a second, plus one owed)
    assert 1 <= srv["relists"] <= took + 3, (srv, took)
    assert k.client.call("kernel.info")["pid"] > 0
