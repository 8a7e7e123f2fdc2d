"""Decided calls at work, and the end of every one whose authority ended.

A call's decision (``core.authorize``) is made, and paid for, before its handler runs, and
some handlers then run long: an ``exec``, a ``web_fetch`` download, a ``think``, an MCP call
waiting for its server to start. The rule: **no effect happens after the authority it rests
on ended.** The capability stage gives every call decided for an agent its re-check
(``Call.live`` = ``CapabilityService.still_live``: the decision again over the same tokens,
charging nothing), and the pipeline runs that call's handler here (``LiveCalls.run``), as
work this registry can end:

- every revocation (``cap.revoke``; an agent's exit or stop, which revokes its tokens and so
  every token delegated from them) calls ``recheck``: each running call whose re-check now
  refuses is cancelled. Cancelling its task ends the work the way each handler ends on
  cancellation — the exec's process tree is killed (``one_shot.run_once``), the download
  aborted, the think cancelled and charged at its reservation (``inference.py``), the MCP
  call never sent — and the caller gets the refusal the re-check gave
  (``capability_revoked``);
- the earliest expiry among the call's tokens is a timer: at it the call is re-checked the
  same way (``capability_expired``).

A call is checked once more as its handler starts (the pipeline may have waited since the
decision, for its charges or its intent record to be durable). The pipeline records the outcome as it does for any failed call (``tool.invoked`` →
``tool.result {ok: false, error: capability_revoked}``). A call made from a task runs its
handler in that task (ending it cancels the task, and the registry takes its cancellation
back as it becomes the refusal). A call the channel started eagerly (``rpc.server``: outside
any task) runs its handler's first step at once, and a handler that does not block finishes
there, without a task (no revocation can come between its decision and its end); the rest
runs in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agentix.core.authorize import Authorization
from agentix.core.errors import AgentixError
from agentix.rpc.server import drive_task, unwound


class DecidedCall(Protocol):
    """What this registry reads of a call (``dispatch.Call``, which imports this module)."""

    live: Callable[[], None] | None
    authorization: Authorization | None
    hops: list[Authorization]
    subject: str | None

__all__ = ["LiveCalls"]

#: how long after a token's expiry its calls are re-checked (expiry is whole seconds; the
#: decision refuses from that second on)
_EXPIRY_SLACK = 0.01


class _Running:
    __slots__ = ("call", "live", "over", "refusal", "timer")

    def __init__(self, call: DecidedCall, live: Callable[[], None]) -> None:
        self.call = call
        self.live = live
        #: why the call was ended (set only when this registry cancelled it)
        self.refusal: AgentixError | None = None
        self.timer: asyncio.TimerHandle | None = None
        #: set once its handler has returned or unwound (``settled`` waits for it)
        self.over = asyncio.Event()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class LiveCalls:
    """The decided calls whose handlers are running, each with the re-check of its decision."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._running: dict[asyncio.Task[Any], _Running] = {}
        #: calls ended because their authority ended (revoked or expired), since start
        self.ended = 0

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, call: DecidedCall, handler: Callable[[DecidedCall], Awaitable[Any]]) -> Any:
        """``handler(call)``, ended with the refusal of its re-check if its authority ends first."""
        live = call.live
        if live is None:
            return await handler(call)
        # the pipeline may have waited since the decision (its charges made durable, its
        # intent record written): a revocation meanwhile refuses it before anything runs
        live()
        coro = handler(call)
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        if me is not None:
            return await self._in_task(me, call, live, coro, loop)
        # started eagerly by the channel (rpc.server), outside any task: so is the handler, its
        # first step here (most finish in it), the rest in a task of its own, as the channel does
        ctx = contextvars.copy_context()
        try:
            fut = ctx.run(coro.send, None)  # type: ignore[attr-defined]
        except StopIteration as stop:
            return stop.value
        task = drive_task(coro, fut, ctx)
        run = self._track(task, call, live, loop)
        try:
            return await task
        except asyncio.CancelledError:
            await unwound(task)  # cancelled before it ran on: its cleanup still runs, and ends first
            me = asyncio.current_task()
            if run.refusal is not None and (me is None or not me.cancelling()):
                raise run.refusal from None  # ended here; the caller itself was not cancelled
            raise
        finally:
            self._untrack(task)
            if not task.done():  # this call went away (closed, not cancelled): its work goes too
                task.cancel()

    async def _in_task(self, me: asyncio.Task[Any], call: DecidedCall, live: Callable[[], None], coro: Any,
                       loop: asyncio.AbstractEventLoop) -> Any:
        """The handler in the caller's own task (no task more: a cancel scope it enters is left
        in the task that entered it); ending it cancels that task, and the cancellation this
        registry asked for is taken back (``uncancel``) as it becomes the refusal."""
        run = self._track(me, call, live, loop)
        taken_back = False
        try:
            return await coro
        except asyncio.CancelledError:
            if run.refusal is not None:
                taken_back = True
                if me.uncancel() == 0:
                    raise run.refusal from None  # ended here; the caller itself was not cancelled
            raise
        finally:
            self._untrack(me)
            if run.refusal is not None and not taken_back:
                me.uncancel()  # the handler swallowed the cancellation: it does not linger

    def recheck(self) -> int:
        """End every running call whose decision no longer holds; how many were ended."""
        n = 0
        for task, run in list(self._running.items()):
            n += self._check(task, run)
        return n

    async def settled(self, subject: str | None = None) -> None:
        """Return once every call this registry ended (those for ``subject``, if given) has
        unwound: ending one only asks its task to stop, and its handler's cleanup (an exec's
        process tree killed and waited for, a thread's write finished) runs after. A
        revocation is done once this returns."""
        ending = [run.over.wait() for run in self._running.values()
                  if run.refusal is not None and (subject is None or run.call.subject == subject)]
        if ending:
            await asyncio.gather(*ending)

    def _check(self, task: asyncio.Task[Any], run: _Running) -> int:
        if run.refusal is not None or task.done():
            return 0
        try:
            run.live()
        except AgentixError as err:
            run.refusal = err
            if task.cancel():
                self.ended += 1
                return 1
            run.refusal = None  # it had finished: its result stands
        return 0

    def rearm(self, call: DecidedCall) -> None:
        """``call`` decided again while it ran (a redirect hop): its expiry timer counts the
        new decision's tokens too."""
        for task, run in self._running.items():
            if run.call is call and not task.done():
                run.disarm()
                self._arm(task, run, asyncio.get_running_loop())

    def _track(self, task: asyncio.Task[Any], call: DecidedCall, live: Callable[[], None],
               loop: asyncio.AbstractEventLoop) -> _Running:
        """Register ``task`` as running ``call``, with its expiry timer armed."""
        run = self._running[task] = _Running(call, live)
        self._arm(task, run, loop)
        return run

    def _untrack(self, task: asyncio.Task[Any]) -> None:
        run = self._running.pop(task)
        run.disarm()
        run.over.set()

    def _arm(self, task: asyncio.Task[Any], run: _Running, loop: asyncio.AbstractEventLoop) -> None:
        """A timer at the earliest expiry of the call's tokens, its first decision's and any
        made while it ran (re-armed if the clock disagrees and the decision still holds)."""
        call = run.call
        auths = ([call.authorization] if call.authorization is not None else []) + list(call.hops)
        exps = [t.expires_at for a in auths for t in a.tokens if t.expires_at is not None]
        if not exps:
            return
        at = min(exps)

        def due() -> None:
            run.timer = None
            if not self._check(task, run) and not task.done() and run.refusal is None:
                run.timer = loop.call_later(max(_EXPIRY_SLACK, at - self._clock()) + _EXPIRY_SLACK, due)

        run.timer = loop.call_later(max(0.0, at - self._clock()) + _EXPIRY_SLACK, due)

