"""Durable kernel state: agents, issued tokens, invocation counts and revocations, approvals,
and the kernel's own flags (``kv``).

Each store is a small class over the same ``Database``. Writes go through the one writer
(``await store.x(...)`` resolves after the durable commit); every write also exists as an
``x_in(txn, ...)`` function so the kernel can combine it atomically with an audit append::

    def op(txn):
        agents.mark_exited_in(txn, agent_id, "completed", record, ts)
        return audit.append_in(txn, events.AGENT_EXITED, agent_id, record)
    entry = await db.write(op)

Reads use the calling thread's reader connection and see committed data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from agentix.core.errors import NotFound, StateError
from agentix.store.db import Database, Txn

__all__ = [
    "AgentState",
    "AgentStore",
    "ApprovalRecord",
    "ApprovalState",
    "ApprovalStore",
    "IssuedToken",
    "KVStore",
    "RevocationStore",
    "StoredAgent",
    "TokenStore",
]

AgentState = Literal["starting", "running", "paused", "exited"]
ApprovalState = Literal["pending", "granted", "denied", "expired"]
LIVE_STATES: tuple[str, ...] = ("starting", "running", "paused")


def _j(v: Any) -> str:
    return orjson.dumps(v).decode()


def _l(s: str | None) -> Any:
    return None if s is None else orjson.loads(s)


def _replace_in(txn: Txn, table: str, cols: str, values: tuple[Any, ...]) -> None:
    """``INSERT OR REPLACE`` one row of ``table``: ``values`` in the order ``cols`` names them."""
    marks = ",".join("?" * len(values))
    txn.conn.execute(f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})", values)


class _Store:
    """Some tables of the one ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db


# ---------------------------------------------------------------- agents


@dataclass(frozen=True)
class StoredAgent:
    """An agent's row in ``agents``: what outlives the process and the kernel (the live
    process-table entry is ``kernel/process.AgentRecord``; the kernel converts between them)."""

    id: str
    name: str
    parent: str | None
    manifest: dict[str, Any]
    state: AgentState
    persistent: bool
    created_at: str
    pid: int | None = None
    pgid: int | None = None
    exited_at: str | None = None
    exit_reason: str | None = None
    exit_record: dict[str, Any] | None = None
    start_time: int | None = None  # of ``pid``: /proc/<pid>/stat field 22 (clock ticks since boot)


_AGENT_COLS = ("id, name, parent, manifest, state, persistent, created_at, pid, pgid, "
               "exited_at, exit_reason, exit_record, start_time")


def _agent(row: tuple[Any, ...]) -> StoredAgent:
    return StoredAgent(row[0], row[1], row[2], orjson.loads(row[3]), row[4], bool(row[5]),
                       row[6], row[7], row[8], row[9], row[10], _l(row[11]), row[12])


class AgentStore(_Store):
    @staticmethod
    def upsert_in(txn: Txn, a: StoredAgent) -> None:
        _replace_in(txn, "agents", _AGENT_COLS,
                    (a.id, a.name, a.parent, _j(a.manifest), a.state, int(a.persistent), a.created_at,
                     a.pid, a.pgid, a.exited_at, a.exit_reason,
                     None if a.exit_record is None else _j(a.exit_record), a.start_time))

    async def upsert(self, a: StoredAgent) -> None:
        await self.db.write(lambda t: self.upsert_in(t, a))

    @staticmethod
    def mark_exited_in(txn: Txn, agent_id: str, reason: str, record: dict[str, Any],
                       at: str) -> None:
        cur = txn.conn.execute(
            "UPDATE agents SET state='exited', exited_at=?, exit_reason=?, exit_record=? "
            "WHERE id=? AND state != 'exited'", (at, reason, _j(record), agent_id))
        if cur.rowcount != 1:
            raise StateError("no live agent with that id", agent_id=agent_id)

    async def mark_exited(self, agent_id: str, reason: str, record: dict[str, Any],
                          at: str) -> None:
        await self.db.write(lambda t: self.mark_exited_in(t, agent_id, reason, record, at))

    def get(self, agent_id: str) -> StoredAgent:
        row = self.db.reader().execute(
            f"SELECT {_AGENT_COLS} FROM agents WHERE id=?", (agent_id,)).fetchone()
        if row is None:
            raise NotFound("no such agent", agent_id=agent_id)
        return _agent(row)

    def list(self, state: AgentState | None = None) -> list[StoredAgent]:
        if state is None:
            rows = self.db.reader().execute(
                f"SELECT {_AGENT_COLS} FROM agents ORDER BY created_at, id").fetchall()
        else:
            rows = self.db.reader().execute(
                f"SELECT {_AGENT_COLS} FROM agents WHERE state=? ORDER BY created_at, id",
                (state,)).fetchall()
        return [_agent(r) for r in rows]

    def list_live(self) -> list[StoredAgent]:
        """Agents the store believes are starting, running or paused."""
        rows = self.db.reader().execute(
            f"SELECT {_AGENT_COLS} FROM agents WHERE state IN ('starting','running','paused') "
            "ORDER BY created_at, id").fetchall()
        return [_agent(r) for r in rows]


