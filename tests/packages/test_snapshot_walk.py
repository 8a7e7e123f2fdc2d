"""A snapshot reads an agent's workspace only through the safe walker (``safewalk.walk``,
handed to ``packages/snapshot.read_workspace`` by the kernel): an agent that plants links,
FIFOs or hard links in its workspace, or swaps a directory for a link while the snapshot
walks it, never gets a host file's bytes into its snapshot.

Each attack plants a *secret* outside the workspace (a stand-in for ``/etc/shadow``) and
asserts (1) the walk or snapshot did not block, (2) the secret's bytes are nowhere in the
layer, (3) what was skipped is named, and (4) the workspace itself was not changed.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import LimitExceeded, PackageRejected
from agentix.kernel.snapshots_api import walk_workspace
from agentix.packages.layout import Layout
from agentix.packages.snapshot import read_workspace
from agentix.packages.unpack import UnpackLimits, unpack_layers
from agentix.sandbox import safewalk

SECRET = b"root:$6$SECRET-HASH-THAT-MUST-NEVER-LEAVE-THE-HOST:19000:0:99999:7:::\n"


def _world(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace with ordinary content, and a secret file outside it."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "shadow").write_bytes(SECRET)
    os.chmod(host / "shadow", 0o600)
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "notes.txt").write_bytes(b"mine\n")
    (ws / "sub" / "data.bin").write_bytes(os.urandom(5000))
    return ws, host


def _state(root: Path) -> list[tuple[str, int, int, bytes | str]]:
    """Everything below ``root`` without following links: names, types, modes, contents."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in sorted(dirnames + filenames):
            p = Path(dirpath) / n
            st_ = p.lstat()
            if stat.S_ISREG(st_.st_mode):
                body: bytes | str = p.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                body = os.readlink(p)
            else:
                body = ""
            out.append((str(p.relative_to(root)), stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), body))
    return sorted(out)


def _snapshot(ws: Path, tmp_path: Path, limits: UnpackLimits = UnpackLimits()) -> tuple[bytes, list[str]]:
    layout = Layout(tmp_path / "registry").init()
    desc, skipped = read_workspace(ws, layout, limits, walk_workspace)
    return layout.blob_path(desc.digest).read_bytes(), skipped


def _members(layer: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as tar:
        return {m.name.rstrip("/"): (tar.extractfile(m).read() if m.isreg() else None)  # type: ignore[union-attr]
                for m in tar.getmembers()}


# ---------------------------------------------------------------- the attack catalogue
def _symlink_to_secret(ws: Path, host: Path) -> list[str]:
    os.symlink(host / "shadow", ws / "shadow")
    return ["shadow"]


def _relative_symlink_out(ws: Path, host: Path) -> list[str]:
    os.symlink("../host/shadow", ws / "sub" / "up")
    return ["sub/up"]


def _symlinked_directory(ws: Path, host: Path) -> list[str]:
    os.symlink(host, ws / "hostdir")
    return ["hostdir"]


def _hardlink_to_secret(ws: Path, host: Path) -> list[str]:
    os.link(host / "shadow", ws / "sub" / "looks-like-mine.txt")
    return ["sub/looks-like-mine.txt"]


def _fifo(ws: Path, host: Path) -> list[str]:
    os.mkfifo(ws / "sub" / "pipe")  # opening it for reading would block forever
    return ["sub/pipe"]


def _socket(ws: Path, host: Path) -> list[str]:
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(ws / "sock"))
    s.close()
    return ["sock"]


