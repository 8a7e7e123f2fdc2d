"""MCP servers as agent tools, part 2: a local server's wire (stdio framing over a socket).

A stdio server's stdin and stdout are one end of a socketpair (``sandbox/confine.py --stdio``
makes them so inside the sandbox); the kernel holds the other end. ``SocketTransport`` speaks
MCP's stdio framing (one JSON-RPC message per line) on it and holds the server to its bounds
(``max_message_bytes``, ``max_notifications_per_s``): a broken bound ends the session with a
reason (``on_fatal``). Parsing is the ``mcp`` package's; only the framing and the bounds are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentix.core.mcp_pinning import NotificationLimit
from agentix.kernel.clock import Clock
from agentix.kernel.mcp_config import McpServerConfig

__all__ = ["SocketTransport"]


class _Fatal(Exception):
    """The server broke the protocol or its bounds; the session ends with this reason."""


class SocketTransport:
    """MCP's stdio framing (one JSON-RPC message per line) over the kernel's end of the
    socketpair that is the sandboxed server's stdin and stdout, with the bounds the server
    must keep. Parsing is the ``mcp`` package's; only the framing and the bounds are here."""

    def __init__(self, sock: socket.socket, cfg: McpServerConfig, on_fatal: Callable[[str], None],
                 on_eof: Callable[[], None], clock: Clock) -> None:
        self.sock = sock
        self.clock = clock  # the notification rate is counted on the kernel's clock
        self.cfg = cfg
        self.on_fatal = on_fatal
        self.on_eof = on_eof
        self.limit = NotificationLimit(cfg.max_notifications_per_s)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[Any]:
        import anyio
        import mcp_types as types
        from mcp.shared.message import SessionMessage

        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        r_send, r_recv = anyio.create_memory_object_stream[Any](32)
        w_send, w_recv = anyio.create_memory_object_stream[Any](32)
        cap = self.cfg.max_message_bytes
        limit = self.limit

        async def reader() -> None:
            buf = bytearray()
            try:
                async with r_send:
                    while True:
                        chunk = await loop.sock_recv(self.sock, 65536)
                        if not chunk:
                            self.on_eof()
                            return
                        buf += chunk
                        while True:
                            nl = buf.find(b"\n")
                            if nl < 0:
                                if len(buf) > cap:
                                    raise _Fatal(f"sent a message of more than {cap} bytes "
                                                 "(max_message_bytes)")
                                break
                            line = bytes(buf[:nl])
                            del buf[:nl + 1]
                            if len(line) > cap:
                                raise _Fatal(f"sent a message of {len(line)} bytes, more than {cap} "
                                             "(max_message_bytes)")
                            if not line.strip():
                                continue
                            try:
                                msg = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                            except ValueError:
                                raise _Fatal("sent a line that is not a JSON-RPC message: "
                                             f"{line[:80]!r}") from None
                            if isinstance(msg, types.JSONRPCNotification) and not limit.admit(self.clock.monotonic()):
                                raise _Fatal(limit.why())
                            await r_send.send(SessionMessage(msg))
            except _Fatal as err:
                self.on_fatal(str(err))
            except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

        async def writer() -> None:
            try:
                async with w_recv:
                    async for m in w_recv:
                        data = m.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                        await loop.sock_sendall(self.sock, data.encode())
            except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            try:
                yield r_recv, w_send
            finally:
                tg.cancel_scope.cancel()
                for s in (r_send, r_recv, w_send, w_recv):
                    s.close()

    def __call__(self) -> Any:
        return self._open()

