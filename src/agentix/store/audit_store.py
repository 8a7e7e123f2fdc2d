"""The durable audit log: appends through the group-commit writer, proofs, verification.
(Over 400 lines: one log: its writer-side state, proofs, verification and the kernel's sink
share the same private state.)

``AuditLog.append`` resolves only after the entry is durably committed; seqs are assigned by
the writer thread in commit order, so the chain is exactly the order of acknowledgement.
Appends can also join another write atomically: inside an operation call
``log.append_in(txn, kind, agent, data, taint)``.

``verify_proof(proof, public_key)`` checks an inclusion proof offline with only the kernel's
public key (``agentix audit check-proof``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentix.core import events as ev
from agentix.core.audit import (  # noqa: F401  (verify_proof/verify_consistency re-exported)
    ENTRY_VERSION,
    GENESIS_HASH,
    PROOF_VERSION,
    ChainVerifier,
    Entry,
    SignedHead,
    StoredRecord,
    VerifyReport,
    entry_body,
    entry_hash,
    format_ts,
    normalise_taint,
    public_key_bytes,
    sign_head,
    verify_consistency,
    verify_proof,
)
from agentix.core.canonical import canonical_json
from agentix.core.errors import InvalidRequest, NotFound, StateError
from agentix.core.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_path,
    leaf_hash,
    tree_root,
)
from agentix.store.db import Database, Txn

__all__ = [
    "AuditEvents",
    "AuditLog",
    "verify_consistency",
    "verify_jsonl",
    "verify_proof",
]

log = logging.getLogger(__name__)
_dumps = orjson.dumps



@dataclass
class _State:
    next_seq: int
    prev_hash: bytes
    last_ts: str
    tree: CompactRange
    pending: list[Entry]  # appended in this transaction, to publish after commit
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # entry rows not yet inserted
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)  # Merkle rows


class _TsFormatter:
    """``format_ts`` with the per-second prefix cached (it is on the append path)."""

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, t: float) -> str:
        sec = int(t // 1)
        us = int(round((t - sec) * 1_000_000))
        if us >= 1_000_000:
            sec, us = sec + 1, us - 1_000_000
        if sec != self._sec:
            self._sec = sec
            self._prefix = format_ts(sec)[:19]
        return f"{self._prefix}.{us:06d}Z"


class _Subscriber:
    def __init__(self, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        self.maxsize = maxsize
        self.loop = loop
        self.q: collections.deque[Entry] = collections.deque()
        self.missed = 0
        self.wake = asyncio.Event()

    def push(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            # once an entry is dropped, drop until the reader has had the lag notice, so
            # the notice sits exactly where the gap is
            if self.missed or len(self.q) >= self.maxsize:
                self.missed += 1
            else:
                self.q.append(e)
        self.wake.set()


class AuditLog:
    """The audit log in ``db``; ``clock`` gives wall time (epoch seconds) for timestamps."""

    def __init__(
        self,
        db: Database,
        *,
        signing_key: Ed25519PrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.clock = clock
        self.signing_key = signing_key
        self.public_key = public_key_bytes(signing_key) if signing_key else None
        self._subs: list[_Subscriber] = []
        self._fmt = _TsFormatter()
        #: the head last signed for a proof: proofs at the same size and root share it
        self._proof_head: tuple[int, bytes, SignedHead] | None = None
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self._st = self._load()
        self._committed_next = self._st.next_seq
        db.add_participant(self)

    # ------------------------------------------------------------ writer-side state

    def _load(self) -> _State:
        r = self.db.reader()
        row = r.execute(
            "SELECT seq, hash, ts FROM audit_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return _State(1, GENESIS_HASH, "", CompactRange(), [])
        n = row[0]  # seqs count from 1: the last seq is the size
        tree = CompactRange.from_getter(self._getter(r), n)
        return _State(n + 1, row[1], row[2], tree, [])

    def snapshot(self) -> Any:
        s = self._st
        return (s.next_seq, s.prev_hash, s.last_ts, s.tree.copy(), len(s.pending),
                len(s.rows), len(s.nodes))

    def restore(self, snap: Any) -> None:
        s = self._st
        s.next_seq, s.prev_hash, s.last_ts, s.tree, n, r, k = snap
        del s.pending[n:]
        del s.rows[r:]
        del s.nodes[k:]

    def before_commit(self, txn: Txn) -> None:
        """Insert the transaction's entries and Merkle nodes in two statements."""
        s = self._st
        if s.rows:
            txn.conn.executemany(
                "INSERT INTO audit_entries (seq, ts, agent, kind, body, prev_hash, hash) "
                "VALUES (?,?,?,?,?,?,?)", s.rows)
            s.rows = []
        if s.nodes:
            txn.conn.executemany(
                "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?,?,?)", s.nodes)
            s.nodes = []

    def committed(self) -> None:
        if self._st.next_seq != self._committed_next:
            self._committed_next = self._st.next_seq
            for loop, fn in self._listeners:
                self.db.call_after_commit(loop, fn)
        pending = self._st.pending
        if not pending:
            return
        self._st.pending = []
        subs = self._subs
        if not subs:
            return
        for loop in {s.loop for s in subs}:
            self.db.call_after_commit(loop, self._publish, loop, pending)

    def _publish(self, loop: asyncio.AbstractEventLoop, entries: list[Entry]) -> None:
        for s in self._subs:
            if s.loop is loop:
                s.push(entries)

    # ------------------------------------------------------------ appending

    def append_in(
        self,
        txn: Txn,
        kind: str,
        agent_id: str | None,
        data: dict[str, Any],
        taint: Iterable[str] = (),
        *,
        _data_bytes: bytes | None = None,
        _labels: tuple[str, ...] | None = None,
    ) -> Entry:
        """Append inside a writer operation (atomic with the operation's other writes).

        The row is inserted when the transaction commits (``before_commit``), so SQL in
        the same transaction does not see it yet.
        """
        st = self._st
        seq = st.next_seq
        ts = self._fmt(self.clock())
        if ts < st.last_ts:  # the wall clock stepped back: keep timestamps monotonic
            ts = st.last_ts
        labels = normalise_taint(taint) if _labels is None else _labels
        if _data_bytes is None:
            body = entry_body(seq, ts, agent_id, kind, data, labels)
        else:
            body = _splice_body(seq, ts, agent_id, kind, _data_bytes, labels)
        h = entry_hash(st.prev_hash, body)
        st.rows.append((seq, ts, agent_id, kind, body, st.prev_hash, h))
        made = st.tree.append(leaf_hash(h))
        if made:
            st.nodes.extend(made)
        e = Entry(seq, ts, agent_id, kind, data, labels, st.prev_hash, h)
        st.next_seq = seq + 1
        st.prev_hash = h
        st.last_ts = ts
        if self._subs:
            st.pending.append(e)
        return e

    async def append(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: Iterable[str] = (),
        *, _data_bytes: bytes | None = None,
    ) -> Entry:
        """Append one entry; returns it once it is durable (seq and hash assigned)."""
        return await self.db.write(self._append_op(kind, agent_id, data, taint, _data_bytes))

    def post(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: Iterable[str] = (),
        *, _data_bytes: bytes | None = None,
    ) -> None:
        """Append one entry without waiting for its commit (``Database.post``): it gets its
        seq and hash in queue order like ``append`` and is committed by the next group
        commit, within the database's commit window (``on_commit`` listeners hear of it)."""
        self.db.post(self._append_op(kind, agent_id, data, taint, _data_bytes))

    def on_commit(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
        """Call ``fn`` on ``loop`` after every commit that added entries."""
        self._listeners.append((loop, fn))

    def _append_op(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: Iterable[str],
        data_bytes: bytes | None = None,
    ) -> Callable[[Txn], Entry]:
        if type(kind) is not str or not kind:
            raise InvalidRequest("audit kind must be a non-empty string")
        if type(data) is not dict:
            raise InvalidRequest("audit data must be a JSON object")
        if data_bytes is None:
            data_bytes = canonical_json(data)  # validate and encode outside the writer
        labels = normalise_taint(taint)
        return lambda txn: self.append_in(txn, kind, agent_id, data, labels,
                                          _data_bytes=data_bytes, _labels=labels)

    # ------------------------------------------------------------ reading

    @staticmethod
    def _getter(conn: sqlite3.Connection) -> Callable[[int, int], bytes]:
        def get(level: int, idx: int) -> bytes:
            if level == 0:  # leaf idx is entry seq idx + 1
                row = conn.execute("SELECT hash FROM audit_entries WHERE seq=?",
                                   (idx + 1,)).fetchone()
                if row is None:
                    raise StateError("audit store is missing an entry", seq=idx + 1)
                return leaf_hash(row[0])
            row = conn.execute(
                "SELECT hash FROM merkle_nodes WHERE level=? AND idx=?", (level, idx)
            ).fetchone()
            if row is None:
                raise StateError("audit store is missing a Merkle node", level=level, idx=idx)
            return row[0]

        return get

    @property
    def committed_size(self) -> int:
        """Entries committed to the database (the writer's view, no query)."""
        return self._committed_next - 1

    @property
    def appended_size(self) -> int:
        """Entries appended, committed or waiting for the next group commit."""
        return self._st.next_seq - 1

    def size(self) -> int:
        row = self.db.reader().execute("SELECT max(seq) FROM audit_entries").fetchone()
        return 0 if row[0] is None else row[0]

    def root(self, size: int | None = None) -> tuple[int, bytes]:
        r = self.db.reader()
        r.execute("BEGIN")
        try:
            n = self.size() if size is None else size
            return n, tree_root(self._getter(r), n)
        finally:
            r.execute("COMMIT")

    def entry(self, seq: int) -> Entry:
        row = self.db.reader().execute(
            "SELECT body, prev_hash, hash FROM audit_entries WHERE seq=?", (seq,)
        ).fetchone()
        if row is None:
            raise NotFound("no audit entry with that seq", seq=seq)
        return Entry.from_body(*row)

    def tail(
        self,
        after_seq: int | None = None,
        agent: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        *,
        prefix: bool = False,
    ) -> list[Entry]:
        """Entries in seq order: the first ``limit`` after ``after_seq``, or else the last
        ``limit``. With ``prefix``, ``kind`` also matches its dotted sub-kinds
        (``agent`` matches ``agent.spawned``)."""
        where: list[str] = []
        args: list[Any] = []
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if kind is not None and prefix:
            where.append("(kind = ? OR (kind >= ? AND kind < ?))")
            args += [kind, kind + ".", kind + "/"]  # '/' sorts right after '.'
        elif kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if after_seq is not None:
            where.append("seq > ?")
            args.append(after_seq)
        sql = "SELECT body, prev_hash, hash FROM audit_entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if after_seq is None:
            sql += " ORDER BY seq DESC LIMIT ?"
        else:
            sql += " ORDER BY seq ASC LIMIT ?"
        rows = self.db.reader().execute(sql, (*args, limit)).fetchall()
        if after_seq is None:
            rows.reverse()
        return [Entry.from_body(*r) for r in rows]

    def records(self, conn: sqlite3.Connection | None = None) -> Iterator[StoredRecord]:
        """Every stored record in seq order (for verification)."""
        for row in _rows(conn or self.db.reader()):
            yield StoredRecord(*row, True)

    def heads(self) -> list[SignedHead]:
        rows = self.db.reader().execute(
            "SELECT size, root, timestamp, key_id, signature FROM signed_heads ORDER BY size"
        ).fetchall()
        return [SignedHead(*r) for r in rows]

    def verify(
        self,
        *,
        public_key: bytes | None = None,
        trusted_heads: Sequence[SignedHead] = (),
    ) -> VerifyReport:
        """Verify the whole chain against every stored and given signed head.

        Heads are trusted only if they verify with ``public_key`` (default: this kernel's).
        Without any key, stored heads are still used for truncation and root checks.
        """
        pk = public_key or self.public_key
        conn = self.db.reader()
        conn.execute("BEGIN")  # one snapshot for heads and entries
        try:
            heads = [*self.heads(), *trusted_heads]
            return _verify_rows(_rows(conn), heads, pk)
        finally:
            conn.execute("COMMIT")

    def export_jsonl(self, fileobj: IO[bytes]) -> int:
        """Write every entry as one JSON object per line; returns how many."""
        return _export(self.db.reader(), fileobj)

    # ------------------------------------------------------------ heads and proofs

    async def head(self, sign: bool = True) -> dict[str, Any]:
        """The current tree head; signed (and stored) if asked and a key is configured."""
        n, root = self.root()
        if not sign:
            return {"size": n, "root": root.hex()}
        if self.signing_key is None:
            raise StateError("no signing key is configured for the audit log")
        h = sign_head(self.signing_key, n, root, format_ts(self.clock()))

        def store(txn: Txn) -> None:
            txn.conn.execute(
                "INSERT OR IGNORE INTO signed_heads (size, root, timestamp, key_id, signature) "
                "VALUES (?,?,?,?,?)",
                (h.size, h.root, h.timestamp, h.key_id, h.signature),
            )

        await self.db.write(store)
        return h.to_json()

    def prove(self, seq: int, size: int | None = None) -> dict[str, Any]:
        """An inclusion proof of entry ``seq`` with a head signed over the current size."""
        if self.signing_key is None:
            raise StateError("no signing key is configured for the audit log")
        conn = self.db.reader()
        conn.execute("BEGIN")
        try:
            n = self.size() if size is None else size
            if not 1 <= seq <= n:
                raise NotFound("no audit entry with that seq in the tree", seq=seq, size=n)
            get = self._getter(conn)
            path = inclusion_path(get, seq - 1, n)
            root = tree_root(get, n)
            e = self.entry(seq)
        finally:
            conn.execute("COMMIT")
        cached = self._proof_head
        if cached is not None and cached[0] == n and cached[1] == root:
            h = cached[2]  # signing costs more than the proof itself
        else:
            h = sign_head(self.signing_key, n, root, format_ts(self.clock()))
            self._proof_head = (n, root, h)
        return {
            "version": PROOF_VERSION,
            "entry": e.to_json(),
            "leaf_index": seq - 1,
            "tree_size": n,
            "path": [p.hex() for p in path],
            "head": h.to_json(),
        }

    def consistency(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        """RFC 6962 consistency proof that the tree of ``new_size`` extends ``old_size``."""
        conn = self.db.reader()
        conn.execute("BEGIN")
        try:
            n = self.size() if new_size is None else new_size
            if not 0 < old_size <= n:
                raise InvalidRequest("need 0 < old_size <= new_size", old_size=old_size,
                                     new_size=n)
            get = self._getter(conn)
            path = consistency_proof(get, old_size, n)
            old_root, new_root = tree_root(get, old_size), tree_root(get, n)
        finally:
            conn.execute("COMMIT")
        return {"old_size": old_size, "new_size": n, "old_root": old_root.hex(),
                "new_root": new_root.hex(), "path": [p.hex() for p in path]}

    # ------------------------------------------------------------ live subscription

    async def subscribe(self, maxsize: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Live entries (export form) as they commit, in seq order.

        At most ``maxsize`` entries wait for a reader; a slow reader gets
        ``{"kind": "lag", "missed": N}`` in place of the N entries it could not hold (read
        them with ``tail(after_seq=...)`` if needed), then live entries again."""
        if maxsize < 1:
            raise InvalidRequest("maxsize must be at least 1")
        sub = _Subscriber(maxsize, asyncio.get_running_loop())
        self._subs.append(sub)
        try:
            while True:
                if sub.q:
                    yield sub.q.popleft().to_json()
                    continue
                if sub.missed:
                    n, sub.missed = sub.missed, 0
                    yield {"kind": ev.LAG, "missed": n}
                    continue
                sub.wake.clear()
                await sub.wake.wait()
        finally:
            self._subs.remove(sub)


_V = str(ENTRY_VERSION).encode()


def _splice_body(
    seq: int, ts: str, agent: str | None, kind: str, data_bytes: bytes, taint: Sequence[str]
) -> bytes:
    """``entry_body`` with ``data`` already canonical (keys are in canonical order)."""
    # agent, kind, ts and the labels are plain strings: orjson writes them canonically
    return b"".join((
        b'{"agent":', _dumps(agent), b',"data":', data_bytes,
        b',"kind":', _dumps(kind), b',"seq":', str(seq).encode(),
        b',"taint":', _dumps(list(taint)), b',"ts":', _dumps(ts),
        b',"v":', _V, b"}",
    ))


def _rows(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    cur = conn.execute(
        "SELECT seq, body, prev_hash, hash, agent, kind FROM audit_entries ORDER BY seq")
    while True:
        rows = cur.fetchmany(8192)
        if not rows:
            return
        yield from rows


def _verify_rows(
    rows: Iterable[tuple[Any, ...]], heads: Sequence[SignedHead], public_key: bytes | None
) -> VerifyReport:
    v = ChainVerifier(heads, public_key)
    v.feed_rows(rows)
    return v.finish()


def _export(conn: sqlite3.Connection, fileobj: IO[bytes]) -> int:
    conn.execute("BEGIN")
    try:
        n = 0
        for _seq, body, prev, h, _agent, _kind in _rows(conn):
            e = Entry.from_body(body, prev, h)
            fileobj.write(canonical_json(e.to_json()) + b"\n")
            n += 1
        return n
    finally:
        conn.execute("COMMIT")


def verify_jsonl(
    lines: Iterable[bytes | str],
    heads: Sequence[SignedHead] = (),
    public_key: bytes | None = None,
) -> VerifyReport:
    """Verify a JSONL export (bodies are recomputed canonically from each line)."""
    v = ChainVerifier(heads, public_key)
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = StoredRecord.from_export(canonical_loads_obj(line))
        except InvalidRequest as exc:
            v._set(v.count, "malformed", exc.message)  # noqa: SLF001
            break
        v.feed(rec)
    return v.finish()


def canonical_loads_obj(line: bytes | str) -> dict[str, Any]:
    import orjson

    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("line is not JSON", reason=str(exc)) from None
    if type(d) is not dict:
        raise InvalidRequest("line is not a JSON object")
    return d


def _noop(txn: Txn) -> None:
    return None


class AuditEvents:
    """The kernel's event sink over the audit log.

    ``await record(kind, agent_id, data, taint)`` appends and returns once durable;
    ``tail``/``wait_for_new`` serve ``events.tail``/``audit.tail`` (entries in export form,
    ``kind`` matches exactly or as a dotted prefix); ``close`` marks a clean shutdown and
    closes the database.
    """

    def __init__(self, log_: AuditLog) -> None:
        self.log = log_
        self._waiters: set[asyncio.Event] = set()
        self._listening: asyncio.AbstractEventLoop | None = None

    async def record(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: Iterable[str] = (),
        *, durable: bool = True,
    ) -> Entry | None:
        """Append an event. ``durable=True`` returns the entry once its commit is durable;
        ``durable=False`` (a call with no effect outside the kernel) returns None at once
        and the entry is committed by the next group commit (docs/audit.md, "What a kill -9
        can lose")."""
        data_bytes: bytes | None
        try:
            data_bytes = canonical_json(data) if type(data) is dict else None
        except InvalidRequest:
            data_bytes = None
            # a kernel bug put a non-JSON value (a Path, a set, NaN ...) in an event: record
            # it stringified rather than lose the event, and say so in the debug log
            log.warning("audit %s: data is not canonical JSON; recording it stringified", kind)
            data = orjson.loads(orjson.dumps(data, default=repr,
                                             option=orjson.OPT_NON_STR_KEYS))
            data = {"_coerced": True, **data} if isinstance(data, dict) else {"_coerced": data}
            try:
                canonical_json(data)
            except InvalidRequest:
                data = {"_coerced": repr(data)[:10_000]}
        if not durable:
            if self._listening is None:  # wake tail readers when posted records commit
                self._listening = asyncio.get_running_loop()
                self.log.on_commit(self._listening, self._wake)
            self.log.post(kind, agent_id, data, taint, _data_bytes=data_bytes)
            return None
        e = await self.log.append(kind, agent_id, data, taint, _data_bytes=data_bytes)
        for w in self._waiters:
            w.set()
        return e

    def _wake(self) -> None:
        for w in self._waiters:
            w.set()

    async def sync(self) -> None:
        """Wait until every record appended so far is committed (read-your-writes for
        ``tail``, ``verify`` and proofs after no-effect calls)."""
        await self.log.db.write(_noop)

    def tail(self, after: int = 0, agent: str | None = None, kind: str | None = None,
             limit: int = 1000) -> list[dict[str, Any]]:
        """The last ``limit`` entries if ``after`` is 0, else the first ``limit`` with
        seq > ``after`` (export form; ``kind`` matches itself and its dotted sub-kinds)."""
        got = self.log.tail(after_seq=after if after > 0 else None, agent=agent, kind=kind,
                            limit=limit, prefix=True)
        return [e.to_json() for e in got]

    async def wait_for_new(self, timeout: float) -> None:
        ev_ = asyncio.Event()
        self._waiters.add(ev_)
        try:
            await asyncio.wait_for(ev_.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiters.discard(ev_)

    async def close(self) -> None:
        from agentix.store.state import KVStore

        kv = KVStore(self.log.db)
        await self.log.db.write(lambda t: kv.set_in(t, "clean_shutdown", True))
        self.log.db.close()
