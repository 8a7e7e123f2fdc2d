"""Asynchronous commit: ``Database.post`` / ``AuditLog.post`` / ``AuditEvents.record(durable=False)``.

A posted record is not waited for, gets its seq and hash in queue order, and is committed
by the next group commit; a durable write commits everything queued before it. What a
kill -9 can lose is tested in test_crash.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from agentix.store.audit_store import AuditEvents, AuditLog
from agentix.store.db import MAX_COMMIT_WINDOW_S, Database


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "agentix.db", commit_window_s=MAX_COMMIT_WINDOW_S)
    yield d
    d.close()


def test_a_post_returns_before_its_commit_and_commits_later(db):
    log = AuditLog(db)

    async def go():
        committed = asyncio.Event()
        log.on_commit(asyncio.get_running_loop(), committed.set)
        assert log.post("tool.invoked", "a1", {"tool": "echo"}) is None  # nothing to wait for
        assert not committed.is_set()  # the caller went on before the commit
        await asyncio.wait_for(committed.wait(), 5.0)  # ... which came by itself

    asyncio.run(go())
    assert log.size() == 1 and log.entry(1).kind == "tool.invoked"


def test_a_durable_write_commits_every_record_posted_before_it(db):
    log = AuditLog(db)

    async def go():
        for i in range(100):
            log.post("tool.invoked", "a1", {"i": i})
        last = await log.append("tool.result", "a1", {"ok": True})
        # the durable append is acknowledged: everything queued before it is durable too
        assert log.size() == 101
        return last.seq

    last = asyncio.run(go())
    assert last == 101
    assert [log.entry(s).data["i"] for s in range(1, 101)] == list(range(100))  # queue order
    assert log.verify().ok


def test_posts_share_one_commit(db):
    log = AuditLog(db)
    sink = AuditEvents(log)

    async def go():
        for i in range(200):
            log.post("tool.invoked", "a1", {"i": i})
        await sink.sync()

    asyncio.run(go())
    assert db.stats().writes == 201  # 200 posts and the sync barrier
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
        db.post(boom)
        got = await sink.record("tool.invoked", "a1", {"tool": "echo"}, durable=False)
        assert got is None  # nothing to wait for
        await sink.sync()
        return await log.append("tool.result", "a1", {"ok": True})

    with caplog.at_level(logging.ERROR):
        last = asyncio.run(go())
    assert "op failed" in caplog.text  # nobody awaited it: the writer said so
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


def test_a_write_during_a_posted_batchs_window_joins_that_commit(db):
    """Posts do not wake the writer; a waiting write does, and rides the posts' commit."""
    log = AuditLog(db)

    async def go():
        for i in range(50):
            log.post("tool.invoked", "a1", {"i": i})
        return await log.append("tool.result", "a1", {"ok": True})

    last = asyncio.run(go())
    assert last.seq == 51 and log.size() == 51
    # one commit, or two if the loop was descheduled for longer than the window mid-burst
    assert db.stats().commits <= 2 and db.stats().writes == 51
    assert [log.entry(s).data.get("i") for s in range(1, 51)] == list(range(50))
    assert log.verify().ok


def test_a_commit_wakes_the_loop_once_for_its_waiters_and_its_listeners(db):
    """The writer hands a commit's news to the event loop in one callback: the waiting
    caller's result and the tail listeners together."""
    log = AuditLog(db)
    heard: list[str] = []

    async def go():
        loop = asyncio.get_running_loop()
        log.on_commit(loop, lambda: heard.append("listener"))
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*a, **kw):
            nonlocal wakes
            wakes += 1
            return real(*a, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            for _ in range(5):
                await log.append("tool.invoked", "a1", {"tool": "file_write"})
                await asyncio.sleep(0)  # let the same callback's listener run
        finally:
            loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        return wakes

    wakes = asyncio.run(go())
    assert wakes == 5  # one per commit, not one per kind of news
    assert heard == ["listener"] * 5
    assert log.size() == 5 and log.verify().ok


def test_a_failing_after_commit_callback_does_not_keep_the_result_from_its_caller(db, caplog):
    log = AuditLog(db)

    async def go():
        loop = asyncio.get_running_loop()
        log.on_commit(loop, lambda: 1 / 0)
        heard: list[int] = []
        log.on_commit(loop, lambda: heard.append(1))
        e = await asyncio.wait_for(log.append("tool.invoked", "a1", {"tool": "x"}), 5.0)
        await asyncio.sleep(0)
        return e, heard

    with caplog.at_level(logging.ERROR, logger="agentix.store.db"):
        e, heard = asyncio.run(go())
    assert e.seq == 1 and heard == [1]
    assert "after-commit callback failed" in caplog.text
