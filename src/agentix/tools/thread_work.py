"""Work with an effect that runs in a worker thread, and the end of its call.

Cancelling a task does not stop a thread. A handler that hands its work to
``asyncio.to_thread`` and is then cancelled (its call's authority ended:
``kernel/live_calls.py``) used to answer the refusal while the thread went on and made the
change anyway (a ``file_write`` whose token was revoked wrote its file after the caller was
told ``capability_revoked``). So such work runs through ``in_thread`` and calls
``commit_point()`` in the thread right before its first change:

- the call ended before that point: ``commit_point`` raises ``Abandoned``, which the work
  unwinds like any error (a directory it made for the file is removed), and the call ends
  with its refusal only once the thread is done: after the refusal, the world is as it was;
- the call ended after it: the change is under way and is not taken back half-done, so the
  call waits for the thread and answers what it did (a refusal would say it never happened).

Work that never reaches ``commit_point`` (a read) is ended the first way.

``locked_in_thread`` is the same under an ``asyncio.Lock`` held until the thread ends: a
writer cancelled meanwhile (its connection closed) used to let the lock go while its thread
went on writing, and the next writer came in beside it (a ``package.gc`` removing the blobs of
a pull not yet tagged).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

__all__ = ["Abandoned", "commit_point", "in_thread", "locked_in_thread"]

T = TypeVar("T")


class Abandoned(Exception):
    """The call this thread's work was for ended before the work's first change."""


class _Commit:
    __slots__ = ("lock", "ended", "committed")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended = False
        self.committed = False


_COMMIT: ContextVar[_Commit | None] = ContextVar("agentix_thread_commit", default=None)


def commit_point() -> None:
    """In work run by ``in_thread``, right before its first change: ``Abandoned`` if its call
    already ended; from here on, the call's end waits for the work and answers what it did.
    Outside ``in_thread`` (a direct call), nothing."""
    c = _COMMIT.get()
    if c is None:
        return
    with c.lock:
        if c.ended and not c.committed:
            raise Abandoned("the call ended before this work changed anything")
        c.committed = True


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread; a cancellation meanwhile ends the call without any change
    ``fn`` makes after its ``commit_point``, or, past it, waits for ``fn`` and answers it."""
    commit = _Commit()
    tok = _COMMIT.set(commit)
    try:
        work = asyncio.ensure_future(asyncio.to_thread(fn))  # its context holds ``commit``
    finally:
        _COMMIT.reset(tok)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with commit.lock:
            commit.ended = True
            committed = commit.committed
        while not work.done():  # the thread cannot be stopped: the answer waits for it
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                continue
            except BaseException:  # noqa: BLE001 - read below
                break
        if not committed:
            if not work.cancelled():
                work.exception()  # retrieved (Abandoned, or what the read raised): the refusal stands
            raise
        return work.result()  # the change was under way: what it did is the answer


async def locked_in_thread(lock: asyncio.Lock, fn: Callable[[], T]) -> T:
    """``in_thread(fn)`` holding ``lock`` until the thread ends, even if the caller is cancelled
    meanwhile (the lock's next holder never runs beside it)."""
    async with lock:
        return await in_thread(fn)
