"""Asynchronous commit: ``Database.post`` / ``AuditLog.post`` / ``AuditEvents.record(durable=False)``.

A posted record is not waited for, gets its seq and hash in queue order, and is committed
by the next group commit; a durable write commits everything queued before it. What a
kill -9 can lose is tested in test_crash.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from agentix.store.audit import AuditEvents, AuditLog
from agentix.store.db import MAX_COMMIT_WINDOW_S, Database


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "agentix.db", commit_window_s=MAX_COMMIT_WINDOW_S)
    yield d
    d.close()


def test_a_post_returns_before_its_commit_and_commits_later(db):
    log = AuditLog(db)

    async def go():
        fut = log.post("tool.invoked", "a1", {"tool": "echo"})
        assert not fut.done()  # the caller did not wait
        e = await fut
        return e

    e = asyncio.run(go())
    assert (e.seq, log.size()) == (1, 1)
    assert log.entry(1).hash == e.hash


def test_a_durable_write_commits_every_record_posted_before_it(db):
    log = AuditLog(db)

    async def go():
        futs = [log.post("tool.invoked", "a1", {"i": i}) for i in range(100)]
        last = await log.append("tool.result", "a1", {"ok": True})
        # the durable append is acknowledged: everything queued before it is durable too
        assert log.size() == 101
        assert all(f.done() for f in futs)
        return [f.result().seq for f in futs], last.seq

    seqs, last = asyncio.run(go())
    assert seqs == list(range(1, 101)) and last == 101  # queue order is seq order
    assert log.verify().ok


def test_posts_share_one_commit(db):
    log = AuditLog(db)

    async def go():
        await asyncio.gather(*[log.post("tool.invoked", "a1", {"i": i}) for i in range(200)])

    asyncio.run(go())
    assert db.stats().writes == 200
    assert db.stats().commits < 200


def test_a_commit_window_above_the_bound_is_refused(tmp_path):
    with pytest.raises(ValueError, match="commit_window_s"):
        Database(tmp_path / "x.db", commit_window_s=MAX_COMMIT_WINDOW_S * 2)
    assert not (tmp_path / "x.db").exists()  # refused before anything was created
    Database(tmp_path / "y.db", commit_window_s=0).close()  # 0: commit at once


def test_a_failing_posted_operation_is_logged_and_fails_alone(db, caplog):
    log = AuditLog(db)
    sink = AuditEvents(log)

    def boom(txn):
        raise RuntimeError("op failed")

    async def go():
        bad = db.post(boom)
        got = await sink.record("tool.invoked", "a1", {"tool": "echo"}, durable=False)
        assert got is None  # nothing to wait for
        await sink.sync()
        with pytest.raises(RuntimeError):
            await bad
        return await log.append("tool.result", "a1", {"ok": True})

    with caplog.at_level(logging.WARNING):
        last = asyncio.run(go())
    assert last.seq == 2 and log.size() == 2 and log.verify().ok


def test_record_not_durable_wakes_tail_waiters_on_commit(db):
    sink = AuditEvents(AuditLog(db))

    async def go():
        waiter = asyncio.create_task(sink.wait_for_new(5.0))
        await asyncio.sleep(0)
        await sink.record("tool.invoked", "a1", {"tool": "echo"}, durable=False)
        await asyncio.wait_for(waiter, 5.0)
        return sink.tail()

    entries = asyncio.run(go())
    assert [e["kind"] for e in entries] == ["tool.invoked"]
