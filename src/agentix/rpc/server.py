"""Serving JSON-RPC connections: the operator Unix socket and agent channels.

``serve_connection`` runs one connection: it reads frames, runs each request as its own
task (so one slow call never holds up the next on the same connection), and writes the
replies. The handler it is given is ``async (method, params) -> result`` and raises
``AgentixError`` to refuse; any other exception is a kernel bug and becomes an
``internal_error`` that leaks no details (they go to the kernel log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentix.core.errors import AgentixError, InternalError, InvalidRequest, MethodNotFound
from agentix.rpc.framing import (
    DEFAULT_FRAME_LIMIT,
    FrameTooLarge,
    decode,
    encode,
    error_reply,
    read_frame,
    result_reply,
    validate_request,
)

__all__ = ["Handler", "PeerCredentials", "peer_credentials", "serve_connection", "start_unix_server"]

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]
MAX_IN_FLIGHT = 256


class PeerCredentials:
    __slots__ = ("pid", "uid", "gid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid, uid, gid)


async def _answer(handler: Handler, msg: Any) -> dict[str, Any] | None:
    req_id = msg.get("id") if isinstance(msg, dict) else None
    try:
        req_id, method, params, is_notification = validate_request(msg)
    except AgentixError as err:
        return error_reply(req_id if isinstance(req_id, (str, int)) else None, err)
    try:
        result = await handler(method, params)
    except AgentixError as err:
        return None if is_notification else error_reply(req_id, err)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error in %s", method)
        return None if is_notification else error_reply(
            req_id, InternalError(f"internal error while handling {method}; see the kernel log")
        )
    return None if is_notification else result_reply(req_id, result)


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    *,
    frame_limit: int = DEFAULT_FRAME_LIMIT,
    name: str = "connection",
) -> None:
    """Serve one connection until EOF, a fatal framing error, or cancellation."""
    in_flight: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    def send(reply: Any) -> None:
        if reply is not None and not writer.is_closing():
            writer.write(encode(reply))

    async def run_one(msg: Any) -> None:
        try:
            if isinstance(msg, list):
                if not msg:
                    send(error_reply(None, InvalidRequest("an empty batch is not a request")))
                    return
                replies = [r for r in await asyncio.gather(*(_answer(handler, m) for m in msg)) if r]
                if replies:
                    send(replies)
            else:
                send(await _answer(handler, msg))
        finally:
            gate.release()

    try:
        while True:
            try:
                frame = await read_frame(reader, frame_limit)
            except FrameTooLarge as err:
                send(error_reply(None, InvalidRequest(
                    f"frame larger than the limit of {err.limit} bytes; connection closed",
                    limit=err.limit,
                )))
                break
            except (ConnectionError, OSError):
                break
            if frame is None:
                break
            if not frame.strip():
                continue
            try:
                msg = decode(frame)
            except AgentixError as err:
                send(error_reply(None, err))
                continue
            await gate.acquire()
            task = asyncio.create_task(run_one(msg))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                break
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        log.debug("%s closed", name)


async def start_unix_server(
    path: Path,
    handler_for: Callable[[PeerCredentials], Handler | None],
    *,
    frame_limit: int = DEFAULT_FRAME_LIMIT,
) -> asyncio.AbstractServer:
    """Listen on a Unix socket, mode 0600, admitting peers that ``handler_for`` accepts."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            creds = peer_credentials(sock)
        except OSError:
            writer.close()
            return
        handler = handler_for(creds)
        if handler is None:
            log.warning("refused operator connection from uid %d pid %d", creds.uid, creds.pid)
            writer.write(encode(error_reply(None, InvalidRequest(
                "permission denied: the kernel accepts operator connections only from its own "
                "user or root", uid=creds.uid))))
            writer.close()
            return
        try:
            await serve_connection(reader, writer, handler, frame_limit=frame_limit,
                                   name=f"operator pid {creds.pid}")
        except asyncio.CancelledError:
            pass  # the kernel is shutting down; serve_connection closed the socket

    if path.exists() or path.is_symlink():
        path.unlink()
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_connect, path=str(path), limit=frame_limit + 1)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server


def unknown_method(method: str) -> MethodNotFound:
    return MethodNotFound(f"unknown method {method!r}; see docs/api.md for the method list", method=method)
