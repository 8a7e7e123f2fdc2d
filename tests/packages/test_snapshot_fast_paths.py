"""The shortcuts that make snapshot + restore cheap (bench/packages.py, goal <= 2x `tar`) never
weaken what they replace:

* a restore streams a layer this store wrote itself (and whose file still has the stamp it had
  then) without hashing it again; a layer altered at rest since is hashed again and refused,
  and nothing appears;
* the layer's tar headers, built directly for plain entries, are byte for byte the ones
  ``tarfile`` writes (same state, same digest as before the shortcut), and a header read
  directly means exactly what ``tarfile`` reads from the same block (``packages/tarhead.py``).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import PackageRejected
from agentix.kernel.snapshots_api import walk_workspace
from agentix.packages import layout as layout_mod
from agentix.packages.layout import Layout
from agentix.packages.snapshot import Snapshot, read_workspace, unpack_snapshot
from agentix.packages.tarhead import PlainTarInfo, plain_header
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


def _tarfile_header(name: str, is_dir: bool, mode: int, size: int) -> bytes:
    """The header as the snapshot layer was always written: what ``tarfile`` writes for the
    entry (PAX format; TarInfo's defaults: mtime 0, owners 0, no owner names)."""
    out = io.BytesIO()
    tar = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                       errors="surrogateescape")
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = (tarfile.DIRTYPE if is_dir else tarfile.REGTYPE), mode, size
    tar.addfile(info)   # the header only
    return out.getvalue()[:tar.offset]


_names = st.one_of(
    st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=110),   # ASCII, around 100
    st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=95, max_size=105),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=60),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b).map(os.fsdecode),  # undecodable bytes
)


@settings(max_examples=500, deadline=None)
@given(_names, st.booleans(), st.sampled_from([0o644, 0o755]),
       st.one_of(st.integers(0, 1 << 20), st.integers(8 ** 11 - 2, 8 ** 11 + 2), st.integers(0, 8 ** 13)))
def test_a_header_built_directly_is_the_one_tarfile_writes(name: str, is_dir: bool, mode: int, size: int) -> None:
    if is_dir:
        name, size = name + "/", 0
    assert plain_header(name, is_dir, mode, size) == _tarfile_header(name, is_dir, mode, size)


def test_the_bench_tree_has_the_digest_it_had_before_the_shortcuts(tmp_path: Path) -> None:
    """1,000 files of 20 directories, names and sizes as bench/packages.py makes them (the
    bytes small): the layer is exactly what ``tarfile`` headers gave."""
    ws = tmp_path / "ws"
    expected = []
    for i in range(1000):
        d = ws / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        body = b"x" * (i % 700)
        (d / f"f{i:04d}.dat").write_bytes(body)
    for rel in sorted({f"d{i % 20:02d}" for i in range(1000)}):
        expected.append(_tarfile_header(rel + "/", True, 0o755, 0))
        for name in sorted(p.name for p in (ws / rel).iterdir()):
            body = (ws / rel / name).read_bytes()
            expected += [_tarfile_header(f"{rel}/{name}", False, 0o644, len(body)), body,
                         bytes(-len(body) % tarfile.BLOCKSIZE)]
    expected.append(bytes(2 * tarfile.BLOCKSIZE))
    plain = b"".join(expected)
    plain += bytes(-len(plain) % tarfile.RECORDSIZE)
    layout = Layout(tmp_path / "registry").init()
    desc, _ = read_workspace(ws, layout, UnpackLimits(), walk_workspace)
    assert layout.blob_path(desc.digest).read_bytes() == plain
    assert desc.digest == "sha256:" + hashlib.sha256(plain).hexdigest()


_FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
           "devmajor", "devminor")


def _read(cls: type[tarfile.TarInfo], buf: bytes) -> tuple[object, ...] | str:
    try:
        ti = cls.frombuf(buf, "utf-8", "surrogateescape")
    except Exception as err:  # noqa: BLE001 - the same refusal, whatever it is
        return type(err).__name__
    return tuple(getattr(ti, f) for f in _FIELDS) + (getattr(ti, "_sparse_structs", None),)


def _mutated(data: st.DataObject) -> bytes:
    name = data.draw(_names)
    is_dir = data.draw(st.booleans())
    buf = bytearray(plain_header(name + "/" if is_dir else name, is_dir, data.draw(st.sampled_from([0o644, 0o755])),
                                 0 if is_dir else data.draw(st.integers(0, 8 ** 11 + 5))))
    for _ in range(data.draw(st.integers(0, 3))):  # flip, blank or set bytes anywhere in the first block
        i = data.draw(st.integers(0, tarfile.BLOCKSIZE - 1))
        buf[i] = data.draw(st.sampled_from([0, 32, ord("0"), ord("7"), ord("/"), 0xFF, buf[i] ^ 1]))
    return bytes(buf[:tarfile.BLOCKSIZE])


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_a_header_is_read_exactly_as_tarfile_reads_it(data: st.DataObject) -> None:
    if data.draw(st.integers(0, 9)):   # mostly a normalised header, perhaps damaged; else any block
        buf = _mutated(data)
    else:
        buf = data.draw(st.binary(min_size=tarfile.BLOCKSIZE, max_size=tarfile.BLOCKSIZE))
    assert _read(PlainTarInfo, buf) == _read(tarfile.TarInfo, buf)


def test_a_normalised_header_is_read_without_tarfile_and_anything_else_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = tarfile.TarInfo.frombuf.__func__  # type: ignore[attr-defined]
    asked: list[bytes] = []

    def counted(cls: type, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        asked.append(buf)
        return real(cls, buf, encoding, errors)

    monkeypatch.setattr(tarfile.TarInfo, "frombuf", classmethod(counted))
    for name, is_dir in [("a/b.txt", False), ("sub/", True), ("x" * 100, False)]:
        ti = PlainTarInfo.frombuf(plain_header(name, is_dir, 0o644 if not is_dir else 0o755, 0 if is_dir else 9),
                                  "utf-8", "surrogateescape")
        assert ti.name == name.rstrip("/") and ti.isdir() == is_dir
    assert asked == []
    odd = plain_header("a", False, 0o600, 1)   # a mode snapshots never write: tarfile reads it
    assert PlainTarInfo.frombuf(odd, "utf-8", "surrogateescape").mode == 0o600
    assert asked == [odd]
