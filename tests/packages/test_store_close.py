"""A package store used without a kernel opens ``agentix.db`` itself (its trust state), and
closes it again: at ``close`` (or leaving ``with``), and at the latest when the store is
collected. Before, that database (a writer thread, its connections, the WAL and shared-memory
files) stayed open for the life of the process: the test process held over 1024 descriptors
by the time the slowloris tests ran (their ``select`` failed past FD_SETSIZE)."""

from __future__ import annotations

import gc
from pathlib import Path

from agentix.packages.service import PackageStore
from agentix.store.db import Database
from conftest import open_fds, wait_until


def _db_fds(home: Path) -> list[str]:
    return [what for what in open_fds().values() if what.startswith(str(home / "agentix.db"))]


def test_close_closes_the_database_the_store_opened(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with PackageStore(home, timeout=1.0) as s:
        s.trust.policy()            # the trust state opens agentix.db
        assert _db_fds(home)
    assert _db_fds(home) == []


def test_a_store_dropped_without_close_closes_its_database(tmp_path: Path) -> None:
    home = tmp_path / "h"
    s = PackageStore(home, timeout=1.0)
    s.trust.policy()
    assert _db_fds(home)
    del s
    gc.collect()
    assert wait_until(lambda: _db_fds(home) == [], timeout=10), _db_fds(home)


def test_the_kernels_database_is_never_closed_by_a_store(tmp_path: Path) -> None:
    with Database(tmp_path / "agentix.db") as db:
        with PackageStore(tmp_path, timeout=1.0, db=db) as s:
            s.trust.policy()
        assert db.submit(lambda t: t.conn.execute("SELECT 1").fetchone()[0]).result() == 1
