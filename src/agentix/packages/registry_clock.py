"""A registry request on the kernel's clock, not the registry's (packages/remote.py).

``requests``' ``timeout`` bounds each wait for the socket, not a request: a registry (or its
token realm) that sends one byte every few seconds — of the status line, the headers or the
body — never trips it, and holds a pull (and the kernel thread doing it) for as long as it
likes. ``RequestClock`` bounds the whole request: from the moment it is sent, its answer must
be in within ``timeout`` seconds plus one second per ``MIN_RATE`` bytes carried either way (a
big blob on a slow link is not cut; a drip is). When the time is up, a watchdog shuts the
client's connections down (the blocked read returns at once, wherever it is — headers or body,
plain or TLS), and ``expired`` tells the caller the failure is ``timeout``.

One clock per client (``RemoteRegistry``: one session, used by one thread at a time): each
request starts it afresh (``start``), the code reading a body counts what arrives (``carried``),
and a finished request stops it (``stop``). One watchdog thread serves every clock.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from typing import Any

__all__ = ["MIN_RATE", "RequestClock"]

#: a request may take one more second per this many bytes it carries (16 KiB/s: slower than
#: that is a drip, not a link)
MIN_RATE = 16 << 10


class RequestClock:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired = False
        self._begin = 0.0
        self._carried = 0
        self._on = False  # a request is on the clock
        self._lock = threading.Lock()
        #: the client's connections (urllib3 connection objects, ``conn.sock``): shut down on expiry
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def deadline(self) -> float:
        return self._begin + self.timeout + self._carried / MIN_RATE

    def start(self, carrying: int = 0) -> None:
        """A request starts now (sending ``carrying`` bytes of body known up front)."""
        with self._lock:
            self._begin, self._carried, self.expired = time.monotonic(), carrying, False
            self._on = True
        _WATCHDOG.watch(self)

    def carried(self, n: int) -> None:
        """``n`` more bytes went or came: the deadline moves ``n / MIN_RATE`` seconds on."""
        self._carried += n

    def armed(self) -> bool:
        """Whether a request is on the clock (started, not stopped, not expired)."""
        return self._on

    def stop(self) -> None:
        with self._lock:
            self._on = False
        _WATCHDOG.forget(self)

    def _check(self, now: float) -> float | None:
        """The watchdog's look: the deadline of the request on the clock (None: none is); one
        past it expires here, its connections shut down."""
        with self._lock:
            if not self._on:
                return None
            due = self.deadline()
            if due > now:  # not a drip (yet): bytes moved, or time is left
                return due
            self._on, self.expired = False, True
            conns = list(self.connections)
        for c in conns:
            sock = getattr(c, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # the blocked read (or write) returns now
                except OSError:
                    pass  # closed meanwhile
        return None


class _Watchdog:
    """One thread for every clock of the process (not a ``threading.Timer`` per request):
    it sleeps until the earliest deadline of the clocks that are on, and wakes when one is
    started. Locks: a clock's own, then (outside it) the watchdog's; the watchdog never holds
    its own while it looks at a clock."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._on: weakref.WeakSet[RequestClock] = weakref.WeakSet()
        self._changed = False
        self._thread: threading.Thread | None = None

    def watch(self, clock: RequestClock) -> None:
        with self._cv:
            self._on.add(clock)
            self._changed = True
            if self._thread is None or not self._thread.is_alive():  # first use (or after a fork)
                self._thread = threading.Thread(target=self._run, name="registry-clock", daemon=True)
                self._thread.start()
            self._cv.notify()

    def forget(self, clock: RequestClock) -> None:
        with self._cv:
            self._on.discard(clock)

    def _run(self) -> None:
        while True:
            with self._cv:
                clocks, self._changed = list(self._on), False
            now = time.monotonic()
            dues = [d for d in (c._check(now) for c in clocks) if d is not None]
            del clocks
            with self._cv:
                if not self._changed:
                    self._cv.wait(max(min(dues) - time.monotonic(), 0.0) if dues else None)


_WATCHDOG = _Watchdog()