# ---------------------------------------------------------------- tokens and revocations


@dataclass(frozen=True)
class IssuedToken:
    """What the kernel issued: never the token's bytes (they carry the key that appends
    blocks), only who holds it, what it grants and its limits."""

    id: str
    holder: str
    parent_id: str | None
    chain: tuple[str, ...]
    grants: tuple[str, ...]
    issued_at: str
    max_invocations: int | None = None
    expires_at: float | None = None
    #: for a persistent agent's spawn grants: ``root:<name>#<i>:<grants>``, so the next run of
    #: the same agent continues this token's count and revocation
    lineage: str | None = None


_TOKEN_COLS = "id, holder, parent_id, chain, grants, issued_at, max_invocations, expires_at, lineage"


def _issued(r: tuple[Any, ...]) -> IssuedToken:
    return IssuedToken(r[0], r[1], r[2], tuple(orjson.loads(r[3])), tuple(orjson.loads(r[4])),
                       r[5], r[6], r[7], r[8])


class TokenStore(_Store):
    """Issued-token records and their invocation counts (``token_uses``)."""

    @staticmethod
    def put_in(txn: Txn, t: IssuedToken) -> None:
        _replace_in(txn, "issued_tokens", _TOKEN_COLS,
                    (t.id, t.holder, t.parent_id, _j(list(t.chain)), _j(list(t.grants)), t.issued_at,
                     t.max_invocations, t.expires_at, t.lineage))

    def get(self, token_id: str) -> IssuedToken:
        row = self.db.reader().execute(f"SELECT {_TOKEN_COLS} FROM issued_tokens WHERE id=?",
                                       (token_id,)).fetchone()
        if row is None:
            raise NotFound("no such token", token_id=token_id)
        return _issued(row)

    def for_holder(self, holder: str) -> list[IssuedToken]:
        return [_issued(r) for r in self.db.reader().execute(
            f"SELECT {_TOKEN_COLS} FROM issued_tokens WHERE holder=? ORDER BY issued_at, id",
            (holder,))]

    def last_of_lineage(self, lineage: str, *, exclude: str | None = None) -> IssuedToken | None:
        """The latest token of ``lineage`` other than ``exclude``."""
        row = self.db.reader().execute(
            f"SELECT {_TOKEN_COLS} FROM issued_tokens WHERE lineage=? AND id IS NOT ? "
            "ORDER BY issued_at DESC, rowid DESC LIMIT 1", (lineage, exclude)).fetchone()
        return None if row is None else _issued(row)

    def count(self) -> int:
        return int(self.db.reader().execute("SELECT count(*) FROM issued_tokens").fetchone()[0])

    @staticmethod
    def set_used_in(txn: Txn, token_id: str, used: int) -> None:
        """Record ``used`` invocations of ``token_id`` (counts only grow)."""
        txn.conn.execute(
            "INSERT INTO token_uses (token_id, used) VALUES (?,?) ON CONFLICT(token_id) "
            "DO UPDATE SET used=max(used, excluded.used)", (token_id, used))

    def used(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.db.reader().execute(
            "SELECT token_id, used FROM token_uses")}


