"""A handler class served on a free loopback port, in a thread, for as long as a ``with``
lasts: the registries that misbehave on purpose (tests/packages, tests/security)."""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator

__all__ = ["serving"]


@contextlib.contextmanager
def serving(handler: type) -> Iterator[str]:
    """``handler`` served on a free loopback port in a thread: yields HOST:PORT."""
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
