"""MCP servers as agent tools, part 3: a remote server's wire (Streamable HTTP, called by the kernel).

The ``mcp`` package's Streamable HTTP client, over an HTTP client whose transport holds the
server to the same bound as a local one: a JSON response over ``max_message_bytes`` is cut off
(the SDK reads one whole into memory), as is one SSE event (``max_sse_event_size``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from agentix.core.mcp_pinning import NotificationLimit
from agentix.kernel.clock import Clock
from agentix.kernel.mcp_config import McpServerConfig

if TYPE_CHECKING:  # the mcp extra: imported when a remote server starts
    import httpx2
    from mcp.client._transport import TransportStreams

__all__ = ["remote_transport"]


def remote_transport(cfg: McpServerConfig,
                     on_fatal: Callable[[str], None], clock: Clock) -> AbstractAsyncContextManager[TransportStreams]:
    """The transport (an async context manager of the read and write streams) to ``cfg.url``;
    the notification rate is counted on ``clock`` (the kernel's)."""
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    assert cfg.url is not None
    client = create_mcp_http_client()
    client._transport = _BoundedHttp(client._transport, cfg.max_message_bytes, on_fatal)
    return _owning(client, streamable_http_client(cfg.url, http_client=client,
                                                  max_sse_event_size=cfg.max_message_bytes),
                   NotificationLimit(cfg.max_notifications_per_s), on_fatal, clock)


@contextlib.asynccontextmanager
async def _owning(client: httpx2.AsyncClient, inner: AbstractAsyncContextManager[TransportStreams],
                  limit: NotificationLimit, on_fatal: Callable[[str], None],
                  clock: Clock) -> AsyncIterator[TransportStreams]:
    """The SDK's streams, the HTTP client closed with them, and what the server sends passed
    through ``limit``: the notifications a remote server sends (on a call's SSE stream, or a
    listen stream) are bounded like a local server's (``mcp_stdio.py``); the first one over
    ``max_notifications_per_s`` ends the session (``on_fatal``) and nothing more of the
    server is read."""
    import anyio
    import mcp_types as types

    async with client, inner as (read, write):
        out_send, out_recv = anyio.create_memory_object_stream[Any](32)

        async def pump() -> None:
            try:
                async with out_send, read:
                    async for item in read:
                        msg = getattr(item, "message", None)
                        if isinstance(msg, types.JSONRPCNotification) and not limit.admit(clock.monotonic()):
                            on_fatal(limit.why())
                            return
                        await out_send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield out_recv, write
            finally:
                tg.cancel_scope.cancel()
                out_recv.close()


def _bounded_http_transport() -> type[httpx2.AsyncBaseTransport]:
    import httpx2

    class Bounded(httpx2.AsyncBaseTransport):
        """A remote MCP server's responses: a non-SSE body over ``cap`` bytes ends the session."""

        def __init__(self, inner: httpx2.AsyncBaseTransport, cap: int, on_fatal: Callable[[str], None]) -> None:
            self._inner, self._cap, self._on_fatal = inner, cap, on_fatal

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            resp = await self._inner.handle_async_request(request)
            if "text/event-stream" in resp.headers.get("content-type", ""):
                return resp  # bounded per event by max_sse_event_size
            return httpx2.Response(resp.status_code, headers=resp.headers, extensions=resp.extensions,
                                   stream=_Capped(resp.stream, self._cap, self._on_fatal))

        async def aclose(self) -> None:
            await self._inner.aclose()

    class _Capped(httpx2.AsyncByteStream):
        def __init__(self, inner: httpx2.AsyncByteStream, cap: int, on_fatal: Callable[[str], None]) -> None:
            self._inner, self._cap, self._on_fatal = inner, cap, on_fatal

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > self._cap:
                    why = f"sent a message of more than {self._cap} bytes (max_message_bytes)"
                    self._on_fatal(why)
                    raise httpx2.ReadError(why)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return Bounded


def _BoundedHttp(inner: httpx2.AsyncBaseTransport, cap: int,
                 on_fatal: Callable[[str], None]) -> httpx2.AsyncBaseTransport:  # noqa: N802 - a class, built lazily
    return _bounded_http_transport()(inner, cap, on_fatal)

