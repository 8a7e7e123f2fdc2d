"""The shortcuts that make snapshot + restore cheap (bench/packages.py, goal <= 2x `tar`) never
weaken what they replace:

* a restore streams a layer this store wrote itself (and whose file still has the stamp it had
  then) without hashing it again; a layer altered at rest since is hashed again and refused,
  and nothing appears;
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentix.core.errors import PackageRejected
from agentix.kernel.snapshots_api import walk_workspace
from agentix.packages import layout as layout_mod
from agentix.packages.layout import Layout
from agentix.packages.snapshot import Snapshot, read_workspace, unpack_snapshot
from agentix.packages.unpack import UnpackLimits


def _tree(root: Path) -> Path:
    ws = root / "ws"
    (ws / "sub" / "deeper").mkdir(parents=True)
    (ws / "notes.txt").write_bytes(b"remember the milk\n")
    (ws / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    (ws / "sub" / "deeper" / "empty").write_bytes(b"")
    (ws / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(ws / "run.sh", 0o755)
    return ws


def _files(root: Path) -> dict[str, tuple[bytes | None, int]]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*"))}


def _hashers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []
    real = layout_mod.Sha256Thread

    def counted() -> layout_mod.Sha256Thread:
        made.append(1)
        return real()

    monkeypatch.setattr(layout_mod, "Sha256Thread", counted)
    return made


def test_a_restore_does_not_hash_again_the_layer_this_store_just_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _tree(tmp_path)
    layout = Layout(tmp_path / "registry").init()
    desc, _ = read_workspace(ws, layout, UnpackLimits(), walk_workspace)
    made = _hashers(monkeypatch)
    dest = unpack_snapshot(layout, Snapshot(None, "sha256:" + "0" * 64, {}, (desc,)), tmp_path / "out",
                           UnpackLimits())
    assert made == []  # hashed once, as it was written; streamed back without a second hash
    assert _files(dest) == _files(ws)
    # another store over the same files (a kernel started again) did not hash it: it hashes
    other = Layout(tmp_path / "registry")
    unpack_snapshot(other, Snapshot(None, "sha256:" + "0" * 64, {}, (desc,)), tmp_path / "out2", UnpackLimits())
    assert made == [1]


@pytest.mark.parametrize("how", ["rewritten_in_place", "replaced", "touched"])
def test_a_snapshot_layer_altered_at_rest_is_hashed_again_and_refused(tmp_path: Path, how: str) -> None:
    ws = _tree(tmp_path)
    layout = Layout(tmp_path / "registry").init()
    desc, _ = read_workspace(ws, layout, UnpackLimits(), walk_workspace)
    blob = layout.blob_path(desc.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 1  # inside the file's bytes: a plain tar still parses
    os.chmod(blob, 0o600)
    if how == "rewritten_in_place":   # same inode, same size
        with open(blob, "r+b") as f:
            f.write(bytes(data))
    elif how == "replaced":
        (blob.parent / "new").write_bytes(bytes(data))
        (blob.parent / "new").replace(blob)
    else:                             # the bytes unchanged, the file's times moved: hashed again, and it passes
        os.utime(blob)
    (tmp_path / "out").mkdir()
    snap = Snapshot(None, "sha256:" + "0" * 64, {}, (desc,))
    if how == "touched":
        dest = unpack_snapshot(layout, snap, tmp_path / "out" / "ws", UnpackLimits())
        assert _files(dest) == _files(ws)
        return
    with pytest.raises(PackageRejected) as exc:
        unpack_snapshot(layout, snap, tmp_path / "out" / "ws", UnpackLimits())
    assert exc.value.data["reason"] == "digest_mismatch"
    assert os.listdir(tmp_path / "out") == []
