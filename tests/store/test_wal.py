"""The WAL is grown once and rewritten in place; checkpoints run beside the writer.

What a durable record waits for is the WAL's fdatasync; a commit that makes the WAL longer
also makes the filesystem commit the new size and blocks, so ``Database`` presizes the WAL
with zeros and lets checkpoints restart it at its head (store/db.py, "The WAL is rewritten
in place"). These tests pin the two assumptions that rest on: commits never make a presized
WAL longer, and nothing past the last committed frame (the zeros, a torn frame, garbage) is
ever read back as data after a crash.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.store.audit import AuditLog
from agentix.store.db import PRESIZE_AFTER_COMMITS, WAL_PRESIZE_FRAMES, Database


def _wait(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _warm(log: AuditLog) -> list:
    """Enough commits for the writer to presize the WAL; wait until it has."""
    async def go():
        return [await log.append("tool.invoked", "a", {"warm": i})
                for i in range(PRESIZE_AFTER_COMMITS)]

    acked = asyncio.run(go())
    _wait(lambda: log.db.stats().wal_presized > 0, "the WAL to be presized")
    return acked


def test_a_store_used_for_a_few_writes_does_not_presize_its_wal(tmp_path):
    db = Database(tmp_path / "agentix.db", checkpoint_every=0)
    try:
        log = AuditLog(db)

        async def go():
            for i in range(PRESIZE_AFTER_COMMITS - 1):  # one commit short of it
                await log.append("tool.invoked", "a", {"i": i})

        asyncio.run(go())
        assert db.stats().wal_presized == 0
        assert (tmp_path / "agentix.db-wal").stat().st_size < 32 + 300 * _frame_bytes(tmp_path / "agentix.db")
    finally:
        db.close()


def _frame_bytes(path) -> int:
    c = sqlite3.connect(path)
    try:
        return 24 + c.execute("PRAGMA page_size").fetchone()[0]
    finally:
        c.close()


def test_a_new_wal_is_presized_once_and_commits_rewrite_it_in_place(tmp_path):
    path = tmp_path / "agentix.db"
    # no background checkpointer: SQLite's own checkpoint (inside the commit that crosses
    # the threshold) always completes here, so the WAL's high-water mark is exact
    db = Database(path, checkpoint_every=0)
    try:
        log = AuditLog(db)
        _warm(log)
        wal = tmp_path / "agentix.db-wal"
        size = wal.stat().st_size
        assert size == 32 + WAL_PRESIZE_FRAMES * _frame_bytes(path)

        async def go():
            for i in range(600):  # ~2,400 frames: two checkpoint cycles and more
                await log.append("tool.invoked", "a", {"i": i})

        asyncio.run(go())
        assert wal.stat().st_size == size  # every commit overwrote; none extended the file
        assert log.verify().ok and log.size() == 600 + PRESIZE_AFTER_COMMITS
    finally:
        db.close()
    assert not (tmp_path / "agentix.db-wal").exists()  # a clean close still removes it


def test_the_checkpointer_copies_the_wal_into_the_database_beside_the_writer(tmp_path):
    path = tmp_path / "agentix.db"
    db = Database(path, checkpoint_every=1)
    try:
        log = AuditLog(db)

        async def go():
            for i in range(50):
                await log.append("tool.invoked", "a", {"i": i})

        asyncio.run(go())
        _wait(lambda: db.stats().checkpoints > 0, "a background checkpoint")
        assert db.stats().commits >= 50
        # nothing of what was acknowledged is lost or reordered by checkpointing
        assert log.verify().ok and log.size() == 50
    finally:
        db.close()


def test_a_database_reopened_after_a_checkpointed_run_keeps_everything(tmp_path):
    path = tmp_path / "agentix.db"
    for run in range(3):
        db = Database(path, checkpoint_every=2)
        log = AuditLog(db)

        async def go(run=run):
            for i in range(40):
                await log.append("tool.invoked", "a", {"run": run, "i": i})

        asyncio.run(go())
        db.close()
    db = Database(path)
    try:
        log = AuditLog(db)
        assert log.size() == 120 and log.verify().ok
    finally:
        db.close()


# ---------------------------------------------------------------- a crash image's WAL tail


def _crash_image(tmp_path, n: int):
    """A store as ``kill -9`` leaves it: ``n`` acknowledged appends, the database and WAL
    files as they are on disk while the writer still holds them (no checkpoint, no
    clean close, no shared-memory index)."""
    src = tmp_path / "live"
    src.mkdir()
    db = Database(src / "agentix.db", checkpoint_every=0)
    log = AuditLog(db)
    acked = _warm(log)

    async def go():
        return [await log.append("tool.invoked", "a", {"i": i}) for i in range(n)]

    acked += asyncio.run(go())
    image = tmp_path / "image"
    image.mkdir()
    shutil.copyfile(src / "agentix.db", image / "agentix.db")
    shutil.copyfile(src / "agentix.db-wal", image / "agentix.db-wal")
    db.close()
    return image, [(e.seq, e.hash) for e in acked]


def _last_frame_end(wal: bytes, frame: int) -> int:
    """Offset just past the last frame whose salts match the header (our writes only)."""
    salts = wal[16:24]
    off = 32
    while off + frame <= len(wal) and wal[off + 8:off + 16] == salts:
        off += frame
    return off


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.one_of(
    st.binary(min_size=1, max_size=9000),  # garbage past the last frame
    st.integers(1, 4119).map(lambda k: ("torn", k)),  # a frame cut short by the crash
))
def test_whatever_lies_past_the_last_committed_frame_is_never_read_as_data(tmp_path_factory, tail):
    tmp_path = tmp_path_factory.mktemp("tail")
    image, acked = _crash_image(tmp_path, 30)
    wal_path = image / "agentix.db-wal"
    wal = bytearray(wal_path.read_bytes())
    frame = _frame_bytes(image / "agentix.db")
    end = _last_frame_end(bytes(wal), frame)
    assert end > 32 and len(wal) > end  # frames, then the presized zeros
    if isinstance(tail, tuple):  # a torn frame: a copy of the last frame, cut short
        cut = bytes(wal[end - frame:end - frame + tail[1]])
        wal[end:end + len(cut)] = cut
    else:
        wal[end:end + len(tail)] = tail
    wal_path.write_bytes(bytes(wal))
    db = Database(image / "agentix.db")
    try:
        log = AuditLog(db)
        assert log.size() == len(acked)
        assert [(e.seq, e.hash) for e in (log.entry(s) for s, _ in acked)] == acked
        assert log.verify().ok
    finally:
        db.close()
