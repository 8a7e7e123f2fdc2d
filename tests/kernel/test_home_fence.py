"""The fence over the kernel's own state is reused only while the home cannot have changed.

``kernel/fence.py``: the protected files (keys, database, ``*.json``) are listed again when
the home or ``keys/`` changed, and a listing taken in the same clock tick as a change is
never reused. An attack here is a protected file the fence forgets: each test makes one
and checks the next fence names it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentix.core.errors import CapabilityDenied
from agentix.kernel.fence import SETTLE_S, HomeFence
from agentix.tools import safe_fs


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "root.key").write_bytes(b"k" * 32)
    (home / "agentix.db").write_bytes(b"db")
    (home / "workspaces" / "a1").mkdir(parents=True)
    return home


def _key(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return (st.st_dev, st.st_ino)


def later(s: float = SETTLE_S + 1) -> float:
    return time.time() + s  # a clock for which every directory stamp has settled


def test_a_settled_home_is_listed_once(tmp_path: Path) -> None:
    home = _home(tmp_path)
    f = HomeFence(home, clock=later)
    first = f.fence(home / "workspaces" / "a1")
    for _ in range(5):
        assert f.fence(home / "workspaces" / "a1") == first
    assert f.listings == 1
    assert first.files == {_key(home / "keys" / "root.key"), _key(home / "agentix.db")}
    assert first.denied == {_key(home)} and first.allowed == {_key(home / "workspaces" / "a1")}


def test_a_key_added_after_the_listing_is_protected_by_the_next_fence(tmp_path: Path) -> None:
    home = _home(tmp_path)
    f = HomeFence(home, clock=later)
    f.fence(None)
    time.sleep(0.02)  # a later tick: the directory's timestamps move
    (home / "keys" / "new.key").write_bytes(b"n" * 32)
    assert _key(home / "keys" / "new.key") in f.fence(None).files
    assert f.listings == 2


def test_a_database_file_replaced_by_rename_is_protected_under_its_new_inode(tmp_path: Path) -> None:
    home = _home(tmp_path)
    f = HomeFence(home, clock=later)
    old = f.fence(None).files
    time.sleep(0.02)
    (home / "agentix.db.tmp").write_bytes(b"db2")
    os.replace(home / "agentix.db.tmp", home / "agentix.db")
    new = f.fence(None).files
    assert _key(home / "agentix.db") in new and new != old


def test_a_listing_taken_in_the_tick_of_a_change_is_never_reused(tmp_path: Path) -> None:
    # the directories changed just now (the real clock): a file made later in the same tick
    # would not move their timestamps, so the listing is not kept and every call lists again
    home = _home(tmp_path)
    f = HomeFence(home)
    f.fence(None)
    f.fence(None)
    assert f.listings == 2
    # once their stamps are old enough, the next listing is kept
    f.clock = later
    f.fence(None)
    f.fence(None)
    assert f.listings == 3


def test_mtime_set_back_after_a_change_is_still_seen_by_its_ctime(tmp_path: Path) -> None:
    home = _home(tmp_path)
    f = HomeFence(home, clock=later)
    f.fence(None)
    st = os.stat(home / "keys")
    time.sleep(0.02)
    (home / "keys" / "hidden.key").write_bytes(b"h")
    os.utime(home / "keys", ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime back as it was
    assert _key(home / "keys" / "hidden.key") in f.fence(None).files


def test_a_hard_link_to_a_key_made_after_the_listing_is_refused_by_the_file_tools(tmp_path: Path) -> None:
    home = _home(tmp_path)
    ws = home.parent / "elsewhere"
    ws.mkdir()
    f = HomeFence(home, clock=later)
    f.fence(ws)
    os.link(home / "keys" / "root.key", ws / "innocent.txt")  # same inode, no home change
    before = (home / "keys" / "root.key").read_bytes()
    with safe_fs.fenced(f.fence(ws)), pytest.raises(CapabilityDenied) as exc:
        safe_fs.file_read(str(ws), "innocent.txt")
    assert exc.value.data["reason"] == "kernel_state"
    assert f.listings == 1
    assert (home / "keys" / "root.key").read_bytes() == before


def test_a_missing_home_is_never_cached(tmp_path: Path) -> None:
    f = HomeFence(tmp_path / "nowhere", clock=later)
    f.fence(None)
    f.fence(None)
    assert f.listings == 2
