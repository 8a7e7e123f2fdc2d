"""The kernel's event sink, bounded per caller for the records of calls that changed nothing.

``core/record_quota.py`` holds the rule. This is its edge: ``RecordGate`` wraps the kernel's
sink (``KernelRoot.events``: every handler, stage and face records through it), and a record is
held to the quota only while the task that writes it runs inside ``quiet(who)`` — which the
pipeline enters for every refusal and for every ``no_effect`` method (its handler and its
outcome record), and the HTTP face for the refusals it makes itself. So a handler written
tomorrow that records something from a read method (``loop.event``, ``tokens.verify``...) is
bounded without knowing it. A task started inside ``quiet`` (a background watcher) is not
held: the mark belongs to the task that entered it.

Counted records are written as one ``audit.suppressed {by, count, kinds, first, last}`` per
identity ``flush_after`` seconds after the first was counted (and at ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

from agentix.core.record_quota import RecordQuota
from agentix.kernel.clock import Clock, SystemClock
from agentix.kernel.event_sink import EventSink
from agentix.rpc.server import owner

__all__ = ["RecordGate", "quiet"]

log = logging.getLogger(__name__)

#: (identity, who entered ``quiet``: ``rpc.server.owner``) while a no-change call is recording
_QUIET: contextvars.ContextVar[tuple[str, object | None] | None] = contextvars.ContextVar(
    "agentix_quiet_records", default=None)

FLUSH_AFTER = 10.0


@contextlib.contextmanager
def quiet(who: str) -> Iterator[None]:
    """Records written by this task inside the block count against ``who``'s quota.

    "This task" is ``rpc.server.owner()``: a call the channel started eagerly (outside any
    task) and finished in a task of its own once it blocked (an ``ipc.recv`` that waited for
    its message) is one caller throughout; a task it starts is not."""
    token = _QUIET.set((who, owner()))
    try:
        yield
    finally:
        _QUIET.reset(token)


def _quiet_caller() -> str | None:
    mark = _QUIET.get()
    if mark is None:
        return None
    return mark[0] if mark[1] is owner() else None


class RecordGate:
    """An ``EventSink`` over another: records made inside ``quiet`` go through the quota.
    It only writes: reading is the log's (``KernelRoot.audit.sink``)."""

    def __init__(self, inner: EventSink, quota: RecordQuota, *, flush_after: float = FLUSH_AFTER,
                 clock: Clock | None = None) -> None:
        self.inner = inner
        self.quota = quota
        self.flush_after = flush_after
        self.clock: Clock = clock or SystemClock()  # the quota's refill and the flush interval
        self._flushes: dict[str, asyncio.Task[None]] = {}

    async def record(self, kind: str, agent_id: str | None, data: dict[str, Any],
                     taint: tuple[str, ...] = (), *, durable: bool = True) -> Any:
        who = _quiet_caller()
        if who is None or self.quota.admit(who, kind, self.clock.monotonic()):
            return await self.inner.record(kind, agent_id, data, taint, durable=durable)
        if who not in self._flushes:
            self._flushes[who] = asyncio.get_running_loop().create_task(
                self._flush_later(who), name=f"audit-suppressed:{who}")
        return None

    async def _flush_later(self, who: str) -> None:
        try:
            await self.clock.sleep(self.flush_after)
        finally:
            self._flushes.pop(who, None)
        await self._write(who)

    async def _write(self, who: str) -> None:
        held = self.quota.take(who)
        if held is not None:
            await self.inner.record("audit.suppressed", None, held.data(), (), durable=False)

    async def flush(self) -> None:
        """Write every pending aggregate now (kernel shutdown)."""
        for task in list(self._flushes.values()):
            task.cancel()
        for task in list(self._flushes.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flushes.clear()
        for who in self.quota.holding():
            await self._write(who)

    def statistics(self) -> dict[str, int]:
        return {"written": self.quota.written, "suppressed": self.quota.suppressed,
                "holding": len(self.quota.holding())}
