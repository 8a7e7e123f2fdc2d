"""The writer path: group commit, per-operation atomicity, migrations, state stores."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import pytest

from agentix.core import events as ev
from agentix.core.errors import InvalidRequest, StateError
from agentix.store.audit_store import AuditEvents, AuditLog
from agentix.store.db import Database
from agentix.store.recovery import mark_clean_shutdown, recover
from agentix.store.schema import MIGRATIONS
from agentix.store.state import (
    AgentStore,
    ApprovalRecord,
    ApprovalStore,
    RevocationStore,
    StoredAgent,
)


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "agentix.db")
    yield d
    d.close()


def test_wal_mode_and_schema_version(tmp_path):
    path = tmp_path / "agentix.db"
    Database(path).close()
    Database(path).close()  # reopening applies nothing twice
    c = sqlite3.connect(path)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "agentix.db"
    Database(path).close()
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("UPDATE schema_version SET version=99")
    c.close()
    with pytest.raises(StateError):
        Database(path)


def test_concurrent_writes_are_group_committed(db):
    log = AuditLog(db)

    async def go():
        await asyncio.gather(*(log.append("tool.invoked", "a", {"i": i}) for i in range(500)))

    asyncio.run(go())
    s = db.stats()
    assert s.writes == 500 and s.commits < 500 and s.max_batch_seen > 1
    assert log.verify().ok


def test_a_failing_operation_changes_nothing_and_the_batch_still_commits(db):
    log = AuditLog(db)
    agents = AgentStore(db)

    def bad(txn):
        log.append_in(txn, "agent.spawned", "x", {})
        txn.conn.execute("INSERT INTO kv VALUES ('n','k','1')")
        raise StateError("refused")

    async def go():
        return await asyncio.gather(
            log.append("tool.invoked", "a", {"i": 0}),
            db.write(bad),
            log.append("tool.invoked", "a", {"i": 1}),
            return_exceptions=True)

    r = asyncio.run(go())
    assert isinstance(r[1], StateError)
    assert [e.seq for e in (r[0], r[2])] == [1, 2]  # no seq was burnt by the failed op
    assert log.size() == 2 and log.verify().ok
    assert db.reader().execute("SELECT count(*) FROM kv").fetchone()[0] == 0
    assert agents.list() == []


def test_invalid_audit_data_is_refused_before_anything_is_written(db):
    log = AuditLog(db)
    with pytest.raises(InvalidRequest):
        asyncio.run(log.append("tool.invoked", "a", {"x": float("nan")}))
    assert log.size() == 0


def test_event_sink_adapter(db):
    events = AuditEvents(AuditLog(db))
    e = asyncio.run(events.record(ev.CAPABILITY_DENIED, "a1", {"tool": "fs.read"}, taint={"web"}))
    assert (e.seq, e.kind, e.taint) == (1, "capability.denied", ("web",))


def test_slow_subscriber_gets_a_lag_notice(db):
    log = AuditLog(db)

    async def go():
        it = log.subscribe(maxsize=5)
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # subscribed
        for i in range(20):
            await log.append("tool.invoked", "a", {"i": i})
        got = [await first]  # the pending read took seq 1; then nobody read
        for _ in range(6):
            got.append(await it.__anext__())
        await it.aclose()
        return got

    got = asyncio.run(go())
    assert [g["seq"] for g in got[:6]] == [1, 2, 3, 4, 5, 6]  # 5 held, in order
    assert got[6] == {"kind": "lag", "missed": 14}  # the notice sits where the gap is


def _agent(i, state="running", persistent=False):
    return StoredAgent(f"a{i}", f"n{i}", None, {"name": f"n{i}"}, state, persistent,
                       "2026-01-01T00:00:00.000000Z", pid=1000 + i, pgid=1000 + i)


AP1 = ApprovalRecord("ap1", "a1", {"tool": "mail.send"}, "pending", "2026-01-01T00:00:00Z")


def test_recovery_marks_left_agents_and_keeps_approvals_and_revocations(tmp_path):
    path = tmp_path / "agentix.db"
    db = Database(path)
    log = AuditLog(db)
    agents = AgentStore(db)

    async def before():
        first = await recover(db, log)  # the kernel's first start: nothing to find
        assert first.clean_shutdown and first.exited == [] and log.size() == 0
        for i in range(100):
            await agents.upsert(_agent(i, persistent=i % 10 == 0))
        await agents.upsert(_agent(500, state="exited"))
        await db.write(lambda t: ApprovalStore.put_in(t, AP1))
        await db.write(lambda t: ApprovalStore.put_in(t, ApprovalRecord(
            "ap2", "a1", {}, "pending", "2026-01-01T00:00:01Z")))
        await db.write(lambda t: ApprovalStore.put_in(t, ApprovalRecord(
            "ap2", "a1", {}, "granted", "2026-01-01T00:00:01Z", None, "2026-01-01T00:00:02Z",
            {"by": "op"})))
        await db.write(lambda t: RevocationStore.revoke_in(t, "tok1", "2026-01-01T00:00:00Z",
                                                           "operator"))

    asyncio.run(before())
    db.close()  # as if the kernel had died here

    db = Database(path)
    log = AuditLog(db)
    rep = asyncio.run(recover(db, log))
    assert rep.chain_ok and rep.clean_shutdown is False
    assert len(rep.exited) == 100 and {a.pid for a in rep.exited} == set(range(1000, 1100))
    assert [a.id for a in rep.restart] == [f"a{i}" for i in range(0, 100, 10)]
    assert [a.id for a in rep.pending_approvals] == ["ap1"]
    assert rep.revocations == 1 and RevocationStore(db).all() == {"tok1"}
    assert RevocationStore(db).reason("tok1") == "operator"
    assert AgentStore(db).list_live() == []
    assert AgentStore(db).get("a5").exit_reason == "kernel_restart"
    exited = log.tail(kind="agent.exited", limit=1000)
    assert len(exited) == 100 and exited[0].data["reason"] == "kernel_restart"
    rec = log.tail(kind="kernel.recovered")
    assert len(rec) == 1 and len(rec[0].data["exited"]) == 100
    assert log.verify().ok
    # a clean stop, then a restart with nothing left (no agent, no pending approval): no
    # recovered event
    asyncio.run(db.write(lambda t: ApprovalStore.put_in(t, dataclasses.replace(
        AP1, state="denied", decided_at="2026-01-01T00:00:03Z", decision={"by": "op"}))))
    assert [r[0] for r in db.reader().execute("SELECT state FROM approvals ORDER BY created_at, id")] == [
        "denied", "granted"]
    asyncio.run(mark_clean_shutdown(db, log))
    rep2 = asyncio.run(recover(db, log))
    assert rep2.clean_shutdown and rep2.exited == []
    assert len(log.tail(kind="kernel.recovered")) == 1
    db.close()


def test_an_exited_agent_cannot_exit_again(db):
    agents = AgentStore(db)

    async def go():
        await agents.upsert(_agent(1))
        await agents.mark_exited("a1", "completed", {"code": 0}, "t")
        with pytest.raises(StateError):  # an exited agent cannot exit again
            await agents.mark_exited("a1", "crashed", {}, "t")
        assert agents.get("a1").exit_reason == "completed"

    asyncio.run(go())


def test_event_sink_records_a_kernel_bug_instead_of_failing(db):
    from pathlib import Path

    events = AuditEvents(AuditLog(db))
    e = asyncio.run(events.record("tool.result", "a1", {"path": Path("/x"), "n": float("nan")}))
    assert e.data["_coerced"] is True and e.data["path"] == "PosixPath('/x')"
    assert e.data["n"] is None
    assert events.log.verify().ok
