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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("mcp")

from conftest import wait_until  # noqa: E402
from test_mcp_tools import audit, call, declare, mcp_kernel, run_calls, server_state  # noqa: E402,F401

NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x" * 64}}


class FloodServer:
    """A Streamable HTTP MCP server on loopback that answers ``tools/call`` with an SSE stream
    of notifications without end (until the client goes away). ``written`` counts them."""

    def __init__(self) -> None:
        self.written = 0
        self.stopped = threading.Event()   # the flood ended: the kernel closed the stream
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _json(self, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.send_response(405)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_DELETE(self) -> None:
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if "id" not in msg:
                    self.send_response(202)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if msg["method"] == "initialize":
                    self._json({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                        "serverInfo": {"name": "flood", "version": "1"}}})
                elif msg["method"] == "tools/list":
                    self._json({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": [
                        {"name": "t", "description": "floods", "inputSchema": {"type": "object"}}]}})
                elif msg["method"] == "tools/call":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("cache-control", "no-cache")
                    self.end_headers()
                    event = b"event: message\ndata: " + json.dumps(NOTE).encode() + b"\n\n"
                    try:
                        while True:
                            self.wfile.write(event * 50)
                            outer.written += 50
                    except OSError:
                        outer.stopped.set()
                    self.close_connection = True
                else:
                    self._json({"jsonrpc": "2.0", "id": msg["id"], "result": {}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
