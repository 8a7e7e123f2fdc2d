"""Episodic memory: per-owner private records with embeddings, in SQLite.

Rules:

* Every operation names an ``owner`` (the kernel derives it from the calling agent; an
  agent never chooses it). A query, delete or replace only ever sees the owner's own rows:
  another owner's record id behaves exactly like an id that does not exist.
* A record is content (bounded by ``max_record_bytes``), a category (fact, observation,
  decision, preference), JSON metadata (bounded) and the embedding of the content.
* ``store(..., replaces=ID)`` deletes the old record and inserts the new one in one
  transaction: afterwards exactly one of them exists; if the insert is refused (a limit,
  an unknown id) the old record is untouched.
* An owner holds at most ``max_records`` records; a store beyond that is refused with
  ``limit_exceeded`` (a replace does not grow the count).
* Search is cosine similarity by numpy brute force over the owner's vectors (unit rows,
  so a matrix-vector product, computed single-threaded with einsum), cached per owner and
  dropped on that owner's next write. It is exact up to ``exact_limit`` (20,000) records;
  above, a binary prefilter (Hamming distance of mean-centred sign bits) picks
  ``rerank_pool`` (2,000) candidates which are then scored exactly — returned scores are
  always exact cosines; recall against exact search is measured by bench/memory.py.

Storage: tables ``memories`` and ``memory_versions`` of the kernel's one database
(``store/schema.py``, v6). Every write is an operation of the database's single writer (it
returns once its commit is durable; a refused one rolls back alone); reads use the calling
thread's read connection and never wait for the writer. A write also bumps the owner's row in
``memory_versions``, and a query reads that version and the records in ONE read transaction,
so a cached index is used only when it is the snapshot's own (a query never sees half a
replace). Thread-safe; embedding happens before the write is queued.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from agentix.core.errors import InvalidRequest, LimitExceeded, NotFound
from agentix.core.taint import cap_labels
from agentix.memory.embed import Embedder
from agentix.store.db import Database, Txn

if TYPE_CHECKING:  # numpy loads on first use (memory calls), not with the kernel
    import numpy as np

__all__ = ["CATEGORIES", "Category", "MemoryLimits", "MemoryStore"]

Category = Literal["fact", "observation", "decision", "preference"]
CATEGORIES: tuple[str, ...] = get_args(Category)
MAX_K = 50

@dataclass(frozen=True)
class MemoryLimits:
    max_records: int = 10_000        # per owner
    max_record_bytes: int = 16_384   # content, UTF-8
    max_metadata_bytes: int = 4_096  # metadata, as JSON


@dataclass
class _Index:
    ids: list[str]
    cats: np.ndarray  # int8 index into CATEGORIES
    mat: np.ndarray   # (n, dim) float32, unit rows
    mean: np.ndarray | None = None   # for the binary prefilter (large owners only)
    bits: np.ndarray | None = None   # (n, dim/64) uint64: sign bits of the mean-centred rows

    def prefilter(self) -> tuple[np.ndarray, np.ndarray]:
        if self.bits is None or self.mean is None:
            self.mean = self.mat.mean(axis=0)
            self.bits = _signs(self.mat - self.mean)
        return self.mean, self.bits


def _signs(m: np.ndarray) -> np.ndarray:
    """Sign bits of each row, packed into uint64 words (the row length padded to 64 bits)."""
    import numpy as np

    m = np.atleast_2d(m)
    pad = (-m.shape[1]) % 64
    if pad:
        m = np.pad(m, ((0, 0), (0, pad)))
    return np.packbits(m > 0, axis=1).view(np.uint64)


def _bump_in(txn: Txn, owner: str) -> None:
    """One more write for ``owner`` (in the write's own transaction)."""
    txn.conn.execute("INSERT INTO memory_versions (owner, version) VALUES (?, 1) "
                     "ON CONFLICT(owner) DO UPDATE SET version = version + 1", (owner,))


def _version(conn: sqlite3.Connection, owner: str) -> int:
    row = conn.execute("SELECT version FROM memory_versions WHERE owner=?", (owner,)).fetchone()
    return 0 if row is None else int(row[0])


class MemoryStore:
    """Episodic memory over the kernel's ``Database`` (see the module rules). Methods block
    (they wait for a durable commit, or read): call them from a thread."""

    def __init__(self, db: Database, embedder: Embedder, *,
                 limits: MemoryLimits | None = None, clock: Callable[[], float] = time.time,
                 cached_owners: int = 32, exact_limit: int = 20_000, rerank_pool: int = 2_000) -> None:
        self.db = db
        self.embedder = embedder
        self.exact_limit = exact_limit   # owners with more records use the binary prefilter
        self.rerank_pool = rerank_pool   # candidates re-scored exactly after the prefilter
        self.limits = limits or MemoryLimits()
        self._clock = clock
        self._lock = threading.Lock()    # guards the cache only; never held across I/O waits
        self._cache: OrderedDict[str, tuple[int, _Index]] = OrderedDict()  # owner -> (version, index)
        self._cached_owners = cached_owners

    # ---------------------------------------------------------------- checks
    def _check(self, content: str, category: str, metadata: dict[str, Any] | None) -> str:
        if not isinstance(content, str) or not content.strip():
            raise InvalidRequest("memory content must be a non-empty string", field="content")
        size = len(content.encode())
        if size > self.limits.max_record_bytes:
            raise LimitExceeded(
                f"memory content is {size} bytes; the limit is {self.limits.max_record_bytes}. "
                "Store a shorter, distilled version.", field="content", limit=self.limits.max_record_bytes)
        if category not in CATEGORIES:
            raise InvalidRequest(f"category must be one of {', '.join(CATEGORIES)}; got {category!r}",
                                 field="category")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidRequest("metadata must be an object", field="metadata")
        meta = json.dumps(metadata or {}, sort_keys=True, ensure_ascii=False)
        if len(meta.encode()) > self.limits.max_metadata_bytes:
            raise LimitExceeded(f"metadata is {len(meta.encode())} bytes as JSON; the limit is "
                                f"{self.limits.max_metadata_bytes}", field="metadata",
                                limit=self.limits.max_metadata_bytes)
        return meta

    # ---------------------------------------------------------------- writes
    def store(self, owner: str, content: str, category: str = "fact", *,
              metadata: dict[str, Any] | None = None, replaces: str | None = None,
              embedding: np.ndarray | None = None, max_records: int | None = None,
              taint: Iterable[str] = ()) -> dict[str, Any]:
        """Insert a record (optionally replacing one of the owner's, atomically); return it.
        ``taint``: the labels of the context that stores it (a query hands them on)."""
        import numpy as np

        meta = self._check(content, category, metadata)
        vec = self.embedder.embed_passages([content])[0] if embedding is None else np.asarray(embedding, np.float32)
        return self._insert_many(owner, [(content, category, meta, vec, _labels(taint))], replaces=replaces,
                                 max_records=max_records)[0]

    def store_many(self, owner: str, items: list[tuple[str, str, dict[str, Any] | None]], *,
                   embeddings: np.ndarray | None = None, max_records: int | None = None,
                   taints: list[Iterable[str]] | None = None) -> list[dict[str, Any]]:
        """Insert several records in one transaction (all or none); ``taints``: each one's labels."""
        import numpy as np

        metas = [self._check(c, cat, m) for c, cat, m in items]
        vecs = self.embedder.embed_passages([c for c, _, _ in items]) if embeddings is None else embeddings
        labels = [_labels(t) for t in taints] if taints is not None else [_labels(())] * len(items)
        rows = [(c, cat, meta, np.asarray(v, np.float32), lab)
                for (c, cat, _), meta, v, lab in zip(items, metas, vecs, labels)]
        return self._insert_many(owner, rows, replaces=None, max_records=max_records)

    def _insert_many(self, owner: str, rows: list[tuple[str, str, str, np.ndarray, str]], *,
                     replaces: str | None, max_records: int | None) -> list[dict[str, Any]]:
        import numpy as np

        cap = self.limits.max_records if max_records is None else min(max_records, self.limits.max_records)
        now = self._clock()
        name = self.embedder.name
        prepared = []
        for content, category, meta, vec, labels in rows:
            vec = np.asarray(vec, np.float32).reshape(-1)
            prepared.append(("mem_" + secrets.token_hex(8), content, category, meta, vec, labels))

        def op(txn: Txn) -> list[dict[str, Any]]:
            db = txn.conn
            if replaces is not None:
                cur = db.execute("DELETE FROM memories WHERE id=? AND owner=?", (replaces, owner))
                if cur.rowcount != 1:
                    raise NotFound(f"no memory {replaces!r} to replace (memory_query lists yours)",
                                   field="replaces", id=replaces)
            (count,) = db.execute("SELECT COUNT(*) FROM memories WHERE owner=?", (owner,)).fetchone()
            if count + len(prepared) > cap:
                raise LimitExceeded(
                    f"this agent holds {count} memories; the limit is {cap}. Delete or replace "
                    "old ones (memory_delete, or memory_store with replaces).",
                    limit=cap, count=count)
            db.executemany(
                "INSERT INTO memories (id, owner, category, content, metadata, embedder, dim,"
                " embedding, created_at, replaced, taint) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(rid, owner, category, content, meta, name, int(vec.shape[0]), vec.tobytes(), now,
                  replaces, labels) for rid, content, category, meta, vec, labels in prepared])
            _bump_in(txn, owner)
            return [{"id": rid, "category": category, "content": content,
                     "metadata": json.loads(meta), "created_at": now, "replaced": replaces,
                     "taint": json.loads(labels)}
                    for rid, content, category, meta, _, labels in prepared]

        out = self.db.submit(op).result()
        self._forget(owner)
        return out

    def delete(self, owner: str, record_id: str) -> dict[str, Any]:
        def op(txn: Txn) -> None:
            cur = txn.conn.execute("DELETE FROM memories WHERE id=? AND owner=?", (record_id, owner))
            if cur.rowcount != 1:
                raise NotFound(f"no memory {record_id!r} (memory_query lists yours)", field="id",
                               id=record_id)
            _bump_in(txn, owner)

        self.db.submit(op).result()
        self._forget(owner)
        return {"deleted": record_id}

    def _forget(self, owner: str) -> None:
        """Drop the owner's cached index after a write (only to free it sooner: a stale
        index is never used, its version no longer matches)."""
        with self._lock:
            self._cache.pop(owner, None)

    # ---------------------------------------------------------------- snapshots
    def export(self, owner: str) -> list[dict[str, Any]]:
        """The owner's records for a snapshot, oldest first: content, category, metadata and
        the embedding (base64 float32, with the embedder's name); no ids or times."""
        rows = self.db.reader().execute(
            "SELECT category, content, metadata, embedder, embedding, taint FROM memories WHERE owner=? "
            "ORDER BY created_at, rowid", (owner,)).fetchall()
        return [{"category": c, "content": t, "metadata": json.loads(m), "embedder": e,
                 "embedding": base64.b64encode(v).decode(), "taint": json.loads(lab)}
                for c, t, m, e, v, lab in rows]

    def import_records(self, owner: str, records: list[dict[str, Any]], *,
                       max_records: int | None = None, taint: Iterable[str] = ()) -> int:
        """Insert exported records for ``owner`` in one transaction (all or none), each with
        its recorded labels plus ``taint``. Embeddings are used as exported only when every one
        was made by this embedder and is a finite unit-length vector of its size (a snapshot may
        come from anyone); otherwise all are computed again with this one."""
        if not records:
            return 0
        items = [(str(r["content"]), str(r["category"]), r.get("metadata") or None) for r in records]
        extra = list(taint)
        taints = [[*_recorded_labels(r.get("taint")), *extra] for r in records]
        vecs = _usable_embeddings(records, self.embedder.name, self.embedder.dim)
        return len(self.store_many(owner, items, embeddings=vecs, max_records=max_records, taints=taints))

    def delete_owner(self, owner: str) -> int:
        def op(txn: Txn) -> int:
            n = txn.conn.execute("DELETE FROM memories WHERE owner=?", (owner,)).rowcount
            _bump_in(txn, owner)
            return int(n)

        n = self.db.submit(op).result()
        self._forget(owner)
        return n

    # ---------------------------------------------------------------- reads
    def count(self, owner: str) -> int:
        return int(self.db.reader().execute("SELECT COUNT(*) FROM memories WHERE owner=?",
                                            (owner,)).fetchone()[0])

    def _index(self, conn: sqlite3.Connection, owner: str) -> _Index:
        """The owner's vectors as of ``conn``'s open read transaction."""
        import numpy as np

        version = _version(conn, owner)
        with self._lock:
            got = self._cache.get(owner)
            if got is not None and got[0] == version:
                self._cache.move_to_end(owner)
                return got[1]
        rows = conn.execute(
            "SELECT id, category, embedding FROM memories WHERE owner=? AND embedder=? ORDER BY created_at, id",
            (owner, self.embedder.name)).fetchall()
        if rows:
            mat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        else:
            mat = np.zeros((0, max(self.embedder.dim, 1)), dtype=np.float32)
        cats = np.fromiter((CATEGORIES.index(r[1]) for r in rows), dtype=np.int8, count=len(rows))
        idx = _Index([r[0] for r in rows], cats, mat)
        with self._lock:
            got = self._cache.get(owner)
            if got is None or got[0] <= version:  # never replace a newer snapshot's index
                self._cache[owner] = (version, idx)
                self._cache.move_to_end(owner)
            while len(self._cache) > self._cached_owners:
                self._cache.popitem(last=False)
        return idx

    def query(self, owner: str, text: str, k: int = 5, *, category: str | None = None,
              min_score: float | None = None, embedding: np.ndarray | None = None) -> list[dict[str, Any]]:
        """The owner's ``k`` records most similar to ``text``, best first, with their scores."""
        import numpy as np

        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("query must be a non-empty string", field="query")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise InvalidRequest(f"k must be an integer from 1 to {MAX_K}", field="k")
        if category is not None and category not in CATEGORIES:
            raise InvalidRequest(f"category must be one of {', '.join(CATEGORIES)}", field="category")
        q = self.embedder.embed_query(text) if embedding is None else np.asarray(embedding, np.float32)
        conn = self.db.reader()
        conn.execute("BEGIN")  # one snapshot: the version, the vectors and the rows agree
        try:
            idx = self._index(conn, owner)
            hits = self._search(idx, q, k, category, min_score)
            if not hits:
                return []
            ids = [idx.ids[i] for i, _ in hits]
            marks = ",".join("?" * len(ids))
            # "+owner": look rows up by primary key, then check the owner (the owner index would scan)
            rows = {r[0]: r for r in conn.execute(
                f"SELECT id, category, content, metadata, created_at, taint FROM memories "
                f"WHERE id IN ({marks}) AND +owner=?", (*ids, owner))}
        finally:
            conn.execute("COMMIT")
        out = []
        for (i, score) in hits:
            r = rows.get(idx.ids[i])
            if r is None:
                continue
            out.append({"id": r[0], "category": r[1], "content": r[2], "metadata": json.loads(r[3]),
                        "created_at": r[4], "score": round(float(score), 4), "taint": json.loads(r[5])})
        return out

    def _search(self, idx: _Index, q: np.ndarray, k: int, category: str | None,
                min_score: float | None) -> list[tuple[int, float]]:
        import numpy as np

        n = len(idx.ids)
        if n == 0:
            return []
        q = np.ascontiguousarray(q, dtype=np.float32)
        if n > self.exact_limit and n > self.rerank_pool:
            # binary prefilter: Hamming distance of mean-centred sign bits, then exact cosine
            # over the best ``rerank_pool`` candidates (bench/memory.py reports its recall)
            mean, bits = idx.prefilter()
            ham = np.bitwise_count(bits ^ _signs(q - mean)).sum(axis=1, dtype=np.int32)
            if category is not None:
                ham = np.where(idx.cats == CATEGORIES.index(category), ham, np.iinfo(np.int32).max)
            cand = np.argpartition(ham, self.rerank_pool - 1)[:self.rerank_pool]
            scores = np.einsum("ij,j->i", idx.mat[cand], q)
            if category is not None:
                scores = np.where(idx.cats[cand] == CATEGORIES.index(category), scores, -np.inf)
            kk = min(k, len(cand))
            top = np.argpartition(-scores, kk - 1)[:kk]
            top = top[np.argsort(-scores[top], kind="stable")]
            return [(int(cand[i]), float(scores[i])) for i in top
                    if np.isfinite(scores[i]) and (min_score is None or scores[i] >= min_score)]
        # einsum, not BLAS: OpenBLAS hands a matrix-vector product to worker threads that spin,
        # which on a busy 2-core machine costs a scheduler tick (measured: 44 ms vs 0.7 ms at 10k)
        scores = np.einsum("ij,j->i", idx.mat, q)
        if category is not None:
            scores = np.where(idx.cats == CATEGORIES.index(category), scores, -np.inf)
        kk = min(k, n)
        top = np.argpartition(-scores, kk - 1)[:kk] if kk < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top
                if np.isfinite(scores[i]) and (min_score is None or scores[i] >= min_score)]


