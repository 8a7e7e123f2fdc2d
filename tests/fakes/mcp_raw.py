"""A Streamable HTTP MCP server on loopback written by hand (no MCP SDK), for tests that need a
server to misbehave in ways the SDK will not: a handshake that takes its time, a tool call
answered with notifications without end. One tool, ``t``. A subclass says what the handshake
waits for (``on_initialize``) and how ``tools/call`` is answered (``on_call``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RawMcpServer"]


class RawMcpServer:
    name = "raw"
    description = "answers"

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def reply(self, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # no server-initiated stream
                self._empty(405)

            def do_DELETE(self) -> None:  # the session's end
                self._empty(200)

            def do_POST(self) -> None:
                msg = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if "id" not in msg:  # a notification
                    self._empty(202)
                    return
                result: Any = {}
                if msg["method"] == "initialize":
                    outer.on_initialize()
                    result = {"protocolVersion": msg["params"]["protocolVersion"],
                              "capabilities": {"tools": {}}, "serverInfo": {"name": outer.name, "version": "1"}}
                elif msg["method"] == "tools/list":
                    result = {"tools": [{"name": "t", "description": outer.description,
                                         "inputSchema": {"type": "object"}}]}
                elif msg["method"] == "tools/call":
                    outer.on_call(self, msg)
                    return
                self.reply({"jsonrpc": "2.0", "id": msg["id"], "result": result})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def on_initialize(self) -> None:
        """Before the handshake is answered."""

    def on_call(self, handler: Any, msg: dict[str, Any]) -> None:
        """Answer ``tools/call`` ``msg`` through ``handler`` (``handler.reply(obj)``)."""
        handler.reply({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "done"}]}})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
