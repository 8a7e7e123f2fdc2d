"""A small synchronous JSON-RPC 2.0 client over a stream socket (newline-delimited JSON).

Used by agent programs (over their inherited channel) and by operators (over the kernel's
Unix socket). Thread-safe: several threads may call at once; whichever thread is waiting
reads frames and hands each reply to the caller whose id it carries. Notifications from the
kernel (frames with a ``method`` and no ``id``, e.g. ``think.delta``) go to
``on_notification(method, params)``, called in order in the reading thread (without the
lock held); it must not make calls on the same connection (queue the data instead).

Every agent imports this module, so it imports only what is cheap: the C-level ``_socket``
(``socket`` pulls in ``enum`` and ``selectors``), the stdlib's built-in JSON accelerator
(``agentix.sdk._wire``) and the error classes (no ``typing``).
"""

from __future__ import annotations

import _socket
import _thread

from agentix.core.errors import ConnectionClosed, error_from_code
from agentix.sdk._wire import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FRAME_LIMIT", "Connection"]


class _Condition:
    """``threading.Condition`` (acquire, release, wait, notify_all) over ``_thread`` locks:
    ``threading`` pulls in ``functools`` and ``collections`` (~3 ms at every agent start)."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._waiters: list[Any] = []

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> _Condition:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self) -> None:
        """Release, sleep until ``notify_all``, re-acquire (the caller holds the lock)."""
        w = _thread.allocate_lock()
        w.acquire()
        self._waiters.append(w)
        self._lock.release()
        try:
            w.acquire()
        finally:
            self._lock.acquire()

    def notify_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.release()


class Connection:
    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._next_id = 0
        self._send_lock = _thread.allocate_lock()
        self._cond = _Condition()
        self.on_notification: Any = None   # Callable[[str, dict], None] | None
        self._reading = False
        self._replies: dict[int, dict[str, Any]] = {}
        self._closed = False

    @classmethod
    def unix(cls, path: str, timeout: float | None = None) -> Connection:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        sock.settimeout(None)
        return cls(sock)

    @classmethod
    def from_fd(cls, fd: int) -> Connection:
        return cls(_socket.socket(fileno=fd))

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_frame(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                frame = bytes(self._buf[:i])
                del self._buf[: i + 1]
                return frame
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionClosed("the kernel closed the connection")
            self._buf += chunk

    def _dispatch(self, notes: list[dict[str, Any]]) -> None:
        fn = self.on_notification
        for n in notes:
            if fn is None:
                continue
            try:
                fn(n["method"], n.get("params") or {})
            except Exception:  # a failing callback must not break the connection
                import logging  # only on this rare path: every agent imports this module

                logging.getLogger(__name__).exception("notification handler failed for %s", n["method"])

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call ``method`` and return its result, or raise the typed error it returned."""
        with self._cond:
            self._next_id += 1
            req_id = self._next_id
        frame = dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}}) + b"\n"
        with self._send_lock:
            if len(frame) > FRAME_LIMIT:  # the kernel would close the connection
                from agentix.core.errors import InvalidRequest

                raise InvalidRequest(
                    f"{method}: the request is {len(frame)} bytes, over the kernel's frame limit "
                    f"of {FRAME_LIMIT} bytes; nothing was sent (write large data to a file in "
                    "the workspace, or send it in parts)", method=method, size=len(frame),
                    limit=FRAME_LIMIT)
            try:
                self._sock.sendall(frame)
            except OSError as err:
                raise ConnectionClosed(f"cannot reach the kernel: {err}") from None
        with self._cond:
            while req_id not in self._replies:
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading = True
                self._cond.release()
                try:
                    try:
                        raw = self._read_frame()
                    except OSError as err:
                        raise ConnectionClosed(f"lost the kernel connection: {err}") from None
                finally:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                msg = loads(raw)
                notes = []
                for reply in msg if isinstance(msg, list) else [msg]:
                    rid = reply.get("id")
                    if isinstance(rid, int):
                        self._replies[rid] = reply
                    elif rid is None and isinstance(reply.get("method"), str):
                        notes.append(reply)
                        continue
                    elif reply.get("error"):  # an error the kernel could not tie to a request
                        err = reply["error"]
                        raise error_from_code(err.get("data", {}).get("error", "internal_error"),
                                              err.get("message", "error"), err.get("data"))
                if notes:
                    # still "reading": no other thread reads (and dispatches) the next frames
                    # until these are handled, so notifications arrive in order
                    self._reading = True
                    self._cond.release()
                    try:
                        self._dispatch(notes)
                    finally:
                        self._cond.acquire()
                        self._reading = False
                        self._cond.notify_all()
            reply = self._replies.pop(req_id)
        if "error" in reply:
            err = reply["error"]
            data = err.get("data") or {}
            raise error_from_code(data.get("error", "internal_error"), err.get("message", ""), data)
        return reply.get("result")


#: the kernel's default ``[kernel] frame_limit``: a larger request is refused by ``call``
#: before anything is sent (the kernel would close the connection), so the connection stays
#: usable
FRAME_LIMIT = 1024 * 1024
