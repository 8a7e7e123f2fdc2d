"""Every unpack refuses unsafe archives (the issue's 'Bad input' list), parametrised over a
catalogue of attacks; each refusal leaves nothing behind: no destination, no staging dir,
and no file written outside."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import PackageRejected
from agentix.packages import unpack as unpack_mod
from agentix.packages.layout import Descriptor, Layout
from agentix.packages.unpack import PLAIN_TAR_TYPE, UnpackLimits, gzipped, unpack_layers


def layer(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    return gzip.compress(plain_layer(*entries), mtime=0)


def plain_layer(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    """An uncompressed tar layer (``PLAIN_TAR_TYPE``: snapshots)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            if isinstance(e, tuple):
                ti, data = e
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(e)
    return raw.getvalue()


def ti(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.linkname = kind, mode, link
    return t


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return ti(name, mode=mode), data


RANDOM_5K = os.urandom(5000)
#: every attack, in both layer formats the unpacker reads
PACK = {"gzip": layer, "tar": plain_layer}
ATTACKS: dict[str, tuple[Callable[[Callable[..., bytes]], list[bytes]], str]] = {
    "dot_dot": (lambda L: [L(f("../escape.txt"))], "dot_dot"),
    "dot_dot_inside": (lambda L: [L(f("a/../../escape.txt"))], "dot_dot"),
    "absolute_path": (lambda L: [L(f("/tmp/escape.txt"))], "absolute_path"),
    "symlink_out": (lambda L: [L(ti("link", tarfile.SYMTYPE, link="/etc"))], "link"),
    "symlink_then_write_through": (lambda L: [L(ti("d", tarfile.SYMTYPE, link=".."), f("d/escape.txt"))], "link"),
    "hardlink_out": (lambda L: [L(ti("h", tarfile.LNKTYPE, link="/etc/passwd"))], "link"),
    "hardlink_inside": (lambda L: [L(f("a"), ti("h", tarfile.LNKTYPE, link="a"))], "link"),
    "char_device": (lambda L: [L(ti("null", tarfile.CHRTYPE))], "special_file"),
    "block_device": (lambda L: [L(ti("sda", tarfile.BLKTYPE))], "special_file"),
    "fifo": (lambda L: [L(ti("fifo", tarfile.FIFOTYPE))], "special_file"),
    "gnu_sparse": (lambda L: [L(ti("sparse", tarfile.GNUTYPE_SPARSE))], "special_file"),
    "setuid": (lambda L: [L(f("su", mode=0o4755))], "setuid"),
    "setgid": (lambda L: [L(f("sg", mode=0o2755))], "setuid"),
    "sticky_dir": (lambda L: [L(ti("t", tarfile.DIRTYPE, mode=0o1777))], "setuid"),
    "duplicate_file": (lambda L: [L(f("a", b"1"), f("a", b"2"))], "duplicate"),
    "duplicate_across_layers": (lambda L: [L(f("a", b"1")), L(f("a", b"2"))], "duplicate"),
    "file_over_dir": (lambda L: [L(f("a/b")), L(f("a"))], "duplicate"),
    "empty_name": (lambda L: [L(f("./"))], "dot_dot"),
    "not_an_archive": (lambda L: [b"this is not a gzip stream at all"], "corrupt"),
    "truncated_header": (lambda L: [L(f("a", b"y" * 5000))[:40]], "corrupt"),
    "truncated_content": (lambda L: [L(f("a", RANDOM_5K))[:1500]], "corrupt"),
}


@pytest.mark.parametrize("fmt", sorted(PACK))
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_unsafe_archive_is_refused_and_leaves_nothing(tmp_path: Path, attack: str, fmt: str) -> None:
    make, reason = ATTACKS[attack]
    root = tmp_path / "root"
    root.mkdir()
    dest = root / "pkg"
    blobs = make(PACK[fmt])
    with pytest.raises(PackageRejected) as exc:
        unpack_layers([io.BytesIO(b) for b in blobs], dest, compressed=[fmt == "gzip"] * len(blobs))
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
@given(st.lists(st.tuples(NAMES, KINDS, MODES, NAMES), min_size=1, max_size=6), st.sampled_from(sorted(PACK)))
def test_any_archive_unpacks_inside_the_root_or_not_at_all(tmp_path_factory: pytest.TempPathFactory,
                                                           entries: list[tuple[str, bytes, int, str]],
                                                           fmt: str) -> None:
    base = tmp_path_factory.mktemp("prop")
    root = base / "root"
    root.mkdir()
    members = []
    for name, kind, mode, link in entries:
        t = ti(name or "x", kind, mode, link)
        members.append((t, b"data") if kind == tarfile.REGTYPE else t)
    try:
        dest = unpack_layers([io.BytesIO(PACK[fmt](*members))], root / "pkg", compressed=[fmt == "gzip"])
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
def _stored(tmp_path: Path, blob: bytes, fmt: str = "gzip") -> tuple[Layout, Descriptor]:
    layout = Layout(tmp_path / "registry").init()
    media_type = "application/vnd.oci.image.layer.v1.tar+gzip" if fmt == "gzip" else PLAIN_TAR_TYPE
    desc = Descriptor(media_type, layout.put_bytes(blob), len(blob))
    return layout, desc


ENTRIES = (ti("a", tarfile.DIRTYPE), f("a/one.txt", b"1" * 3000), f("a/two.bin", os.urandom(70_000)),
           f("z.txt", b"zzz"))
GOOD = {"gzip": layer(*ENTRIES), "tar": plain_layer(*ENTRIES)}
ALTERATIONS: dict[str, Callable[[bytes, str], bytes]] = {
    "gzip_header": lambda b, fmt: b[:4] + bytes([b[4] ^ 1]) + b[5:],   # gzip: the mtime byte, still valid
    "first_tar_header": lambda b, fmt: b[:12] + bytes([b[12] ^ 0xFF]) + b[13:],
    "middle_of_a_file": lambda b, fmt: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1:],
    "crc_trailer": lambda b, fmt: b[:-6] + bytes([b[-6] ^ 1]) + b[-5:],  # tar: a byte of the end blocks
    "appended_bytes": lambda b, fmt: b + b"trailing junk after the archive",
    "appended_tar": lambda b, fmt: b + PACK[fmt](f("extra.txt", b"smuggled")),
    "replaced_tar": lambda b, fmt: PACK[fmt](f("a/one.txt", b"2" * 3000)),
    "truncated": lambda b, fmt: b[:-20],
    "bomb_in_place": lambda b, fmt: PACK[fmt](f("zeros", b"\0" * (4 << 20))),
}


