"""Serving JSON-RPC connections: the operator Unix socket and agent channels.

``serve_connection`` runs one connection: it reads frames, runs each request as its own
task (so one slow call never holds up the next on the same connection), and writes the
replies. The handler it is given is ``async (method, params) -> result`` and raises
``AgentixError`` to refuse; any other exception is a kernel bug and becomes an
``internal_error`` that leaks no details (they go to the kernel log).
"""

from __future__ import annotations

import asyncio
import contextvars
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

__all__ = ["Handler", "PeerCredentials", "peer_credentials", "serve_connection", "serve_socket",
           "start_unix_server"]

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


def _start_eagerly(coro: Any) -> asyncio.Task[Any] | None:
    """Run ``coro`` until it first blocks; only then give it a task (3.12's eager tasks, by hand).

    Most system calls never block, so they finish here without a task or an extra trip
    round the event loop (bench/syscall.py: the task per request was the hot path's largest
    cost). A call that blocks is driven on by ``_drive`` from where it stopped, so one slow
    call still never holds up the next.
    """
    # the first step and the rest run in ONE context of their own (as a task's would): a
    # handler that sets a context variable before it blocks (fs.fenced) resets it in the same
    # context, and nothing it sets leaks into the connection's callbacks
    ctx = contextvars.copy_context()
    try:
        fut = ctx.run(coro.send, None)
    except StopIteration:
        return None
    except Exception:
        log.exception("request handler failed")
        return None
    return asyncio.get_running_loop().create_task(_drive(coro, fut), context=ctx)


async def _drive(coro: Any, fut: Any) -> None:
    """Finish a started coroutine: wait for what it waits on, then resume it (as a Task would)."""
    try:
        while True:
            if fut is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            else:
                fut._asyncio_future_blocking = False  # what Task.__step does with a yielded future
                try:
                    await fut
                except BaseException:  # noqa: BLE001 - the coroutine reads the outcome itself
                    pass
            fut = coro.send(None)
    except StopIteration:
        return


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
            task = _start_eagerly(run_one(msg))
            if task is not None:  # the call blocked: it goes on as its own task
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


class _ChannelProtocol(asyncio.Protocol):
    """One connection served straight from ``data_received`` (no StreamReader, no reader task).

    Same wire rules as ``serve_connection`` (see rpc/framing.py); a request that does not
    block is answered within the ``data_received`` call that delivered it.
    """

    def __init__(self, handler: Handler, frame_limit: int, name: str, done: asyncio.Future[None]) -> None:
        self.handler, self.frame_limit, self.name, self.done = handler, frame_limit, name, done
        self.buf = bytearray()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, reply: Any) -> None:
        t = self.transport
        if reply is not None and t is not None and not t.is_closing():
            t.write(encode(reply))

    async def run_one(self, msg: Any) -> None:
        if isinstance(msg, list):
            if not msg:
                self.send(error_reply(None, InvalidRequest("an empty batch is not a request")))
                return
            replies = [r for r in await asyncio.gather(*(_answer(self.handler, m) for m in msg)) if r]
            if replies:
                self.send(replies)
        else:
            self.send(await _answer(self.handler, msg))

    def _too_large(self) -> None:
        self.send(error_reply(None, InvalidRequest(
            f"frame larger than the limit of {self.frame_limit} bytes; connection closed",
            limit=self.frame_limit)))
        self.buf.clear()
        assert self.transport is not None
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.buf += data
        start = 0
        buf = self.buf
        while True:
            i = buf.find(b"\n", start)
            if i < 0:
                if len(buf) - start >= self.frame_limit:
                    return self._too_large()
                break
            if i + 1 - start > self.frame_limit:
                return self._too_large()
            frame = bytes(buf[start:i])
            start = i + 1
            if not frame.strip():
                continue
            try:
                msg = decode(frame)
            except AgentixError as err:
                self.send(error_reply(None, err))
                continue
            task = _start_eagerly(self.run_one(msg))
            if task is not None:
                self.in_flight.add(task)
                task.add_done_callback(self._finished)
                if len(self.in_flight) >= MAX_IN_FLIGHT:
                    self.transport.pause_reading()
            if self.transport.is_closing():
                break
        del buf[:start]

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        t = self.transport
        if t is not None and not t.is_closing() and not self.write_paused and len(self.in_flight) < MAX_IN_FLIGHT:
            t.resume_reading()

    # backpressure: a peer that does not read its replies is not read from either
    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and len(self.in_flight) < MAX_IN_FLIGHT:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # a half frame left in the buffer is dropped; close our side

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.in_flight:
            task.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def serve_socket(sock: socket.socket, handler: Handler, *, frame_limit: int = DEFAULT_FRAME_LIMIT,
                       name: str = "connection") -> None:
    """Serve one connected socket (an agent's channel) until it closes or this is cancelled.

    The fast path for agent channels: requests are decoded and started in ``data_received``
    (see ``_ChannelProtocol``); wire behaviour is the same as ``serve_connection``.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, proto = await loop.connect_accepted_socket(
        lambda: _ChannelProtocol(handler, frame_limit, name, done), sock=sock)
    try:
        await done
    finally:
        transport.close()
        pending = list(proto.in_flight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
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
            # closing with the peer's request still unread would reset the connection and
            # lose the reply: half-close, swallow what it sent (bounded, briefly), then close
            try:
                await writer.drain()
                writer.write_eof()
                await asyncio.wait_for(reader.read(frame_limit), timeout=1.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            writer.close()
            return
        try:
            await serve_connection(reader, writer, handler, frame_limit=frame_limit,
                                   name=f"operator pid {creds.pid}")
        except asyncio.CancelledError:
            pass  # the kernel is shutting down; serve_connection closed the socket

    if path.exists() or path.is_symlink():
        path.unlink()
    # bind under a temporary name and rename once listening: the socket appears only when it
    # accepts (a client racing bind() and listen() would otherwise get ECONNREFUSED)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_connect, path=str(tmp), limit=frame_limit + 1)
    finally:
        os.umask(old_umask)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)
    return server


def unknown_method(method: str) -> MethodNotFound:
    return MethodNotFound(f"unknown method {method!r}; see docs/api.md for the method list", method=method)