def _device(ws: Path, host: Path) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(ws / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless bytes
    return ["zero"]


ATTACKS = {f.__name__.lstrip("_"): f for f in (_symlink_to_secret, _relative_symlink_out, _symlinked_directory,
                                                 _hardlink_to_secret, _fifo, _socket, _device)}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_planted_entry_is_skipped_named_and_never_read(tmp_path: Path, attack: str) -> None:
    ws, host = _world(tmp_path)
    expected = ATTACKS[attack](ws, host)
    before = _state(ws)
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.update(r=_snapshot(ws, tmp_path)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the snapshot blocked"
    layer, skipped = out["r"]  # type: ignore[misc]
    assert skipped == expected
    assert SECRET not in layer
    members = _members(layer)
    assert set(members) == {"notes.txt", "sub", "sub/data.bin"}
    assert members["notes.txt"] == b"mine\n"
    assert _state(ws) == before  # the walk changed nothing in the workspace
    assert (host / "shadow").read_bytes() == SECRET


def test_a_file_hard_linked_twice_inside_the_workspace_is_skipped_under_both_names(tmp_path: Path) -> None:
    # from inside, two names of one inode look alike whether the other is in or out of the tree
    ws, _ = _world(tmp_path)
    os.link(ws / "notes.txt", ws / "sub" / "again.txt")
    layer, skipped = _snapshot(ws, tmp_path)
    assert skipped == ["notes.txt", "sub/again.txt"]
    assert set(_members(layer)) == {"sub", "sub/data.bin"}


def test_the_walk_refuses_a_planted_link_when_asked_to_refuse(tmp_path: Path) -> None:
    ws, host = _world(tmp_path)
    os.symlink(host / "shadow", ws / "sub" / "shadow")
    fd = safewalk.open_dir(ws, follow=False)
    try:
        with pytest.raises(safewalk.WalkError) as ei:
            for e in safewalk.walk(fd):
                if e.fd is not None:
                    assert SECRET not in os.read(e.fd, e.size + 1)
    finally:
        os.close(fd)
    assert ei.value.path == "sub/shadow" and ei.value.bound is None


def test_a_workspace_that_is_itself_a_link_is_refused(tmp_path: Path) -> None:
    ws, host = _world(tmp_path)
    link = tmp_path / "ws-link"
    os.symlink(host, link)
    from agentix.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        _snapshot(link, tmp_path)
    assert not list((tmp_path / "registry" / "tmp").iterdir())


@pytest.mark.parametrize("bound", ["bytes", "entries"])
def test_a_workspace_over_a_bound_is_refused_and_stores_nothing(tmp_path: Path, bound: str) -> None:
    ws, _ = _world(tmp_path)
    limits = UnpackLimits(max_bytes=1000) if bound == "bytes" else UnpackLimits(max_entries=2)
    with pytest.raises(LimitExceeded) as ei:
        _snapshot(ws, tmp_path, limits)
    assert ei.value.data["limit"] == bound
    layout = Layout(tmp_path / "registry")
    assert not list(layout.tmp.iterdir()) and not list(layout.blobs.iterdir())


def test_a_directory_swapped_for_a_link_mid_walk_never_leaks_the_secret(tmp_path: Path) -> None:
    """A racer flips ``ws/d`` between a real directory and a symlink to the host directory
    holding the secret, as fast as it can, while snapshots run; no snapshot ever holds it."""
    ws, host = _world(tmp_path)
    (ws / "d").mkdir()
    for i in range(20):
        (ws / "d" / f"f{i:02d}").write_bytes(b"ok")
        os.link(host / "shadow", host / f"f{i:02d}") if i % 2 else (host / f"f{i:02d}").write_bytes(SECRET)
    stop = threading.Event()
    flips = [0]

    def racer() -> None:
        while not stop.is_set():
            os.rename(ws / "d", ws / "d-real")
            os.symlink(host, ws / "d")
            os.unlink(ws / "d")
            os.rename(ws / "d-real", ws / "d")
            flips[0] += 1

    t = threading.Thread(target=racer, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 4
        runs = 0
        while time.monotonic() < deadline or runs < 20:
            layer, skipped = _snapshot(ws, tmp_path / f"r{runs}")
            assert SECRET not in layer
            for name, body in _members(layer).items():
                assert body in (None, b"ok", b"mine\n") or name == "sub/data.bin"
            runs += 1
    finally:
        stop.set()
        t.join(10)
    assert flips[0] > 0


# ---------------------------------------------------------------- property: only the tree's own files
ENTRY = st.tuples(st.sampled_from(["a", "b", "c/x", "c/y", "d/e/f"]),
                  st.sampled_from(["file", "dir", "link_out", "link_in", "hardlink_out", "fifo"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ENTRY, min_size=1, max_size=8))
def test_any_tree_snapshots_exactly_its_own_single_link_regular_files(tmp_path_factory: pytest.TempPathFactory,
                                                                      plan: list[tuple[str, str]]) -> None:
    base = tmp_path_factory.mktemp("walk")
    ws, host = _world(base)
    for rel, kind in plan:
        p = ws / rel
        if p.exists() or p.is_symlink():
            continue
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue
        if kind == "file":
            p.write_bytes(rel.encode())
        elif kind == "dir":
            p.mkdir()
        elif kind == "link_out":
            os.symlink(host / "shadow", p)
        elif kind == "link_in":
            os.symlink(ws / "notes.txt", p)
        elif kind == "hardlink_out":
            os.link(host / "shadow", p)
        else:
            os.mkfifo(p)
    before = _state(ws)
    layer, skipped = _snapshot(ws, base)
    # the reference model: walk by lstat, never following a link
    want_files, want_dirs, want_skipped = {}, set(), []

    def model(d: Path, prefix: str) -> None:
        for n in sorted(os.listdir(d)):
            p, rel = d / n, f"{prefix}{n}"
            st_ = p.lstat()
            if stat.S_ISDIR(st_.st_mode):
                want_dirs.add(rel)
                model(p, rel + "/")
            elif stat.S_ISREG(st_.st_mode) and st_.st_nlink == 1:
                want_files[rel] = p.read_bytes()
            else:
                want_skipped.append(rel)

    model(ws, "")
    members = _members(layer)
    assert {k: v for k, v in members.items() if v is not None} == want_files
    assert {k for k, v in members.items() if v is None} == want_dirs
    assert skipped == sorted(want_skipped)
    assert SECRET not in layer
    assert _state(ws) == before
    # and it restores to the same tree
    layout = Layout(base / "registry")
    digest = "sha256:" + __import__("hashlib").sha256(layer).hexdigest()
    with open(layout.blob_path(digest), "rb") as f:
        dest = unpack_layers([f], base / "restored", compressed=[False])
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == sorted({*want_files, *want_dirs})


def test_the_same_tree_gives_the_same_layer_bytes(tmp_path: Path) -> None:
    ws, _ = _world(tmp_path)
    a, _ = _snapshot(ws, tmp_path / "one")
    for p in ws.rglob("*"):
        os.utime(p, (1, 1))  # times never enter the layer
    b, _ = _snapshot(ws, tmp_path / "two")
    assert a == b


# ---------------------------------------------------------------- layer formats
@pytest.mark.parametrize("fmt", ["tar", "tar+gzip"])
def test_a_snapshot_layer_restores_by_its_media_type_and_a_mislabelled_one_is_refused(tmp_path: Path,
                                                                                      fmt: str) -> None:
    """New snapshots are plain tar; snapshots made before (gzip *stored* layers) restore as
    before. The unpacker follows the media type: a layer labelled as the other format is
    refused (``corrupt``) and nothing appears."""
    import gzip

    from agentix.packages.layout import Descriptor
    from agentix.packages.snapshot import Snapshot, unpack_snapshot
    from agentix.packages.unpack import PLAIN_TAR_TYPE

    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "a.txt").write_bytes(b"alpha\n")
    plain, _ = _snapshot(ws, tmp_path)
    blob = plain if fmt == "tar" else gzip.compress(plain, mtime=0)
    layout = Layout(tmp_path / "registry")
    gz_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    right, wrong = (PLAIN_TAR_TYPE, gz_type) if fmt == "tar" else (gz_type, PLAIN_TAR_TYPE)
    digest = layout.put_bytes(blob)
    (tmp_path / "out").mkdir()
    dest = unpack_snapshot(layout, Snapshot(None, "sha256:" + "0" * 64, {}, (Descriptor(right, digest, len(blob)),)),
                           tmp_path / "out" / "ws", UnpackLimits())
    assert (dest / "sub" / "a.txt").read_bytes() == b"alpha\n"
    (tmp_path / "out2").mkdir()
    with pytest.raises(PackageRejected) as exc:
        unpack_snapshot(layout, Snapshot(None, "sha256:" + "0" * 64, {}, (Descriptor(wrong, digest, len(blob)),)),
                        tmp_path / "out2" / "ws", UnpackLimits())
    assert exc.value.data["reason"] == "corrupt"
    assert os.listdir(tmp_path / "out2") == []
