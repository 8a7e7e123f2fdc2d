"""The approval queue: approvals the kernel knows about, each pending one with a waiter.

The state machine of one approval is pure (``core/approval.py``); this book holds them,
writes every change through the store's one writer, and lets a call wait for an answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path
from typing import Any

from agentix.core.approval import Approval, apply
from agentix.core.errors import LimitExceeded, NotFound, StateError
from agentix.kernel.clock import Clock, wait_event
from agentix.store.db import Database
from agentix.store.state import ApprovalRecord, ApprovalStore

#: approval requests one agent may have waiting at once, and the whole kernel
MAX_PENDING_PER_AGENT = 16
MAX_PENDING = 256
#: answered approvals that are final (denied, expired, used) kept in memory, newest last; older
#: ones stay in the store only (``approval.list --all`` shows the ones kept)
MAX_ANSWERED = 256
_FINAL = ("denied", "expired", "used")

__all__ = ["ApprovalBook"]

log = logging.getLogger(__name__)


class ApprovalBook:
    """Approvals the kernel knows about (pending and answered), with a waiter per pending one.

    Every change is written to the store (table ``approvals``, through the one writer, queued
    in order: the audit record that follows a change is durable only after it), so pending
    approvals survive a restart. A ``legacy`` ``approvals.json`` from an older kernel is
    imported once and removed. A call waits for an answer on ``clock`` (the kernel's one
    clock: its deadline is the clock's, so a virtual clock steps it).
    """

    def __init__(self, db: Database | None = None, legacy: Path | None = None, *, clock: Clock) -> None:
        self.clock = clock
        self._items: dict[str, Approval] = {}
        self._final: dict[str, None] = {}  # ids of final approvals, oldest first
        self._waiters: dict[str, asyncio.Event] = {}
        self._answering: set[str] = set()  # answered, the answer not yet recorded (``answer``)
        self.args: dict[str, dict[str, Any]] = {}  # what the operator is shown
        self.db = db
        if db is not None:
            self.restore([r.request for r in ApprovalStore(db).live_and_recent(_FINAL, MAX_ANSWERED)])
            if legacy is not None and legacy.exists():
                self._import(legacy)

    def _import(self, legacy: Path) -> None:
        import orjson

        assert self.db is not None
        records = [d for d in orjson.loads(legacy.read_bytes()) if d.get("id") not in self._items]
        self.restore(records)
        for d in records:
            self._save(self._items[d["id"]]).result()  # durable before the file goes
        legacy.unlink()
        log.info("imported %d approvals from %s into the store", len(records), legacy)

    def _save(self, a: Approval) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.db is None:
            fut.set_result(None)
            return fut
        from agentix.core.audit import format_ts

        rec = ApprovalRecord(a.id, a.agent, {**a.to_data(), "args": self.args.get(a.id)}, a.state,
                             format_ts(a.created_at), format_ts(a.deadline))
        fut = self.db.submit(lambda t: ApprovalStore.put_in(t, rec))
        fut.add_done_callback(_log_store_failure)
        return fut

    def add(self, a: Approval, args: dict[str, Any]) -> None:
        self._evict()
        self._items[a.id] = a
        self._waiters[a.id] = asyncio.Event()
        self.args[a.id] = args
        self._save(a)

    def get(self, approval_id: str) -> Approval:
        try:
            return self._items[approval_id]
        except KeyError:
            raise NotFound(f"no approval {approval_id!r}", approval_id=approval_id) from None

    def put(self, a: Approval) -> concurrent.futures.Future[Any]:
        """Put ``a`` in; its row is written by the store's writer (the future: once durable)."""
        self._items[a.id] = a
        saved = self._save(a)
        if a.state != "pending" and a.id in self._waiters:
            self._waiters[a.id].set()
        if a.state in _FINAL:
            self._final[a.id] = None  # newest last
        return saved

    def _evict(self) -> None:
        """Forget (in memory; the store keeps them) the oldest final approvals past
        ``MAX_ANSWERED``: nothing waits on them and none can be used again, so answered
        approvals do not grow the kernel's memory without end."""
        while len(self._final) > MAX_ANSWERED:
            old = next(iter(self._final))
            del self._final[old]
            a = self._items.get(old)
            if a is not None and a.state in _FINAL:
                del self._items[old]
                self._waiters.pop(old, None)
                self.args.pop(old, None)

    def answer(self, approval_id: str, approve: bool, *, reason: str | None, by: str, now: float) -> Approval:
        """The operator's answer, checked but not yet in effect: ``commit`` puts it in (the
        waiting call goes on, a presented id is honoured) once the answer is recorded; a
        second answer meanwhile is refused, ``withdraw`` drops one that was not recorded."""
        if approval_id in self._answering:
            raise StateError(f"approval {approval_id} is being answered; cannot answer it again",
                             approval_id=approval_id, state="pending")
        a = apply(self.get(approval_id), "grant" if approve else "deny", now=now, reason=reason, by=by)
        self._answering.add(approval_id)
        return a

    async def commit(self, a: Approval) -> Approval:
        """Put in an ``answer`` (unless the request expired meanwhile); the approval as it is,
        once its row is durable (the operator's reply must not outrun it: a kill -9 after the
        answer was acknowledged would bring the request back pending)."""
        self._answering.discard(a.id)
        current = self._items.get(a.id)
        if current is not None and current.state == "pending":
            await asyncio.wait([asyncio.wrap_future(self.put(a))])  # a failed write is logged (_save)
            return a
        return current or a

    def withdraw(self, approval_id: str) -> None:
        self._answering.discard(approval_id)

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        """The approval once answered, or as it is after ``timeout`` seconds of the clock."""
        await wait_event(self.clock, self._waiters.setdefault(approval_id, asyncio.Event()), timeout)
        return self.get(approval_id)

    def admit(self, agent: str, now: float) -> None:
        """Refuse a new request when ``agent`` already has ``MAX_PENDING_PER_AGENT`` pending (or
        the kernel ``MAX_PENDING``): the queue is a person's attention and a row in the store
        each, so no agent may flood it (``limit_exceeded``, ``data.limit == "pending_approvals"``;
        nothing is added)."""
        pending = self.pending(now)
        mine = sum(1 for a in pending if a.agent == agent)
        if mine >= MAX_PENDING_PER_AGENT or len(pending) >= MAX_PENDING:
            full = mine >= MAX_PENDING_PER_AGENT
            raise LimitExceeded(
                (f"this agent already has {mine} approval requests waiting; the limit is "
                 f"{MAX_PENDING_PER_AGENT}" if full else
                 f"{len(pending)} approval requests are waiting; the kernel's limit is {MAX_PENDING}")
                + ": wait for an answer (or for them to expire) before asking again",
                limit="pending_approvals", pending=mine if full else len(pending),
                max=MAX_PENDING_PER_AGENT if full else MAX_PENDING)

    def pending(self, now: float) -> list[Approval]:
        return [a for a in self._items.values() if a.state == "pending" and now < a.deadline]

    def all(self) -> list[Approval]:
        return list(self._items.values())

    def snapshot(self) -> list[dict[str, Any]]:
        return [{**a.to_data(), "args": self.args.get(a.id)} for a in self._items.values()]

    def restore(self, records: list[dict[str, Any]]) -> None:
        for d in records:
            d = dict(d)
            args = d.pop("args", None) or {}
            a = Approval.from_data(d)
            self._items[a.id] = a
            self._waiters[a.id] = asyncio.Event()
            self.args[a.id] = args
            if a.state in _FINAL:
                self._final[a.id] = None
        self._evict()


def _log_store_failure(fut: concurrent.futures.Future[Any]) -> None:
    if fut.exception() is not None:
        log.error("the store refused an approval write: %r", fut.exception())
