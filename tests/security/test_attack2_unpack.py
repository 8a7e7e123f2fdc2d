"""Attack round 2 on package unpack (packages/unpack.py), beyond tests/packages/test_unpack.py's
catalogue: the tar features that carry a name or a type somewhere other than the classic
header (PAX ``path``/``linkpath`` records, GNU long names), names that only look safe, and
modes that would make the unpacked tree writable by others. All held; kept as tests.
(Tried and harmless, so not refused: a contiguous or GNU sparse entry is read by ``tarfile``
as a regular file's content; a NUL in a classic header's name ends the name there.)"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from agentix.core.errors import PackageRejected
from agentix.packages.unpack import unpack_layers


def _layer(entries, fmt=tarfile.PAX_FORMAT, pax: dict[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, pax_headers=pax or {}) as tar:
        for ti, data in entries:
            if data is not None:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(ti)
    return gzip.compress(raw.getvalue(), mtime=0)


def _ti(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "",
        pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.linkname = kind, mode, link
    if pax:
        t.pax_headers = dict(pax)
    return t


ATTACKS = {
    "pax_path_dot_dot": ([(_ti("innocent.txt", pax={"path": "../escape.txt"}), b"x")], "dot_dot"),
    "pax_path_absolute": ([(_ti("innocent.txt", pax={"path": "/tmp/escape.txt"}), b"x")], "absolute_path"),
    "pax_linkpath": ([(_ti("l", tarfile.SYMTYPE, pax={"linkpath": "/etc/passwd"}), None)], "link"),
    "gnu_longname_dot_dot": ([(_ti("a/" * 60 + "../" * 61 + "escape.txt"), b"x")], "dot_dot"),
    "dot_dot_after_dots": ([(_ti("./././../escape.txt"), b"x")], "dot_dot"),
    "backslash_dot_dot": ([(_ti("a\\..\\..\\escape.txt"), b"x")], "dot_dot"),
    "hardlink_to_dir": ([(_ti("d", tarfile.DIRTYPE, 0o755), None), (_ti("h", tarfile.LNKTYPE, link="d"), None)],
                        "link"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_tar_features_that_rename_or_retype_an_entry_are_refused(tmp_path: Path, attack: str) -> None:
    entries, reason = ATTACKS[attack]
    fmt = tarfile.GNU_FORMAT if attack.startswith("gnu") else tarfile.PAX_FORMAT
    try:
        data = _layer(entries, fmt)
    except (ValueError, tarfile.TarError):
        pytest.skip("python's tarfile will not even write this entry")
    dest = tmp_path / "out"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(PackageRejected) as exc:
        unpack_layers([io.BytesIO(data)], dest)
    assert exc.value.data["reason"] in (reason, "corrupt"), exc.value.data
    assert not dest.exists() and sorted(os.listdir(tmp_path)) == before   # nothing left behind
    assert not (tmp_path.parent / "escape.txt").exists()


def test_world_writable_modes_in_the_archive_are_not_kept(tmp_path: Path) -> None:
    data = _layer([(_ti("d", tarfile.DIRTYPE, 0o777), None), (_ti("d/f", mode=0o777), b"x"),
                   (_ti("g", mode=0o666), b"y"), (_ti("locked", tarfile.DIRTYPE, 0o000), None)])
    out = unpack_layers([io.BytesIO(data)], tmp_path / "out")
    for p in [out / "d", out / "d" / "f", out / "g", out / "locked"]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert not mode & 0o022, (p, oct(mode))       # never group/world-writable
        assert mode & 0o400                           # and never locked against the owner
