"""Every unpack refuses unsafe archives (the issue's 'Bad input' list), parametrised over a
catalogue of attacks; each refusal leaves nothing behind: no destination, no staging dir,
and no file written outside."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import PackageRejected
from agentix.packages.layout import Descriptor, Layout
from agentix.packages.unpack import UnpackLimits, unpack_layers


def layer(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            if isinstance(e, tuple):
                ti, data = e
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(e)
    return gzip.compress(raw.getvalue(), mtime=0)


def ti(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.linkname = kind, mode, link
    return t


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return ti(name, mode=mode), data


ATTACKS: dict[str, tuple[Callable[[], list[bytes]], str]] = {
    "dot_dot": (lambda: [layer(f("../escape.txt"))], "dot_dot"),
    "dot_dot_inside": (lambda: [layer(f("a/../../escape.txt"))], "dot_dot"),
    "absolute_path": (lambda: [layer(f("/tmp/escape.txt"))], "absolute_path"),
    "symlink_out": (lambda: [layer(ti("link", tarfile.SYMTYPE, link="/etc"))], "link"),
    "symlink_then_write_through": (lambda: [layer(ti("d", tarfile.SYMTYPE, link=".."), f("d/escape.txt"))], "link"),
    "hardlink_out": (lambda: [layer(ti("h", tarfile.LNKTYPE, link="/etc/passwd"))], "link"),
    "hardlink_inside": (lambda: [layer(f("a"), ti("h", tarfile.LNKTYPE, link="a"))], "link"),
    "char_device": (lambda: [layer(ti("null", tarfile.CHRTYPE))], "special_file"),
    "block_device": (lambda: [layer(ti("sda", tarfile.BLKTYPE))], "special_file"),
    "fifo": (lambda: [layer(ti("fifo", tarfile.FIFOTYPE))], "special_file"),
    "gnu_sparse": (lambda: [layer(ti("sparse", tarfile.GNUTYPE_SPARSE))], "special_file"),
    "setuid": (lambda: [layer(f("su", mode=0o4755))], "setuid"),
    "setgid": (lambda: [layer(f("sg", mode=0o2755))], "setuid"),
    "sticky_dir": (lambda: [layer(ti("t", tarfile.DIRTYPE, mode=0o1777))], "setuid"),
    "duplicate_file": (lambda: [layer(f("a", b"1"), f("a", b"2"))], "duplicate"),
    "duplicate_across_layers": (lambda: [layer(f("a", b"1")), layer(f("a", b"2"))], "duplicate"),
    "file_over_dir": (lambda: [layer(f("a/b")), layer(f("a"))], "duplicate"),
    "empty_name": (lambda: [layer(f("./"))], "dot_dot"),
    "not_gzip": (lambda: [b"this is not a gzip stream at all"], "corrupt"),
    "truncated_gzip": (lambda: [layer(f("a", b"y" * 5000))[:40]], "corrupt"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_unsafe_archive_is_refused_and_leaves_nothing(tmp_path: Path, attack: str) -> None:
    make, reason = ATTACKS[attack]
    root = tmp_path / "root"
    root.mkdir()
    dest = root / "pkg"
    with pytest.raises(PackageRejected) as exc:
        unpack_layers([io.BytesIO(b) for b in make()], dest)
    assert exc.value.data["reason"] == reason, exc.value.message
    assert os.listdir(root) == []  # no destination, no staging directory
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()


def test_decompression_bomb_is_bounded_by_bytes(tmp_path: Path) -> None:
    bomb = layer(f("zeros", b"\0" * (8 << 20)))
    assert len(bomb) < 64 << 10  # a tiny download...
    with pytest.raises(PackageRejected) as exc:
        unpack_layers([io.BytesIO(bomb)], tmp_path / "pkg", UnpackLimits(max_bytes=1 << 20))
    assert exc.value.data["reason"] == "too_large"
    assert os.listdir(tmp_path) == []


def test_too_many_entries_is_refused(tmp_path: Path) -> None:
    many = layer(*[f(f"f{i}") for i in range(50)])
    with pytest.raises(PackageRejected) as exc:
        unpack_layers([io.BytesIO(many)], tmp_path / "pkg", UnpackLimits(max_entries=20))
    assert exc.value.data["reason"] == "too_many_entries"
    assert os.listdir(tmp_path) == []


def test_a_safe_archive_unpacks_with_fixed_modes(tmp_path: Path) -> None:
    ok = layer(ti("a", tarfile.DIRTYPE, mode=0o777), f("a/run.py", b"print(1)", mode=0o777), f("a/d.txt", mode=0o666))
    dest = unpack_layers([io.BytesIO(ok), io.BytesIO(layer(ti("a", tarfile.DIRTYPE), f("a/more.txt")))],
                         tmp_path / "pkg")
    assert (dest / "a" / "run.py").read_bytes() == b"print(1)"
    assert stat.S_IMODE((dest / "a" / "run.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "a" / "d.txt").stat().st_mode) == 0o644
    assert sorted(p.name for p in (dest / "a").iterdir()) == ["d.txt", "more.txt", "run.py"]


def test_an_existing_destination_is_never_reused(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    with pytest.raises(FileExistsError):
        unpack_layers([io.BytesIO(layer(f("a")))], tmp_path / "pkg")


# ---------------------------------------------------------------- property: nothing ever lands outside
NAMES = st.lists(st.sampled_from(["a", "b", "..", ".", "", "/", "c.txt", "\\"]), min_size=1, max_size=4).map("/".join)
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])
MODES = st.sampled_from([0o644, 0o755, 0o4755, 0o1777, 0o2700])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(NAMES, KINDS, MODES, NAMES), min_size=1, max_size=6))
def test_any_archive_unpacks_inside_the_root_or_not_at_all(tmp_path_factory: pytest.TempPathFactory,
                                                           entries: list[tuple[str, bytes, int, str]]) -> None:
    base = tmp_path_factory.mktemp("prop")
    root = base / "root"
    root.mkdir()
    members = []
    for name, kind, mode, link in entries:
        t = ti(name or "x", kind, mode, link)
        members.append((t, b"data") if kind == tarfile.REGTYPE else t)
    try:
        dest = unpack_layers([io.BytesIO(layer(*members))], root / "pkg")
    except PackageRejected:
        assert os.listdir(root) == []
        assert sorted(os.listdir(base)) == ["root"]
        return
    assert sorted(os.listdir(base)) == ["root"] and os.listdir(root) == ["pkg"]
    for p in dest.rglob("*"):
        st_ = p.lstat()
        assert stat.S_ISREG(st_.st_mode) or stat.S_ISDIR(st_.st_mode)
        assert not st_.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
        assert p.resolve().is_relative_to(dest.resolve())


# ---------------------------------------------------------------- verified while streaming (one read)
def _stored(tmp_path: Path, blob: bytes) -> tuple[Layout, Descriptor]:
    layout = Layout(tmp_path / "registry").init()
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layout.put_bytes(blob), len(blob))
    return layout, desc


GOOD = layer(ti("a", tarfile.DIRTYPE), f("a/one.txt", b"1" * 3000), f("a/two.bin", os.urandom(70_000)),
             f("z.txt", b"zzz"))
ALTERATIONS: dict[str, Callable[[bytes], bytes]] = {
    "gzip_header": lambda b: b[:4] + bytes([b[4] ^ 1]) + b[5:],        # mtime byte: still a valid gzip
    "first_tar_header": lambda b: b[:12] + bytes([b[12] ^ 0xFF]) + b[13:],
    "middle_of_a_file": lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1:],
    "crc_trailer": lambda b: b[:-6] + bytes([b[-6] ^ 1]) + b[-5:],
    "appended_bytes": lambda b: b + b"trailing junk after the gzip member",
    "appended_tar": lambda b: b + layer(f("extra.txt", b"smuggled")),
    "truncated": lambda b: b[:-20],
    "bomb_in_place": lambda b: layer(f("zeros", b"\0" * (4 << 20))),
}


@pytest.mark.parametrize("alteration", sorted(ALTERATIONS))
def test_a_blob_altered_at_rest_is_refused_while_streaming_and_leaves_nothing(tmp_path: Path,
                                                                               alteration: str) -> None:
    layout, desc = _stored(tmp_path, GOOD)
    layout.blob_path(desc.digest).write_bytes(ALTERATIONS[alteration](GOOD))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PackageRejected) as exc, layout.open_verifying(desc) as r:
        unpack_layers([r], root / "pkg", UnpackLimits(max_bytes=1 << 20))
    assert exc.value.data["reason"] == "digest_mismatch", exc.value.message
    assert os.listdir(root) == []  # no destination, no staging directory


def test_an_intact_blob_streams_once_and_unpacks(tmp_path: Path) -> None:
    layout, desc = _stored(tmp_path, GOOD)
    with layout.open_verifying(desc) as r:
        dest = unpack_layers([r], tmp_path / "pkg")
        assert r.verified and r.n == len(GOOD)
    assert (dest / "a" / "one.txt").read_bytes() == b"1" * 3000
    assert sorted(os.listdir(dest)) == ["a", "z.txt"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_a_digest_mismatch_and_nothing_appears(tmp_path_factory: pytest.TempPathFactory,
                                                                   at: int, xor: int) -> None:
    base = tmp_path_factory.mktemp("flip")
    layout, desc = _stored(base, GOOD)
    layout.blob_path(desc.digest).write_bytes(GOOD[:at] + bytes([GOOD[at] ^ xor]) + GOOD[at + 1:])
    root = base / "root"
    root.mkdir()
    with pytest.raises(PackageRejected) as exc, layout.open_verifying(desc) as r:
        unpack_layers([r], root / "pkg")
    assert exc.value.data["reason"] == "digest_mismatch"
    assert os.listdir(root) == []
