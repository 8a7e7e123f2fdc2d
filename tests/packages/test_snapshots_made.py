"""Which snapshots this kernel made lives in agentix.db (table ``snapshots_made``, migration
v10), not in files under registry/made/ (DESIGN.md §9): a snapshot made here restores with its
recorded grants; one not made here does not get them unasked, whatever file is planted under
registry/made/; the files an older kernel wrote are imported once, at the first start after
the upgrade, and removed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentix.sdk.errors import AgentixError
from agentix.store import side_files, snapshots_made
from agentix.store.db import Database
from agentix.store.schema import MIGRATIONS

from conftest import Daemon


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _made_rows(db: Path) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute("SELECT digest FROM snapshots_made")}


def _as_an_older_kernel_left_it(home: Path, made: list[str]) -> None:
    """What a home of the code before v10 looks like after the migration to v10: no rows, the
    import due, and an empty file ``registry/made/<hex>`` per snapshot it made."""
    with sqlite3.connect(home / "agentix.db") as c:
        c.execute("DELETE FROM snapshots_made")
        c.execute("INSERT OR REPLACE INTO imports_due (name) VALUES ('registry/made')")
    (home / "registry" / "made").mkdir()
    for d in made:
        (home / "registry" / "made" / _hex(d)).write_bytes(b"")


def test_made_here_restores_with_its_grants_and_a_planted_file_grants_nothing(
        start_kernel: Any, isolation_mode: str) -> None:
    a = start_kernel()
    aid = a.spawn("sleeper.py", name="keeper", capabilities=["tool: echo", "file_write: /workspace/out/*"])
    mine = a.client.call("snapshot.create", agent=aid, tag="snapshots/keeper:mine")
    assert _made_rows(a.home / "agentix.db") == {mine["digest"]}      # in the database,
    assert not (a.home / "registry" / "made").exists()               # not in a side file
    a.client.send(aid, "pending")                                     # another state: another digest
    other = a.client.call("snapshot.create", agent=aid, tag="snapshots/keeper:other")
    assert other["digest"] != mine["digest"]
    a.stop()
    # the home as the code before v10 left it: `mine` has a file, `other` (say, pulled) has none
    _as_an_older_kernel_left_it(a.home, [mine["digest"]])

    b = Daemon(a.home, isolation_mode)
    try:
        assert not (a.home / "registry" / "made").exists()           # imported, then removed
        assert _made_rows(a.home / "agentix.db") == {mine["digest"]}
        r = b.client.call("snapshot.restore", ref="snapshots/keeper:mine")
        assert r["made_here"] is True
        assert sorted(g for grp in r["grants"] for g in grp["grants"]) == ["file_write: /workspace/out/*",
                                                                          "tool: echo"]
        # a file planted where an older kernel kept its marks, after the import: it means nothing
        (a.home / "registry" / "made").mkdir()
        (a.home / "registry" / "made" / _hex(other["digest"])).write_bytes(b"")
        before = {x.agent_id for x in b.client.list()}
        with pytest.raises(AgentixError) as ei:
            b.client.call("snapshot.restore", ref="snapshots/keeper:other")
        assert ei.value.code == "invalid_request" and "not made by this kernel" in str(ei.value)
        assert {x.agent_id for x in b.client.list()} == before         # nothing started
        assert _made_rows(a.home / "agentix.db") == {mine["digest"]}
    finally:
        b.stop()
    # nor at the next start: the import ran once
    c = Daemon(a.home, isolation_mode)
    try:
        with pytest.raises(AgentixError) as ei:
            c.client.call("snapshot.restore", ref="snapshots/keeper:other")
        assert "not made by this kernel" in str(ei.value)
        assert (a.home / "registry" / "made" / _hex(other["digest"])).exists()  # never read, never removed
    finally:
        c.stop()


def test_the_old_files_are_imported_once_and_only_what_names_a_snapshot(tmp_path: Path) -> None:
    made = tmp_path / "registry" / "made"
    made.mkdir(parents=True)
    good = ["sha256:" + c * 64 for c in "ab"]
    for d in good:
        (made / _hex(d)).write_bytes(b"")
    (made / "not-a-digest").write_bytes(b"")                      # ignored, left where it is
    (made / ("c" * 64)).mkdir()                                   # not a regular file: ignored
    (made / ("d" * 64)).symlink_to(tmp_path / "elsewhere")        # a link: ignored
    with Database(tmp_path / "agentix.db") as db:
        assert side_files.due(db, snapshots_made.IMPORT)          # the migration said so
        assert snapshots_made.import_old(db, made) == 2
        assert {d for d in good if snapshots_made.made(db, d)} == set(good)
        assert not snapshots_made.made(db, "sha256:" + "c" * 64)
        assert sorted(p.name for p in made.iterdir()) == ["c" * 64, "d" * 64, "not-a-digest"]
        assert not side_files.due(db, snapshots_made.IMPORT)
        # a later file is never imported
        (made / ("e" * 64)).write_bytes(b"")
        assert snapshots_made.import_old(db, made) == 0
        assert not snapshots_made.made(db, "sha256:" + "e" * 64)


def test_a_home_without_old_files_just_ends_the_import(tmp_path: Path) -> None:
    with Database(tmp_path / "agentix.db") as db:
        assert db.schema_version == len(MIGRATIONS)
        assert snapshots_made.import_old(db, tmp_path / "registry" / "made") == 0
        assert not side_files.due(db, snapshots_made.IMPORT)
        assert not (tmp_path / "registry" / "made").exists()


def test_retire_removes_the_files_then_their_directory_only_when_empty(tmp_path: Path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    (d / "a").write_bytes(b"")
    (d / "keep").write_bytes(b"")
    side_files.retire([d / "a", d / "gone-already"], d)
    assert sorted(p.name for p in d.iterdir()) == ["keep"]
    side_files.retire([d / "keep"], d)
    assert not d.exists()
