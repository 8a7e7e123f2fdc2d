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
and a finished request stops it (``stop``).
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
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        #: the client's connections (urllib3 connection objects, ``conn.sock``): shut down on expiry
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def deadline(self) -> float:
        return self._begin + self.timeout + self._carried / MIN_RATE

    def start(self, carrying: int = 0) -> None:
        """A request starts now (sending ``carrying`` bytes of body known up front)."""
        with self._lock:
            self._cancel()
            self._begin, self._carried, self.expired = time.monotonic(), carrying, False
            self._arm(self.timeout + carrying / MIN_RATE)

    def carried(self, n: int) -> None:
        """``n`` more bytes went or came: the deadline moves ``n / MIN_RATE`` seconds on."""
        self._carried += n

    def armed(self) -> bool:
        """Whether a request is on the clock (started, not stopped, not expired)."""
        return self._timer is not None

    def stop(self) -> None:
        with self._lock:
            self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, after: float) -> None:
        t = threading.Timer(max(after, 0.0), self._fire)
        t.daemon = True
        self._timer = t
        t.start()

    def _fire(self) -> None:
        with self._lock:
            if self._timer is None or self._timer is not threading.current_thread():
                return  # stopped, or started again meanwhile
            left = self.deadline() - time.monotonic()
            if left > 0:  # bytes moved meanwhile: not a drip yet
                self._arm(left)
                return
            self._timer = None
            self.expired = True
            conns = list(self.connections)
        for c in conns:
            sock = getattr(c, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # the blocked read (or write) returns now
                except OSError:
                    pass  # closed meanwhile