@pytest.mark.parametrize("fmt", sorted(PACK))
@pytest.mark.parametrize("alteration", sorted(ALTERATIONS))
def test_a_blob_altered_at_rest_is_refused_while_streaming_and_leaves_nothing(tmp_path: Path,
                                                                               alteration: str, fmt: str) -> None:
    layout, desc = _stored(tmp_path, GOOD[fmt], fmt)
    layout.blob_path(desc.digest).write_bytes(ALTERATIONS[alteration](GOOD[fmt], fmt))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PackageRejected) as exc, layout.open_verifying(desc) as r:
        unpack_layers([r], root / "pkg", UnpackLimits(max_bytes=1 << 20), compressed=[gzipped(desc.media_type)])
    assert exc.value.data["reason"] == "digest_mismatch", exc.value.message
    assert os.listdir(root) == []  # no destination, no staging directory


@pytest.mark.parametrize("fmt", sorted(PACK))
def test_an_intact_blob_streams_once_and_unpacks(tmp_path: Path, fmt: str) -> None:
    layout, desc = _stored(tmp_path, GOOD[fmt], fmt)
    with layout.open_verifying(desc) as r:
        dest = unpack_layers([r], tmp_path / "pkg", compressed=[gzipped(desc.media_type)])
        assert r.verified and r.n == len(GOOD[fmt])
    assert (dest / "a" / "one.txt").read_bytes() == b"1" * 3000
    assert sorted(os.listdir(dest)) == ["a", "z.txt"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(PACK)), st.floats(min_value=0, max_value=1, exclude_max=True),
       st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_a_digest_mismatch_and_nothing_appears(tmp_path_factory: pytest.TempPathFactory,
                                                                   fmt: str, where: float, xor: int) -> None:
    base = tmp_path_factory.mktemp("flip")
    good = GOOD[fmt]
    at = int(where * len(good))
    layout, desc = _stored(base, good, fmt)
    layout.blob_path(desc.digest).write_bytes(good[:at] + bytes([good[at] ^ xor]) + good[at + 1:])
    root = base / "root"
    root.mkdir()
    with pytest.raises(PackageRejected) as exc, layout.open_verifying(desc) as r:
        unpack_layers([r], root / "pkg", compressed=[gzipped(desc.media_type)])
    assert exc.value.data["reason"] == "digest_mismatch"
    assert os.listdir(root) == []




INFLATERS = {"isal": unpack_mod.INFLATER, "zlib": zlib}
#: a gzip stream's trailer is CRC-32 then the size (mod 2**32), little-endian: the last 8 bytes
TRAILERS: dict[str, Callable[[bytes], bytes]] = {
    "crc": lambda b: b[:-8] + bytes([b[-8] ^ 1]) + b[-7:],
    "size": lambda b: b[:-4] + bytes([b[-4] ^ 1]) + b[-3:],
    "cut_trailer": lambda b: b[:-5],
    "garbage_after": lambda b: b + b"\x1f\x8bnot a member",
}


@pytest.mark.parametrize("inflater", INFLATERS)
@pytest.mark.parametrize("damage", TRAILERS)
def test_each_inflater_checks_every_members_crc_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        inflater: str, damage: str) -> None:
    """Layers are inflated by ISA-L (zlib where it is missing): either one refuses a member
    whose CRC or size does not match what it inflated, a cut trailer and a broken second
    member — ``corrupt``, and nothing is left."""
    assert unpack_mod.INFLATER is not zlib, "isal is a dependency: layers are inflated by ISA-L"
    monkeypatch.setattr(unpack_mod, "INFLATER", INFLATERS[inflater])
    blob = TRAILERS[damage](layer(f("a/one.txt", RANDOM_5K), f("a/two.txt", b"two" * 1000)))
    with pytest.raises(PackageRejected) as exc:
        unpack_layers([io.BytesIO(blob)], tmp_path / "pkg")
    assert exc.value.data["reason"] == "corrupt", exc.value.message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("inflater", INFLATERS)
def test_each_inflater_reads_a_multi_member_layer_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        inflater: str) -> None:
    monkeypatch.setattr(unpack_mod, "INFLATER", INFLATERS[inflater])
    tar = plain_layer(f("a/one.txt", RANDOM_5K), f("a/two.txt", b"two" * 100_000))
    blob = gzip.compress(tar[:7000], mtime=0) + gzip.compress(tar[7000:], mtime=0)  # two members
    dest = unpack_layers([io.BytesIO(blob)], tmp_path / "pkg")
    assert (dest / "a" / "one.txt").read_bytes() == RANDOM_5K
    assert (dest / "a" / "two.txt").read_bytes() == b"two" * 100_000
