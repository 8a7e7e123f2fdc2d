"""Serving JSON-RPC connections: the operator Unix socket and agent channels.
(Over 400 lines: one connection's framing, bounds and dispatch, for both the operator socket and
agent channels: the bounds are one discipline.)

``serve_connection`` runs one connection: it reads frames, runs each request as its own
task (so one slow call never holds up the next on the same connection), and writes the
replies. The handler it is given is ``async (method, params) -> result`` and raises
``AgentixError`` to refuse; any other exception is a kernel bug and becomes an
``internal_error`` that leaks no details (they go to the kernel log).

Bounds (``InFlightLimits``; docs/isolation.md lists them), so that no peer can grow the kernel:

- a batch holds at most ``batch`` requests (and never more than ``per_connection``); a
  larger one is refused whole
  (``invalid_request``, one error reply, nothing runs);
- a connection has at most ``per_connection`` requests in flight, and every element of a
  batch counts as one request. A frame that would go over waits, unread, until enough of
  the connection's calls have finished (back-pressure: the kernel stops reading the
  socket; the peer's writes block once the socket buffer is full);
- all connections sharing one ``InFlight`` counter (one kernel) have at most ``total``
  requests in flight; a frame that would go over is refused at once with
  ``limit_exceeded`` (``data.limit == "in_flight_total"``), one error per request;
- a peer that does not read its replies is not served either: once the kernel's write buffer
  for the connection is over its high-water mark, no further request is started, not even
  one already received, until the peer reads; and a peer that leaves more than
  ``MAX_UNREAD`` bytes of replies unread (replies of requests in flight when it stopped
  reading) has its channel closed, its unread replies dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import weakref
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentix.core.errors import AgentixError, InternalError, InvalidRequest, LimitExceeded, MethodNotFound
from agentix.rpc.framing import (
    DEFAULT_FRAME_LIMIT,
    MAX_RESULT_BYTES,
    FrameTooLarge,
    bound_batch,
    decode,
    encode,
    encode_reply,
    error_reply,
    read_frame,
    result_reply,
    too_deep,
    too_deep_reply,
    validate_request,
)

__all__ = ["Handler", "InFlight", "InFlightLimits", "Notify", "PeerCredentials", "drive", "drive_task",
           "peer_credentials", "serve_connection", "unwound", "serve_socket", "start_unix_server"]

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]
#: ``notify(method, params)`` writes a JSON-RPC notification to one connection; False when closed
Notify = Callable[[str, dict[str, Any]], bool]
MAX_IN_FLIGHT = 256          # requests in flight per connection (batch elements count one each)
MAX_BATCH = 64               # requests in one JSON-RPC batch
MAX_IN_FLIGHT_TOTAL = 4096   # requests in flight over every connection sharing an InFlight
MAX_UNREAD = MAX_RESULT_BYTES  # reply bytes an agent channel may leave unread before it is closed


@dataclass(frozen=True)
class InFlightLimits:
    per_connection: int = MAX_IN_FLIGHT
    batch: int = MAX_BATCH
    total: int = MAX_IN_FLIGHT_TOTAL

    @property
    def max_batch(self) -> int:
        """The largest batch admitted: never more than may be in flight on one connection."""
        return min(self.batch, self.per_connection)


class InFlight:
    """Requests in flight over several connections (one per kernel), with its bounds.

    A pool may have a ``parent`` (the kernel's): a request is admitted only if it fits both,
    so one group of connections (an agent tree: ``sub``) can never take the whole kernel's
    pool and lock every other agent out."""

    def __init__(self, limits: InFlightLimits | None = None, *, parent: InFlight | None = None,
                 name: str = "in_flight_total") -> None:
        self.limits = limits or InFlightLimits()
        self.parent = parent
        self.name = name
        self.current = 0
        self.peak = 0
        self.refused = 0

    def sub(self, total: int, name: str) -> InFlight:
        """A pool of at most ``total`` requests inside this one (same per-connection limits)."""
        lim = InFlightLimits(per_connection=self.limits.per_connection, batch=self.limits.batch,
                     total=min(total, self.limits.total))
        return InFlight(lim, parent=self, name=name)

    def full(self, n: int) -> InFlight | None:
        """The pool (this one or an ancestor) that ``n`` more requests would overflow."""
        pool: InFlight | None = self
        while pool is not None:
            if pool.current + n > pool.limits.total:
                return pool
            pool = pool.parent
        return None

    def admit(self, n: int) -> bool:
        over = self.full(n)
        if over is not None:
            over.refused += n
            return False
        pool: InFlight | None = self
        while pool is not None:
            pool.current += n
            pool.peak = max(pool.peak, pool.current)
            pool = pool.parent
        return True

    def release(self, n: int) -> None:
        pool: InFlight | None = self
        while pool is not None:
            pool.current -= n
            pool = pool.parent

    def statistics(self) -> dict[str, int]:
        return {"in_flight": self.current, "peak": self.peak, "refused": self.refused,
                "limit_total": self.limits.total, "limit_per_connection": self.limits.per_connection,
                "limit_batch": self.limits.batch}


def _cost(msg: Any) -> int:
    """How many requests a decoded frame holds (a batch counts its elements)."""
    return len(msg) if isinstance(msg, list) else 1


def _refusals(msg: Any, err: AgentixError) -> Any:
    """One error reply per request of ``msg`` (none for notifications)."""
    items = msg if isinstance(msg, list) else [msg]
    out = []
    for m in items:
        if isinstance(m, dict) and "id" not in m:
            continue  # a notification gets no reply
        rid = m.get("id") if isinstance(m, dict) else None
        out.append(error_reply(rid if isinstance(rid, (str, int)) else None, err))
    if not out:
        return None
    return out if isinstance(msg, list) else out[0]


def _check_frame(msg: Any, limits: InFlightLimits, shared: InFlight) -> Any:
    """None if ``msg`` may run now, else the reply that refuses it (nothing runs)."""
    if isinstance(msg, list):
        if not msg:
            return error_reply(None, InvalidRequest("an empty batch is not a request"))
        if len(msg) > limits.max_batch:
            return error_reply(None, InvalidRequest(
                f"a batch of {len(msg)} requests exceeds the limit of {limits.max_batch}; "
                "send fewer requests per batch", limit="batch", size=len(msg), max=limits.max_batch))
    n = _cost(msg)
    over = shared.full(n)
    if over is not None:
        over.refused += n
        whose = "the kernel has" if over.parent is None else "this agent's tree has"
        return _refusals(msg, LimitExceeded(
            f"{whose} {over.current} calls in flight, the limit is {over.limits.total}; "
            "retry when some have finished", limit=over.name, max=over.limits.total))
    shared.admit(n)
    return None


async def _run_frame(handler: Handler, msg: Any) -> Any:
    """The reply (or batch of replies) to one admitted frame; None if nothing to send.

    Batch elements start eagerly one by one; only those that block get a task. Each runs in a
    context of its own from its first step on (as ``_start_eagerly``): a context variable one
    sets before it blocks (the file fence, the audit quota's quiet mark) neither leaks into the
    elements after it nor is reset from another context.
    """
    if not isinstance(msg, list):
        return await _answer(handler, msg)
    replies: list[Any] = [None] * len(msg)
    waiting: list[tuple[int, asyncio.Future[Any]]] = []
    try:
        for i, m in enumerate(msg):
            coro = _answer(handler, m)
            ctx = contextvars.copy_context()
            try:
                fut = ctx.run(coro.send, None)
            except StopIteration as stop:
                replies[i] = stop.value
                continue
            waiting.append((i, drive_task(coro, fut, ctx)))
        for i, task in waiting:
            replies[i] = await task
    finally:
        for _, task in waiting:
            if not task.done():
                task.cancel()
    # the results of one batch are bounded in all, as one result is (framing.bound_batch)
    methods = [m.get("method") if isinstance(m, dict) and isinstance(m.get("method"), str) else "?" for m in msg]
    out = [r for r in bound_batch(replies, methods) if r]
    return out or None


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
    cost). A call that blocks is driven on by ``drive`` from where it stopped, so one slow
    call still never holds up the next.
    """
    # the first step and the rest run in ONE context of their own (as a task's would): a
    # handler that sets a context variable before it blocks (fs.fenced) resets it in the same
    # context, and nothing it sets leaks into the connection's callbacks
    ctx = contextvars.copy_context()
    ctx.run(_STEP.set, object())  # who runs it, until a task drives it on (``owner``)
    try:
        fut = ctx.run(coro.send, None)
    except StopIteration:
        return None
    except Exception:
        log.exception("request handler failed")
        return None
    return drive_task(coro, fut, ctx)


#: an eagerly started coroutine's token while it runs outside any task (``_start_eagerly``)
_STEP: contextvars.ContextVar[object | None] = contextvars.ContextVar("agentix_eager_step", default=None)
#: a drive task -> the token of the eager step it carries on (``owner``)
_DRIVES: weakref.WeakKeyDictionary[asyncio.Task[Any], object] = weakref.WeakKeyDictionary()


def owner() -> object | None:
    """Who is running now, as one value for the whole of one coroutine: the current task; for a
    coroutine started eagerly (outside any task, ``_start_eagerly``), one token for its first
    step and for the task that ``drive_task`` then finishes it in. A task the coroutine starts
    is someone else (its own task). None outside any task and any eager step."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    if task is None:
        return _STEP.get()
    return _DRIVES.get(task, task)


#: a task cancelled before it first ran -> the task ending its coroutine (``drive_task``)
_UNWINDING: dict[asyncio.Task[Any], asyncio.Task[Any]] = {}


def drive_task(coro: Any, fut: Any, ctx: contextvars.Context) -> asyncio.Task[Any]:
    """A task that finishes ``coro`` (started, now waiting on ``fut``) in ``ctx``, as ``drive``.

    A task cancelled before it first ran never runs its coroutine, so ``coro`` would stay
    suspended and its cleanup (an in-flight slot released, a reservation given back, a
    process killed) would wait for the garbage collector, which runs ``finally`` but no
    ``except CancelledError``. Then the cancellation is thrown into ``coro`` at once, and a
    task of its own runs its cleanup to the end (``unwound(task)`` waits for it)."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(drive(coro, fut), context=ctx)
    _DRIVES[task] = _carried(ctx)

    def done(t: asyncio.Task[Any]) -> None:  # the first of the task's callbacks
        if not t.cancelled() or coro.cr_frame is None or coro.cr_running:
            return
        try:
            step = ctx.run(coro.throw, asyncio.CancelledError())
        except BaseException:  # noqa: BLE001 - it ended (the cancellation, or its own error)
            return
        u = _UNWINDING[t] = loop.create_task(drive(coro, step), context=ctx)
        _DRIVES[u] = _DRIVES[t]
        u.add_done_callback(lambda _: _UNWINDING.pop(t, None))

    task.add_done_callback(done)
    return task


def _carried(ctx: contextvars.Context) -> object:
    """The ``owner`` of a coroutine whose first step just ran (in ``ctx``, or in the current
    task's context for a batch's steps): a task that drives it on is the same one."""
    me = asyncio.current_task()
    if me is not None:
        return _DRIVES.get(me, me)
    step = ctx.get(_STEP)
    return step if step is not None else object()


async def unwound(task: asyncio.Task[Any]) -> None:
    """Return once the coroutine of ``task`` (a ``drive_task``) has ended, cleanup included."""
    u = _UNWINDING.get(task)
    if u is not None:
        with contextlib.suppress(BaseException):
            await asyncio.shield(u)


async def drive(coro: Any, fut: Any) -> Any:
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
    except StopIteration as stop:
        return stop.value
    finally:
        coro.close()  # cancelled while waiting: the coroutine's own cleanup runs


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    *,
    frame_limit: int = DEFAULT_FRAME_LIMIT,
    name: str = "connection",
    in_flight_total: InFlight | None = None,
) -> None:
    """Serve one connection until EOF, a fatal framing error, or cancellation."""
    shared = in_flight_total or InFlight()
    limits = shared.limits
    in_flight: set[asyncio.Task[None]] = set()
    count = 0                    # requests in flight on this connection
    freed = asyncio.Event()

    def send(reply: Any) -> None:
        if reply is not None and not writer.is_closing():
            writer.write(encode_reply(reply))

    async def run_one(msg: Any, n: int) -> None:
        nonlocal count
        try:
            send(await _run_frame(handler, msg))
        finally:
            count -= n
            shared.release(n)
            freed.set()

    try:
        while True:
            try:
                frame = await read_frame(reader, frame_limit)
            except FrameTooLarge as err:
                send(error_reply(None, err))
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
            if too_deep(frame, msg):
                send(too_deep_reply(msg))
                continue
            n = _cost(msg)
            while count > 0 and count + n > limits.per_connection:
                freed.clear()
                await freed.wait()  # back-pressure: nothing more is read until calls finish
            refusal = _check_frame(msg, limits, shared)
            if refusal is not None:
                send(refusal)
            else:
                count += n
                task = _start_eagerly(run_one(msg, n))
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

    Same wire rules and bounds as ``serve_connection`` (see rpc/framing.py and the module
    docstring); a request that does not block is answered within the ``data_received`` call
    that delivered it. A frame that would take the connection over its in-flight limit is
    kept, decoded, in ``held`` (and the rest of the input unparsed in ``buf``) with reading
    paused, until calls finish.
    """

    def __init__(self, handler: Handler, frame_limit: int, name: str, done: asyncio.Future[None],
                 shared: InFlight) -> None:
        self.handler, self.frame_limit, self.name, self.done = handler, frame_limit, name, done
        self.shared = shared
        self.limits = shared.limits
        self.buf = bytearray()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.count = 0                 # requests in flight (batch elements count one each)
        self.held: Any = None          # a decoded frame waiting for room
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, reply: Any) -> None:
        t = self.transport
        if reply is not None and t is not None and not t.is_closing():
            self._write(t, encode_reply(reply))

    def notify(self, method: str, params: dict[str, Any]) -> bool:
        """Push a notification (no id, no reply expected) to the peer, in order with replies."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        return self._write(t, encode({"jsonrpc": "2.0", "method": method, "params": params}))

    def _write(self, t: asyncio.Transport, data: bytes) -> bool:
        """Queue ``data`` for the peer, unless the peer already leaves ``MAX_UNREAD`` bytes
        unread: then its channel is closed and what it did not read is dropped (the kernel's
        memory is not a buffer for a peer that does not read)."""
        unread = t.get_write_buffer_size()
        if unread and unread + len(data) > MAX_UNREAD:
            log.warning("%s leaves %d bytes of replies unread (the limit is %d): channel closed",
                        self.name, unread + len(data), MAX_UNREAD)
            t.abort()
            return False
        t.write(data)
        return True

    async def run_one(self, msg: Any, n: int) -> None:
        try:
            # a single request (most frames) is answered without the batch layer's coroutine
            self.send(await (_run_frame(self.handler, msg) if type(msg) is list
                             else _answer(self.handler, msg)))
        finally:
            self.count -= n
            self.shared.release(n)

    def _too_large(self) -> None:
        self.send(error_reply(None, InvalidRequest(
            f"frame larger than the limit of {self.frame_limit} bytes; connection closed",
            limit=self.frame_limit)))
        self.buf.clear()
        assert self.transport is not None
        self.transport.close()

    def _pause(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        t = self.transport
        if (self.reading_paused and t is not None and not t.is_closing() and not self.write_paused
                and self.held is None and self.count < self.limits.per_connection):
            self.reading_paused = False
            t.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.buf += data
        self._pump()

    def _pump(self) -> None:
        """Decode and start frames from ``buf`` while the in-flight limit leaves room."""
        t = self.transport
        assert t is not None
        buf = self.buf
        start = 0
        try:
            while not t.is_closing():
                if self.write_paused:  # the peer is not reading its replies: start nothing more
                    break
                if self.held is None:
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
                        self.held = decode(frame)
                    except AgentixError as err:
                        self.send(error_reply(None, err))
                        continue
                    if too_deep(frame, self.held):
                        self.send(too_deep_reply(self.held))
                        self.held = None
                        continue
                n = _cost(self.held)
                if self.count > 0 and self.count + n > self.limits.per_connection:
                    self._pause()  # resumed by _finished
                    break
                msg, self.held = self.held, None
                refusal = _check_frame(msg, self.limits, self.shared)
                if refusal is not None:
                    self.send(refusal)
                    continue
                self.count += n
                task = _start_eagerly(self.run_one(msg, n))
                if task is not None:
                    self.in_flight.add(task)
                    task.add_done_callback(self._finished)
                    if self.count >= self.limits.per_connection:
                        self._pause()
        finally:
            if not t.is_closing():
                del buf[:start]

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.held is not None or self.buf:
            self._pump()
        self._maybe_resume()

    # backpressure: a peer that does not read its replies is not read from either
    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        t = self.transport
        if t is not None and not t.is_closing() and (self.held is not None or self.buf):
            self._pump()  # the requests received before the pause
        self._maybe_resume()

    def eof_received(self) -> bool:
        return False  # a half frame left in the buffer is dropped; close our side

    def connection_lost(self, exc: Exception | None) -> None:
        self.held = None
        self.buf.clear()
        for task in self.in_flight:
            task.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def serve_socket(sock: socket.socket, handler: Handler, *, frame_limit: int = DEFAULT_FRAME_LIMIT,
                       name: str = "connection", in_flight_total: InFlight | None = None,
                       on_open: Callable[[Notify], None] | None = None) -> None:
    """Serve one connected socket (an agent's channel) until it closes or this is cancelled.

    The fast path for agent channels: requests are decoded and started in ``data_received``
    (see ``_ChannelProtocol``); wire behaviour is the same as ``serve_connection``.
    ``on_open`` receives the connection's ``notify`` (server-to-peer notifications, e.g.
    streamed ``think`` text).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, proto = await loop.connect_accepted_socket(
        lambda: _ChannelProtocol(handler, frame_limit, name, done, in_flight_total or InFlight()),
        sock=sock)
    if on_open is not None:
        on_open(proto.notify)
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
    in_flight_total: InFlight | None = None,
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
                                   name=f"operator pid {creds.pid}", in_flight_total=in_flight_total)
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
