"""The kernel's one clock: what time it is, and how a deadline the kernel sets is waited out.

The kernel's services never call ``time.time()`` for a decision: the composition root
(``kernel/kernel.py``) builds one ``Clock`` and hands it to every service whose answers depend
on time (token expiry and the decision cache's window, approval deadlines, the HTTP API's token
TTLs and idempotency window, the inference scheduler and the audit quota's refill).

- ``now()``: wall time, seconds since the epoch: what is written down and must survive a
  restart (a token's ``expires_at``, an approval's deadline, a message's ``sent_at``).
- ``monotonic()``: for durations and deadlines inside one run.
- ``sleep(seconds)``: an awaitable that completes once ``seconds`` of *this* clock have
  passed, counted from the call (``wait_event`` builds on it: an event, or the clock's
  deadline, whichever comes first).

``SystemClock`` is the real one. ``VirtualClock`` is a real implementation whose time moves
only when told (``advance``), waking every sleeper whose deadline it passes, as trio's
``MockClock`` does: a test of expiry or a timeout steps it instead of sleeping, and is exact.
What the kernel waits for from a real process (an exit, a reply on a socket) is waited in real
time whatever the clock: those are not deadlines the kernel decides by.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "VirtualClock", "wait_event"]


class Clock(Protocol):
    """Where the kernel reads the time and waits out its own deadlines."""

    def now(self) -> float:
        """Wall time, seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """A clock that never goes back, for durations within one run."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Something to await that completes once ``seconds`` of this clock have passed since
        this call (at once, after a turn of the loop, for ``seconds <= 0``)."""
        ...


class SystemClock:
    """The host's clocks (``time.time``, ``time.monotonic``) and the event loop's timers."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> Awaitable[None]:
        return asyncio.sleep(max(0.0, seconds))  # (from its first await: real time only moves on)


class VirtualClock:
    """A clock that moves only by ``advance``: both readings step together, and every
    ``sleep`` whose deadline is reached returns (in deadline order). ``start`` is its wall
    time at creation (default: a fixed instant, so runs are alike); its monotonic reading
    starts at 0."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._wall0 = float(start)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._wall0 + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    def sleep(self, seconds: float) -> Awaitable[None]:
        """A future, its deadline registered now (so time stepped before the caller awaits it
        counts): done when ``advance`` reaches it; cancelling it withdraws it."""
        if seconds <= 0:
            return asyncio.sleep(0)  # a sleep is always a point where others may run
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), fut))
        return fut

    def advance(self, seconds: float) -> int:
        """Move time forward by ``seconds`` and wake every sleeper whose deadline is now
        reached; returns how many were woken (a cancelled sleeper is not counted)."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward: advance({seconds!r})")
        self._elapsed += seconds
        woken = 0
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
                woken += 1
        return woken

    def deadlines(self) -> list[float]:
        """When each sleep waiting on this clock now ends (its ``monotonic()`` reading), in
        order: a test steps the clock once the kernel waits on it, not before."""
        return sorted(d for d, _, f in self._sleepers if not f.done())


async def wait_event(clock: Clock, event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds of ``clock``; True if it was set."""
    if event.is_set():
        return True
    setter = asyncio.ensure_future(event.wait())
    timer = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({setter, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        setter.cancel()
        timer.cancel()
    return event.is_set()
