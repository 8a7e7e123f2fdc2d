"""The WAL is reused in place; checkpoints run beside the writer; a crash's WAL tail is inert.

What a durable record waits for is the WAL's fdatasync; a commit that makes the WAL longer
also makes the filesystem commit the new size and blocks, so the store keeps the WAL file
and lets each checkpoint restart it at its head (store/db.py, "The WAL is rewritten in
place"), and checkpoints run in a thread of their own ("Checkpoints off the commit path").
These tests pin what that rests on: the WAL stays bounded however long the log grows (it is
overwritten, not extended); background checkpoints lose and reorder nothing; and nothing
past the last committed frame (stale frames of an earlier cycle, a torn frame, garbage) is
ever read back as data after a crash.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.store.audit_store import AuditLog
from agentix.store.db import AUTOCHECKPOINT_FRAMES, Database


def _wait(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _frame_bytes(path) -> int:
    c = sqlite3.connect(path)
    try:
        return 24 + c.execute("PRAGMA page_size").fetchone()[0]
    finally:
        c.close()


def _append(log: AuditLog, n: int, tag: str = "i") -> list:
    async def go():
        return [await log.append("tool.invoked", "a", {tag: i}) for i in range(n)]

    return asyncio.run(go())


def test_the_wal_is_overwritten_in_place_not_grown_with_the_log(tmp_path):
    path = tmp_path / "agentix.db"
    # no background checkpointer: SQLite's own checkpoint (inside the commit that crosses
    # the threshold) always completes here, so the WAL's high-water mark is exact
    db = Database(path, checkpoint_every=0)
    try:
        log = AuditLog(db)
        _append(log, 900)  # ~3,600 frames: more than three checkpoint cycles
        frame = _frame_bytes(path)
        # one cycle's frames (the threshold, plus the commit that crossed it), not the log's
        bound = 32 + (AUTOCHECKPOINT_FRAMES + 16) * frame
        assert (tmp_path / "agentix.db-wal").stat().st_size <= bound
        assert log.verify().ok and log.size() == 900
    finally:
        db.close()
    assert not (tmp_path / "agentix.db-wal").exists()  # a clean close still removes it


def test_the_checkpointer_copies_the_wal_into_the_database_beside_the_writer(tmp_path):
    path = tmp_path / "agentix.db"
    db = Database(path, checkpoint_every=1)
    try:
        log = AuditLog(db)
        _append(log, 50)
        _wait(lambda: db.stats().checkpoints > 0, "a background checkpoint")
        assert db.stats().commits >= 50
        # nothing of what was acknowledged is lost or reordered by checkpointing
        assert log.verify().ok and log.size() == 50
    finally:
        db.close()


def test_a_database_reopened_after_checkpointed_runs_keeps_everything(tmp_path):
    path = tmp_path / "agentix.db"
    for run in range(3):
        db = Database(path, checkpoint_every=2)
        _append(AuditLog(db), 40, tag=f"run{run}")
        db.close()
    db = Database(path)
    try:
        log = AuditLog(db)
        assert log.size() == 120 and log.verify().ok
    finally:
        db.close()


# ---------------------------------------------------------------- a crash image's WAL tail


@pytest.fixture(scope="module")
def crash_image(tmp_path_factory):
    """A store as ``kill -9`` leaves it after the WAL restarted at least once: the database
    and WAL files as they are on disk while the writer still holds them (no clean close,
    no shared-memory index), and the acknowledged (seq, hash) pairs. Past the current
    cycle's last frame lie the previous cycle's frames (an older salt)."""
    src = tmp_path_factory.mktemp("live")
    db = Database(src / "agentix.db", checkpoint_every=0)
    log = AuditLog(db)
    acked = _append(log, 300)
    image = tmp_path_factory.mktemp("image")
    shutil.copyfile(src / "agentix.db", image / "agentix.db")
    shutil.copyfile(src / "agentix.db-wal", image / "agentix.db-wal")
    db.close()
    return image, [(e.seq, e.hash) for e in acked]


def _last_frame_end(wal: bytes, frame: int) -> int:
    """Offset just past the last frame whose salts match the header (this cycle's)."""
    salts = wal[16:24]
    off = 32
    while off + frame <= len(wal) and wal[off + 8:off + 16] == salts:
        off += frame
    return off


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.one_of(
    st.binary(min_size=1, max_size=9000),  # garbage past the last frame
    st.integers(1, 4119).map(lambda k: ("torn", k)),  # a copy of the last frame, cut short
))
def test_whatever_lies_past_the_last_committed_frame_is_never_read_as_data(crash_image, tail):
    image, acked = crash_image
    work = Path(tempfile.mkdtemp(prefix="axt-wal-"))
    try:
        shutil.copyfile(image / "agentix.db", work / "agentix.db")
        wal = bytearray((image / "agentix.db-wal").read_bytes())
        frame = _frame_bytes(image / "agentix.db")
        end = _last_frame_end(bytes(wal), frame)
        assert end > 32
        if isinstance(tail, tuple):
            cut = bytes(wal[end - frame:end - frame + tail[1]])
            wal[end:end + len(cut)] = cut
        else:
            wal[end:end + len(tail)] = tail
        (work / "agentix.db-wal").write_bytes(bytes(wal))
        db = Database(work / "agentix.db", checkpoint_every=0)
        try:
            log = AuditLog(db)
            assert log.size() == len(acked)
            assert [(s, log.entry(s).hash) for s, _ in acked] == acked
            assert log.verify().ok
        finally:
            db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
