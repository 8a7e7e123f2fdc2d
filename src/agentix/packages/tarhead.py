"""The normalised tar header of snapshot layers, written and recognised without ``tarfile``'s
per-field Python (1,000 headers cost ``tarfile`` about what `tar -cf` of the bench's whole
tree costs; bench/packages.py measures snapshot + restore against `tar`).

``plain_header`` returns exactly the bytes ``tarfile.TarInfo.tobuf(PAX_FORMAT, "utf-8",
"surrogateescape")`` returns for an entry normalised as snapshots are (owners 0, mtime 0, no
owner names): built directly when it fits one ustar block (an ASCII name of at most 100
characters, a size below 8**11), else by ``tarfile`` itself (a PAX extended header first).

``PlainTarInfo`` is a ``tarfile.TarInfo`` whose ``frombuf`` recognises such a block — only if
the block is *byte for byte* the one ``plain_header`` builds for what it names, so it means
exactly what ``tarfile`` would read from it — and hands every other block to ``tarfile``'s own
``frombuf``. Everything else (extended headers, offsets, the unpacker's checks) is
``tarfile``'s and the unpacker's as before.

``tests/packages/test_snapshot_fast_paths.py`` checks both against ``tarfile`` on any input.
"""

from __future__ import annotations

import tarfile
from typing import Any

__all__ = ["PlainTarInfo", "plain_header"]

#: the fixed middle and end of a normalised header: owners 0, mtime 0, the checksum field
#: (spaces while it is summed), then after the type: no link, POSIX magic, no owner names, no
#: device numbers, no prefix, padding (``tarfile.TarInfo._create_header``, ustar fields)
_OWNERS = b"0000000\0" * 2
_TAIL = (bytes(100) + tarfile.POSIX_MAGIC).ljust(tarfile.BLOCKSIZE - 157, b"\0")
_FIXED_SUM = sum(_OWNERS) + sum(b"00000000000\0        ") + sum(_TAIL)
_MODES = (0o644, 0o755)


def plain_header(name: str, is_dir: bool, mode: int, size: int) -> bytes:
    """The header of a normalised entry (a directory's ``name`` ends with "/", its size is 0),
    as ``tarfile`` writes it in PAX format."""
    if len(name) <= 100 and name.isascii() and size < 8 ** 11 and 0 <= mode <= 0o7777:
        raw, m, n = name.encode("ascii"), b"%07o" % mode, b"%011o" % size
        # the checksum: every byte of the block, the checksum field counted as spaces
        chk = sum(raw) + sum(m) + sum(n) + (ord("5") if is_dir else ord("0")) + _FIXED_SUM
        return b"".join((raw.ljust(100, b"\0"), m, b"\0", _OWNERS, n, b"\0", b"00000000000\0%06o\0 " % chk,
                         b"5" if is_dir else b"0", _TAIL))
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.mode = mode
    ti.size = size
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class PlainTarInfo(tarfile.TarInfo):
    """``tarfile.TarInfo`` reading ``plain_header`` blocks directly (``tarfile.open(...,
    tarinfo=PlainTarInfo)``)."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> Any:
        kind = buf[156:157]
        if len(buf) == tarfile.BLOCKSIZE and kind in (b"0", b"5"):
            end = buf.find(b"\0", 0, 100)
            raw = buf[:end if end >= 0 else 100]
            try:
                mode, size = int(buf[100:107], 8), int(buf[124:135], 8)
            except ValueError:
                mode = size = -1
            is_dir = kind == b"5"
            if (mode in _MODES and size >= 0 and raw.isascii() and raw.endswith(b"/") == is_dir
                    and plain_header(raw.decode("ascii"), is_dir, mode, size) == buf):
                obj = cls()
                obj.name = raw.decode("ascii").rstrip("/") if is_dir else raw.decode("ascii")
                obj.mode = mode
                obj.size = size
                obj.chksum = int(buf[148:154], 8)
                obj.type = kind
                return obj
        return super().frombuf(buf, encoding, errors)