def _labels(taint: Iterable[str]) -> str:
    """A record's labels as stored: a sorted JSON list of strings, capped (``core.taint.
    cap_labels``: at most ``MAX_LABELS``, every source kept)."""
    return json.dumps(cap_labels(taint))


def _recorded_labels(raw: Any) -> list[str]:
    """The labels an exported record carries (a snapshot's; anything but a list of strings is
    refused, never read as clean)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise InvalidRequest("a memory record's taint must be a list of labels", field="memory.taint")
    return raw


def _usable_embeddings(records: list[dict[str, Any]], embedder: str, dim: int) -> Any:
    """The exported embeddings as one ``(n, dim)`` float32 array; None (compute them again)
    unless each names ``embedder`` and is base64 of ``dim`` finite floats of norm ~1 (untrusted).
    ``dim`` 0 (a remote embedder's, unknown until its first call): all of one length will do."""
    import binascii

    import numpy as np
    if not all(r.get("embedder") == embedder and isinstance(r.get("embedding"), str) for r in records):
        return None
    try:
        raw = [base64.b64decode(r["embedding"], validate=True) for r in records]
    except (binascii.Error, ValueError):
        return None
    size = 4 * dim or len(raw[0])  # dim 0: the first one's, and every other one's too
    if not size or size % 4 or any(len(b) != size for b in raw):
        return None
    vecs = np.stack([np.frombuffer(b, np.float32) for b in raw])
    if not np.isfinite(vecs).all() or not np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3):
        return None
    return vecs
