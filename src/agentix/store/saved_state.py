"""Saved agent state and the persistent agents to start again: tables of the one store.

Rules:

* ``agent_state`` holds JSON values per (identity, key) with the taint labels of the context
  that saved them (the kernel decides the identity: ``kernel/persistent.state_identity``).
  A value is at most ``MAX_STATE`` bytes as JSON; an identity holds at most ``MAX_KEYS``
  keys and, with a ``quota``, at most that many bytes over all its keys. A refused save
  changes nothing.
* ``persistent_agents`` holds the manifest of each persistent root agent, by name.
* Every write is an operation of the database's single writer and returns once its commit
  is durable; reads use the calling thread's read connection (they never wait for the
  writer). Methods block: call them from a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from agentix.core.errors import LimitExceeded
from agentix.store.db import Database, Txn

__all__ = ["MAX_KEYS", "MAX_STATE", "StateStore"]

MAX_STATE = 8 * 1024 * 1024
MAX_KEYS = 64


class StateStore:
    """Key/value JSON state per identity, and the stored persistent agents (see the rules)."""

    def __init__(self, db: Database, quota: int | None = None) -> None:
        self.db = db
        self.quota = quota  # bytes of state per identity, all keys together ([kernel] state_quota)

    # ------------------------------------------------------------ saved state
    def save(self, identity: str, key: str, value: Any, taint: Iterable[str] = ()) -> int:
        """Keep ``value`` under (``identity``, ``key``) with ``taint``; its size in bytes."""
        data = orjson.dumps(value)
        if len(data) > MAX_STATE:
            raise LimitExceeded(f"state value is {len(data)} bytes; the limit is {MAX_STATE}",
                                limit=MAX_STATE)
        labels = orjson.dumps(sorted(set(taint))).decode()
        now = time.time()
        quota = self.quota

        def op(txn: Txn) -> None:
            (n,) = txn.conn.execute("SELECT COUNT(*) FROM agent_state WHERE identity=? AND key<>?",
                                    (identity, key)).fetchone()
            if n >= MAX_KEYS:
                raise LimitExceeded(f"an agent keeps at most {MAX_KEYS} state keys", limit=MAX_KEYS)
            if quota is not None:
                (used,) = txn.conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM agent_state WHERE identity=? "
                    "AND key<>?", (identity, key)).fetchone()
                if used + len(data) > quota:
                    raise LimitExceeded(
                        f"saved state would take {used + len(data)} bytes (this value {len(data)}, "
                        f"the other keys {used}); the quota is {quota} bytes per agent "
                        "([kernel] state_quota): save less or delete keys first",
                        limit="state_quota", quota=quota, used=used, size=len(data))
            txn.conn.execute("INSERT OR REPLACE INTO agent_state (identity, key, value, updated_at, "
                             "taint) VALUES (?,?,?,?,?)", (identity, key, data, now, labels))

        self.db.submit(op).result()
        return len(data)

    def load(self, identity: str, key: str) -> Any:
        return self.load_labelled(identity, key)[0]

    def load_labelled(self, identity: str, key: str) -> tuple[Any, list[str]]:
        """The value (None if unset) and the taint labels it was saved with."""
        row = self.db.reader().execute(
            "SELECT value, taint FROM agent_state WHERE identity=? AND key=?",
            (identity, key)).fetchone()
        return (None, []) if row is None else (orjson.loads(row[0]), list(orjson.loads(row[1])))

    def entries(self, identity: str) -> list[dict[str, Any]]:
        """Every key of ``identity`` with its value and labels, by key (for a snapshot)."""
        rows = self.db.reader().execute(
            "SELECT key, value, taint FROM agent_state WHERE identity=? ORDER BY key",
            (identity,)).fetchall()
        return [{"key": key, "value": orjson.loads(value), "taint": sorted(orjson.loads(taint))}
                for key, value, taint in rows]

    def has_state(self, identity: str) -> bool:
        return self.db.reader().execute(
            "SELECT 1 FROM agent_state WHERE identity=? LIMIT 1", (identity,)).fetchone() is not None

    def delete_identity(self, identity: str) -> int:
        """Remove every key of ``identity``; how many there were."""
        return int(self.db.submit(lambda t: t.conn.execute(
            "DELETE FROM agent_state WHERE identity=?", (identity,)).rowcount).result())

    # ------------------------------------------------------------ persistent root agents
    def remember_agent(self, name: str, manifest: dict[str, Any]) -> None:
        blob, now = orjson.dumps(manifest), time.time()
        self.db.submit(lambda t: t.conn.execute(
            "INSERT OR REPLACE INTO persistent_agents VALUES (?,?,?)", (name, blob, now))).result()

    def forget_agent(self, name: str) -> bool:
        n = self.db.submit(lambda t: t.conn.execute(
            "DELETE FROM persistent_agents WHERE name=?", (name,)).rowcount).result()
        return n > 0

    def persistent_agents(self) -> list[tuple[str, dict[str, Any]]]:
        rows = self.db.reader().execute(
            "SELECT name, manifest FROM persistent_agents ORDER BY updated_at").fetchall()
        return [(name, orjson.loads(m)) for name, m in rows]
