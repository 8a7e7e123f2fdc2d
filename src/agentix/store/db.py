"""The durable store: one SQLite database in WAL mode, one writer thread, group commit.
(Over 400 lines: one writer: its queue, group commit and transaction API share the writer
thread's state.)

Rules:

* **One writer path.** Every write is an *operation* — a function ``op(txn) -> result`` —
  handed to ``Database.write`` (async) or ``Database.submit`` (threads). A dedicated writer
  thread takes whatever operations are waiting (up to ``max_batch``), runs them in ONE
  transaction and commits; only then are their futures resolved. A caller that got a result
  therefore knows its write is durable ("acknowledged").
* **Durability.** ``durability="full"`` (default) sets ``synchronous=FULL``: in WAL mode
  every COMMIT fsyncs the WAL, so an acknowledged write survives ``kill -9`` of the kernel
  *and* power loss (given a disk that honours fsync). ``"normal"`` (``synchronous=NORMAL``)
  survives ``kill -9`` — the WAL frames are in the OS page cache before COMMIT returns — but
  the last commits may be lost on power loss. ``"off"`` is for benchmarks only. Group commit
  is what keeps ``full`` fast: one fsync per batch, not per write.
* **Asynchronous commit.** ``Database.post(op)`` queues an operation like ``write`` but the
  caller does not wait: the operation runs in queue order (so an audit record still gets
  its seq and hash in order) and is committed by the next group commit. A batch made only
  of posted operations waits at most ``commit_window_s`` (default 5 ms, at most 10 ms),
  counted from when its first operation was posted, for more to share the commit; any
  ``write`` that arrives ends the wait at once. A ``kill -9`` can therefore lose posted
  operations from the last window (plus the commit in progress) -- like PostgreSQL's
  ``synchronous_commit=off`` -- but never one that precedes, in queue order, a ``write``
  that was acknowledged: commits happen in queue order, so what is lost is always a tail.
* **Atomicity per operation.** If an operation raises, the batch is rolled back, writer-side
  state of every *participant* (e.g. the audit chain's next seq and last hash) is restored,
  the failed operation's future gets the exception and the rest of the batch is run again.
  Operations must therefore depend only on the database and participant state.
* **One wake-up per commit.** What the writer hands back to an event loop after a commit --
  the waiting callers' results and the participants' notifications
  (``call_after_commit``: the audit log waking its tail readers) -- goes in ONE
  ``call_soon_threadsafe`` per loop, so a commit costs the loop one wake-up, not one per
  kind of news.
* **The WAL is rewritten in place.** What an acknowledged write waits for is the WAL's
  ``fdatasync``. That costs about one bare ``fdatasync`` when the commit overwrites blocks
  the WAL already has, and up to twice that when it makes the file longer (the new size and
  blocks are metadata: the filesystem journal commits too). SQLite starts the WAL again at
  its head after each complete checkpoint and, with ``journal_size_limit`` -1 (set here
  explicitly: a limit would truncate it and make every cycle grow the file again), keeps
  the file, so only the first cycle after the store opens extends it. (Growing a new WAL
  to its working size up front was tried and dropped: it writes ~5 MiB of zeros per store
  and fsyncs them, which on a busy disk held up the first writes by seconds, to save ~40
  us on each of the first ~250 commits.)
* **Checkpoints off the commit path.** SQLite's automatic checkpoint runs inside the COMMIT
  that crosses ``wal_autocheckpoint`` pages, so the caller of that commit waited for the
  copy of ~1,000 pages and an fsync of the database file. Here a checkpointer thread with
  its own connection runs a PASSIVE checkpoint after every ``checkpoint_every`` commits,
  beside the writer (a PASSIVE checkpoint never blocks it); the automatic checkpoint stays
  as the backstop that lets the WAL restart, and finds nearly every frame already copied.
  Neither changes what a commit waits for (``synchronous=FULL``: its WAL frames fsynced).
* **Readers** use their own connections (``Database.reader()``, one per thread); in WAL
  mode they never block the writer and see only committed data.
* **Migrations** are an ordered list of SQL scripts; ``schema_version`` holds how many have
  been applied; each applies atomically.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from agentix.core.errors import AgentixError, InternalError, StateError
from agentix.store.schema import MIGRATIONS

__all__ = ["Database", "Durability", "Participant", "Txn"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Durability = Literal["full", "normal", "off"]
_SYNC = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}


class Participant(Protocol):
    """Writer-thread state that must roll back with a failed transaction."""

    def snapshot(self) -> Any: ...
    def restore(self, snap: Any) -> None: ...
    def before_commit(self, txn: Txn) -> None: ...  # flush buffered rows into the txn
    def committed(self) -> None: ...


@dataclass
class Txn:
    """What an operation gets: the writer connection inside an open transaction."""

    conn: sqlite3.Connection


@dataclass
class _Req:
    op: Callable[[Txn], Any]
    fut: Any  # asyncio.Future or concurrent.futures.Future
    loop: asyncio.AbstractEventLoop | None
    posted: float = 0.0  # monotonic time it was posted; 0.0 for a ``write`` (no waiting)

#: the longest an asynchronously committed operation may wait for company
MAX_COMMIT_WINDOW_S = 0.010

#: SQLite's automatic checkpoint threshold (its default), in WAL frames
AUTOCHECKPOINT_FRAMES = 1000
#: commits between two background checkpoints: a single-record commit writes ~3-6 frames,
#: so the checkpointer has copied most of a cycle before the automatic checkpoint is due
CHECKPOINT_EVERY = 128


_STOP = object()


@dataclass(frozen=True)
class WriterStats:
    commits: int
    writes: int
    max_batch_seen: int
    #: PASSIVE checkpoints the checkpointer thread ran (not counting SQLite's own)
    checkpoints: int = 0


@dataclass
class _Counters:
    commits: int = 0
    writes: int = 0
    max_batch_seen: int = 0
    checkpoints: int = 0
    participants: list[Participant] = field(default_factory=list)


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


class Database:
    """The agentix database at ``path`` (created with its migrations if missing)."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = "full",
        max_batch: int = 4096,
        commit_window_s: float = 0.005,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        if not 0.0 <= commit_window_s <= MAX_COMMIT_WINDOW_S:
            raise ValueError(f"commit_window_s must be between 0 and {MAX_COMMIT_WINDOW_S} s")
        self.commit_window_s = commit_window_s
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durability = durability
        self.max_batch = max_batch
        self._conn = _connect(str(self.path))
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={_SYNC[durability]}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # the WAL keeps its size (see the module rules): -1 is SQLite's default, said here
        # because a limit would make every checkpoint cycle grow the file again
        self._conn.execute("PRAGMA journal_size_limit=-1")
        self._conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_FRAMES}")
        self.schema_version = self._migrate()
        self.checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        #: set by the writer every ``checkpoint_every`` commits, and by ``close``
        self._checkpoint_due = threading.Event()
        self._q: queue.SimpleQueue[_Req | object] = queue.SimpleQueue()
        #: set when someone waits (a ``write``/``submit``, or ``close``): ends a posted batch's
        #: commit window early. Posts do not set it, so a burst of posts wakes the writer once
        #: per window, not once per post (each wake-up takes the GIL from the event loop)
        self._urgent = threading.Event()
        self._c = _Counters()
        self._local = threading.local()
        #: each thread's reader, by thread: a thread gone (to_thread's pool comes and goes) has
        #: its reader closed when the next one opens, so they stay as many as live threads
        self._readers: dict[threading.Thread, sqlite3.Connection] = {}
        self._readers_lock = threading.Lock()
        self._generation = 0
        self._closed = False
        #: (loop, fn, args) queued by participants in ``committed`` (writer thread only)
        self._after: list[tuple[asyncio.AbstractEventLoop, Callable[..., Any], tuple[Any, ...]]] = []
        self._thread = threading.Thread(target=self._run, name="agentix-db-writer", daemon=True)
        self._thread.start()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_every > 0:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="agentix-db-checkpoint", daemon=True)
            self._checkpointer.start()

    # ------------------------------------------------------------ migrations

    def _migrate(self) -> int:
        c = self._conn
        c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = c.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            c.execute("INSERT INTO schema_version VALUES (0)")
            version = 0
        else:
            version = row[0]
        if version > len(MIGRATIONS):
            raise StateError(
                "the database was written by a newer agentix",
                schema_version=version, known=len(MIGRATIONS),
            )
        for i in range(version, len(MIGRATIONS)):
            c.executescript(
                "BEGIN IMMEDIATE;\n" + MIGRATIONS[i]
                + f"\nUPDATE schema_version SET version = {i + 1};\nCOMMIT;"
            )
            log.info("applied migration %d to %s", i + 1, self.path)
        return len(MIGRATIONS)

    # ------------------------------------------------------------ participants

    def add_participant(self, p: Participant) -> None:
        """Register writer-side state; call before submitting operations that touch it."""
        self._c.participants.append(p)

    def call_after_commit(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any],
                          *args: Any) -> None:
        """From a participant's ``committed`` (the writer thread): run ``fn(*args)`` on
        ``loop`` in the same loop callback that settles the commit's waiters (after them)."""
        self._after.append((loop, fn, args))

    # ------------------------------------------------------------ writing

    async def write(self, op: Callable[[Txn], T]) -> T:
        """Run ``op`` in the writer; return its result once the commit is durable."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._put(_Req(op, fut, loop))
        return await fut

    def submit(self, op: Callable[[Txn], T]) -> concurrent.futures.Future[T]:
        """Thread-side ``write``: a future resolved after the durable commit."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put(_Req(op, fut, None))
        return fut

    def post(self, op: Callable[[Txn], Any]) -> None:
        """Queue ``op`` without waiting for its commit (asynchronous commit, see above).

        Nobody waits, so there is no future: if the operation fails, it fails alone (the
        batch is re-run without it, as for ``write``) and the writer logs the error.
        Participants' ``committed`` hooks see its effect (``AuditLog`` wakes its readers)."""
        self._put(_Req(op, None, None, time.monotonic() or 1e-9))

    def _put(self, req: _Req) -> None:
        if self._closed:
            raise StateError("the database is closed")
        self._q.put(req)
        if not req.posted:
            self._urgent.set()

    def _run(self) -> None:
        q = self._q
        while True:
            first = q.get()
            if first is _STOP:
                return
            self._urgent.clear()  # before draining: whoever set it is in the queue behind first
            batch: list[_Req] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            if not stop and self.commit_window_s > 0:
                stop = self._gather(batch)
            try:
                self._commit_batch(batch)
            except BaseException as exc:  # never let the writer die silently
                log.exception("writer batch failed")
                err = InternalError("the store failed to commit", reason=type(exc).__name__)
                self._after = []
                _resolve([(r, None, err) for r in batch], [])
            if stop:
                return

    def _gather(self, batch: list[_Req]) -> bool:
        """While the batch holds only posted operations, wait (until the first one's
        window closes) for more; return True if a stop request was taken."""
        q = self._q
        deadline = batch[0].posted + self.commit_window_s
        if not all(r.posted for r in batch):
            return False  # someone waits: commit now
        left = deadline - time.monotonic()
        if left > 0:
            # sleep out the window unless someone starts waiting (``_urgent``); posts arriving
            # meanwhile queue up without waking this thread
            self._urgent.wait(left)
        self._urgent.clear()  # before draining: a waiter queued after this is seen next round
        while len(batch) < self.max_batch:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                return False
            if nxt is _STOP:
                return True
            batch.append(nxt)  # type: ignore[arg-type]
        return False

    def _commit_batch(self, batch: list[_Req]) -> None:
        conn = self._conn
        parts = self._c.participants
        pending = list(batch)
        done: list[tuple[_Req, Any, BaseException | None]] = []
        while pending:
            snaps = [p.snapshot() for p in parts]
            conn.execute("BEGIN IMMEDIATE")
            txn = Txn(conn)
            results: list[tuple[_Req, Any, BaseException | None]] = []
            failed_at = -1
            failure: BaseException | None = None
            for i, req in enumerate(pending):
                try:
                    results.append((req, req.op(txn), None))
                except Exception as exc:  # the op's own fault: fail it alone
                    failed_at, failure = i, exc
                    break
            if failed_at >= 0:
                conn.execute("ROLLBACK")
                for p, s in zip(parts, snaps):
                    p.restore(s)
                if not isinstance(failure, AgentixError):
                    log.warning("store operation failed: %r", failure)
                done.append((pending[failed_at], None, failure))
                pending = pending[:failed_at] + pending[failed_at + 1:]
                continue
            try:
                for p in parts:
                    p.before_commit(txn)
                conn.execute("COMMIT")
            except Exception as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                for p, s in zip(parts, snaps):
                    p.restore(s)
                err = InternalError("the store failed to commit", reason=str(exc))
                done.extend((r, None, err) for r in pending)
                break
            for p in parts:
                p.committed()
            self._c.commits += 1
            self._c.writes += len(results)
            self._c.max_batch_seen = max(self._c.max_batch_seen, len(results))
            self._since_checkpoint += 1
            done.extend(results)
            break
        after, self._after = self._after, []
        _resolve(done, after)
        if self.checkpoint_every and self._since_checkpoint >= self.checkpoint_every:
            self._since_checkpoint = 0
            self._checkpoint_due.set()  # after the waiters are on their way

    def stats(self) -> WriterStats:
        c = self._c
        return WriterStats(c.commits, c.writes, c.max_batch_seen, c.checkpoints)

    # ------------------------------------------------------------ the WAL

    def _checkpoint_loop(self) -> None:
        """The checkpointer thread: a PASSIVE checkpoint each time the writer asks."""
        conn = _connect(str(self.path))
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closed:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self._c.checkpoints += 1
                except sqlite3.Error as exc:  # the writer's autocheckpoint still runs
                    log.warning("background checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    # ------------------------------------------------------------ reading

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (sees committed data only).

        Reading stays possible after ``close`` (a fresh connection is opened), so a closed
        kernel's log can still be inspected; only writing ends with ``close``.
        """
        got = getattr(self._local, "conn", None)
        if got is None or got[0] != self._generation:
            conn = _connect(str(self.path), readonly=True)
            self._local.conn = (self._generation, conn)
            with self._readers_lock:
                for gone in [t for t in self._readers if not t.is_alive()]:
                    self._readers.pop(gone).close()
                self._readers[threading.current_thread()] = conn
            return conn
        return got[1]

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Finish every queued write, stop the writer and close all connections."""
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._urgent.set()
        self._thread.join()
        if self._checkpointer is not None:
            self._checkpoint_due.set()
            self._checkpointer.join()
        with self._readers_lock:
            self._generation += 1  # every thread opens a new reader next time
            for c in self._readers.values():
                c.close()
            self._readers.clear()
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_After = list[tuple[asyncio.AbstractEventLoop, Callable[..., Any], tuple[Any, ...]]]


def _resolve(done: list[tuple[_Req, Any, BaseException | None]], after: _After) -> None:
    """Resolve futures: one loop callback per event loop (with the participants' ``after``
    calls for that loop), thread futures directly."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
    calls: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., Any], tuple[Any, ...]]]] = {}
    for loop, fn, args in after:
        calls.setdefault(loop, []).append((fn, args))
    for req, res, exc in done:
        if req.fut is None:  # posted: nobody waits
            if exc is not None:
                log.error("an asynchronously committed store operation failed: %r", exc)
        elif req.loop is None:
            if exc is None:
                req.fut.set_result(res)
            else:
                req.fut.set_exception(exc)
        else:
            by_loop.setdefault(req.loop, []).append((req.fut, res, exc))
    for loop in by_loop.keys() | calls.keys():
        try:
            loop.call_soon_threadsafe(_settle, by_loop.get(loop, ()), calls.get(loop, ()))
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(items: Any, calls: Any) -> None:
    for fut, res, exc in items:
        if fut.cancelled():
            continue
        if exc is None:
            fut.set_result(res)
        else:
            fut.set_exception(exc)
    for fn, args in calls:
        try:
            fn(*args)
        except Exception:  # one listener's bug must not keep the others from hearing
            log.exception("an after-commit callback failed")