class RevocationStore(_Store):
    """Revoked token ids; a revocation is permanent."""

    @staticmethod
    def revoke_in(txn: Txn, token_id: str, at: str, reason: str) -> bool:
        cur = txn.conn.execute(
            "INSERT OR IGNORE INTO revocations (token_id, revoked_at, reason) VALUES (?,?,?)",
            (token_id, at, reason))
        return cur.rowcount == 1

    @staticmethod
    def revoke_holders_in(txn: Txn, holders: list[str], at: str, reason: str) -> int:
        """Revoke every token issued to one of ``holders``; how many were newly revoked."""
        n = 0
        for h in holders:
            cur = txn.conn.execute(
                "INSERT OR IGNORE INTO revocations (token_id, revoked_at, reason) "
                "SELECT id, ?, ? FROM issued_tokens WHERE holder=?", (at, reason, h))
            n += max(0, cur.rowcount)
        return n

    def reason(self, token_id: str) -> str | None:
        row = self.db.reader().execute(
            "SELECT reason FROM revocations WHERE token_id=?", (token_id,)).fetchone()
        return None if row is None else str(row[0])

    def all(self) -> set[str]:
        return {r[0] for r in self.db.reader().execute("SELECT token_id FROM revocations")}


# ---------------------------------------------------------------- approvals


@dataclass(frozen=True)
class ApprovalRecord:
    id: str
    agent_id: str | None
    request: dict[str, Any]
    state: ApprovalState
    created_at: str
    deadline: str | None = None
    decided_at: str | None = None
    decision: dict[str, Any] | None = None


def _approval(r: tuple[Any, ...]) -> ApprovalRecord:
    return ApprovalRecord(r[0], r[1], orjson.loads(r[2]), r[3], r[4], r[5], r[6], _l(r[7]))


class ApprovalStore(_Store):
    """Approval records as the kernel's approval book last wrote them (the book and
    ``core/approval`` own the state machine; the store keeps its latest word)."""

    _COLS = "id, agent_id, request, state, created_at, deadline, decided_at, decision"

    @staticmethod
    def put_in(txn: Txn, a: ApprovalRecord) -> None:
        """Insert or overwrite the whole record."""
        _replace_in(txn, "approvals", ApprovalStore._COLS,
                    (a.id, a.agent_id, _j(a.request), a.state, a.created_at, a.deadline, a.decided_at,
                     None if a.decision is None else _j(a.decision)))

    def pending(self) -> list[ApprovalRecord]:
        rows = self.db.reader().execute(
            f"SELECT {self._COLS} FROM approvals WHERE state='pending' ORDER BY created_at, id"
        ).fetchall()
        return [_approval(r) for r in rows]

    def live_and_recent(self, final: tuple[str, ...], keep: int) -> list[ApprovalRecord]:
        """What a kernel start needs, oldest first: every approval not in a ``final`` state (one
        that can still be answered or used) and the ``keep`` newest final ones. Older final rows
        stay in the store unread, so a store of many answered approvals does not slow a start
        or fill the kernel's memory (nor can a damaged old row stop it)."""
        marks = ",".join("?" * len(final))
        db = self.db.reader()
        live = db.execute(f"SELECT {self._COLS} FROM approvals WHERE state NOT IN ({marks})", final).fetchall()
        recent = db.execute(f"SELECT {self._COLS} FROM approvals WHERE state IN ({marks}) "
                            "ORDER BY created_at DESC, id DESC LIMIT ?", (*final, keep)).fetchall()
        rows = sorted(live + recent, key=lambda r: (r[4], r[0]))
        return [_approval(r) for r in rows]


# ---------------------------------------------------------------- kv


@dataclass
class KVStore:
    db: Database
    namespace: str = field(default="kernel")

    def set_in(self, txn: Txn, key: str, value: Any) -> None:
        _replace_in(txn, "kv", "namespace, key, value", (self.namespace, key, _j(value)))

    async def set(self, key: str, value: Any) -> None:
        await self.db.write(lambda t: self.set_in(t, key, value))

    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.reader().execute("SELECT value FROM kv WHERE namespace=? AND key=?",
                                       (self.namespace, key)).fetchone()
        return default if row is None else orjson.loads(row[0])
