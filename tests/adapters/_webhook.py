"""A real webhook receiver for the A2A push-notification tests: an HTTP server on a loopback
port (a thread) that records every request it gets, and answers as its ``mode`` says."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Receiver", "receiver"]


class Receiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.got: list[dict[str, Any]] = []  # {path, headers, body}
        self.mode = "ok"  # ok | redirect:URL | huge | slow
        self.cond = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict]:
        with self.cond:
            return [json.loads(r["body"]) for r in self.got]

    def wait_for(self, pred, timeout: float = 60.0) -> list[dict]:
        """The requests so far, once ``pred(bodies)`` holds (or the timeout: then as they are)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred([json.loads(r["body"]) for r in self.got]):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return [json.loads(r["body"]) for r in self.got]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            rec: Receiver = self.server.rec  # type: ignore[attr-defined]
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n)
            with rec.cond:
                rec.got.append({"path": self.path, "headers": dict(self.headers), "body": body})
                rec.cond.notify_all()
            mode = rec.mode
            if mode.startswith("redirect:"):
                self.send_response(302)
                self.send_header("Location", mode.partition(":")[2])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif mode == "huge":
                data = b"x" * (1024 * 1024)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(data)
            elif mode == "slow":
                time.sleep(4)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec = Receiver(server)
    server.rec = rec  # type: ignore[attr-defined]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)
