"""Unpack package layers safely.
(Over 400 lines: the unpacker and the copy out of the verified, sealed tree it leaves share one
set of fd-relative, no-follow file primitives and one refusal vocabulary; split, each half
would re-export the other's.)

Every entry is checked before anything of it is written, and the whole unpack happens in a
fresh staging directory that is renamed into place only at the end (any refusal removes
it: nothing partial is ever visible). Refused, each with a stable ``reason``:

    absolute_path     a name starting with '/'
    dot_dot           a '..' part (or an empty name, or a NUL)
    link              a symlink or hard link (packages carry none; nothing can leave the root)
    special_file      a device, FIFO or any type other than a regular file or directory
    setuid            setuid, setgid or sticky bits
    duplicate         the same path twice (a file replaced by a later entry)
    too_many_entries  more entries than ``max_entries``
    too_large         more uncompressed bytes than ``max_bytes`` (decompression bombs)
    corrupt           not a gzip'd tar

A layer may be verified while it streams (``Layout.open_verifying``): its digest is checked
at the end of its stream, before the staging directory is renamed; a mismatch removes the
staging directory like any other refusal.

Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to directory fds, so a
path can never be redirected even by a concurrent writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentix.core.errors import PackageRejected
from agentix.packages.tarhead import PlainTarInfo

__all__ = ["PLAIN_TAR_TYPE", "UnpackLimits", "copy_tree", "gzipped", "seal_tree", "seed_workspace", "unpack_layers"]


CHUNK = 1 << 20  # reads of a layer, inflated pieces
try:
    # ISA-L's inflate (python-isal, a declared dependency): the same gzip, zlib's interface,
    # about half zlib's CPU time per byte; zlib's where it is not installed
    from isal import isal_zlib as INFLATER
    INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, INFLATER.error)
except ImportError:  # pragma: no cover - isal is a dependency
    INFLATER = zlib  # type: ignore[assignment]
    INFLATE_ERRORS = (zlib.error,)
#: an uncompressed tar layer (snapshots: packages/snapshot.py); every other layer type is
#: read as gzip'd tar, as it always was
PLAIN_TAR_TYPE = "application/vnd.oci.image.layer.v1.tar"


def gzipped(media_type: str) -> bool:
    """Whether a layer of ``media_type`` is read as gzip'd tar (all but ``PLAIN_TAR_TYPE``)."""
    return media_type != PLAIN_TAR_TYPE


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int = 1 << 30          # 1 GiB of file content, all layers together
    max_entries: int = 100_000
    max_name: int = 4096


class _Inflated:
    """The inflated tar stream of one layer (or a plain tar layer's own bytes: ``gz`` is then
    the layer itself), read forward only, for ``tarfile`` in plain
    "r" mode: headers through ``read``, file contents through ``chunks`` (views of what was
    just inflated — no copy, where a tar stream object copies every byte three times).
    Refuses to yield more than ``limit`` bytes in all (decompression bombs); a backward seek
    is an ``OSError`` (nothing here reads backwards)."""

    def __init__(self, gz: _Gunzip, limit: int) -> None:
        self.gz = gz
        self.limit = limit
        self.pos = 0        # offset in the inflated stream
        self.total = 0      # bytes inflated so far
        self.cur = b""
        self.i = 0

    def _fill(self) -> bool:
        self.cur = self.gz.read(CHUNK)
        self.i = 0
        self.total += len(self.cur)
        if self.total > self.limit:
            raise PackageRejected(f"the package unpacks to more than {self.limit} bytes "
                                  "(a decompression bomb?)", reason="too_large", limit=self.limit)
        return bool(self.cur)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise OSError("a layer is read in bounded pieces")
        out = []
        while size > 0 and (self.i < len(self.cur) or self._fill()):
            piece = self.cur[self.i:self.i + size]
            self.i += len(piece)
            size -= len(piece)
            out.append(piece)
        data = b"".join(out)
        self.pos += len(data)
        return data

    def chunks(self, size: int, name: str) -> Iterator[memoryview]:
        """The next ``size`` bytes, as views; fewer is ``corrupt`` (a truncated entry)."""
        while size > 0:
            if self.i >= len(self.cur) and not self._fill():
                raise PackageRejected(f"entry {name[:200]!r} is truncated", reason="corrupt")
            view = memoryview(self.cur)[self.i:self.i + size]
            self.i += len(view)
            self.pos += len(view)
            size -= len(view)
            yield view

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise OSError("a layer is read forward only")
        for _ in self.chunks(pos - self.pos, "the end of the archive"):
            pass
        return self.pos


def _refuse(reason: str, name: str, what: str) -> PackageRejected:
    return PackageRejected(f"unsafe entry {name[:200]!r} in the package: {what}", reason=reason, entry=name[:200])


def _check(ti: tarfile.TarInfo, limits: UnpackLimits) -> tuple[str, ...]:
    name = ti.name
    if len(name) > limits.max_name or "\x00" in name or not name:
        raise _refuse("dot_dot", name, "an empty, NUL-bearing or overlong name")
    if name.startswith("/"):
        raise _refuse("absolute_path", name, "absolute paths are refused")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts or ".." in parts or any("\\" in p for p in parts):
        raise _refuse("dot_dot", name, "'..' and empty paths are refused")
    if ti.issym() or ti.islnk():
        raise _refuse("link", name, f"links are refused (to {ti.linkname[:200]!r})")
    if not (ti.isreg() or ti.isdir()) or ti.issparse():
        raise _refuse("special_file", name, "only regular files and directories are allowed")
    if ti.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        raise _refuse("setuid", name, "setuid, setgid and sticky bits are refused")
    return parts


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Dirs:
    """Directory fds of the staging tree. The last parent used stays open (a tar lists a
    directory's files together) and a directory made once is not made again: one open per
    file instead of a walk from the root per file."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.made: set[tuple[str, ...]] = set()
        self.last: tuple[tuple[str, ...], int] | None = None

    def open(self, parts: tuple[str, ...]) -> int:
        """A descriptor of the directory ``parts`` (made if missing); borrowed, not to close."""
        if not parts:
            return self.root_fd
        if self.last is not None and self.last[0] == parts:
            return self.last[1]
        fd = os.dup(self.root_fd)
        try:
            for i, p in enumerate(parts):
                if parts[:i + 1] not in self.made:
                    try:
                        os.mkdir(p, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                nfd = os.open(p, _DIR_FLAGS, dir_fd=fd)
                self.made.add(parts[:i + 1])
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self.last = (parts, fd)
        return fd

    def close(self) -> None:
        if self.last is not None:
            os.close(self.last[1])
            self.last = None


class _Gunzip:
    """A gzip stream (one or more members) inflated a chunk at a time (``gzip.GzipFile``
    inflates 8 KiB per call) by ``inflater`` (``INFLATER``: ISA-L's, else zlib's), which checks
    each member's CRC and length. Truncation is an ``EOFError``, anything not gzip one of
    ``INFLATE_ERRORS``."""

    def __init__(self, raw: Any, inflater: Any = None) -> None:
        self.raw = raw
        self.z = inflater if inflater is not None else INFLATER
        self.d = self.z.decompressobj(31)
        self.tail = b""        # input not yet inflated
        self.member = False    # the current member has had input

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else CHUNK
        while True:
            if not self.tail:
                self.tail = self.raw.read(CHUNK)
                if not self.tail:
                    if self.member:
                        raise EOFError("the gzip stream ends inside a member")
                    return b""
            self.member = True
            data = self.d.decompress(self.tail, size)
            self.tail = self.d.unconsumed_tail
            if self.d.eof:  # the next member, if any, starts in what is left
                self.tail = self.d.unused_data
                self.d = self.z.decompressobj(31)
                self.member = False
            if data:
                return data


def _extract_one(stream: _Inflated, ti: tarfile.TarInfo, dirs: _Dirs, parts: tuple[str, ...],
                 seen: dict[tuple[str, ...], bool], budget: list[int]) -> None:
    # a directory may be named again (by a later layer); a file may not, nor a file <-> directory swap
    if parts in seen and not (ti.isdir() and seen[parts]):
        raise _refuse("duplicate", ti.name, "the same path appears twice")
    seen[parts] = ti.isdir()
    if ti.isdir():
        dirs.open(parts)
        return
    budget[0] -= ti.size
    if budget[0] < 0:
        raise PackageRejected("the package unpacks to more bytes than allowed (a decompression bomb?)",
                              reason="too_large")
    dfd = dirs.open(parts[:-1])
    mode = 0o755 if ti.mode & 0o111 else 0o644
    try:
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dfd)
    except FileExistsError:
        raise _refuse("duplicate", ti.name, "the same path appears twice") from None
    with _closing(fd):
        if stream.tell() != ti.offset_data:
            raise PackageRejected(f"entry {ti.name[:200]!r} is not where its header says", reason="corrupt")
        for view in stream.chunks(ti.size, ti.name):
            while view:
                view = view[os.write(fd, view):]


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def unpack_layers(layers: Iterable[Any], dest: Path, limits: UnpackLimits = UnpackLimits(), *,
                  compressed: Sequence[bool] | None = None) -> Path:
    """Unpack gzip'd tar ``layers`` into a new directory ``dest`` (``compressed[i]`` False:
    layer ``i`` is a plain tar, ``PLAIN_TAR_TYPE``; the same checks and bounds apply).

    Each layer is a verified file object, or a ``VerifyingReader`` (``Layout.open_verifying``):
    then it is hashed as it streams and checked at its end, before ``dest`` can appear — a blob
    altered at rest is refused (``digest_mismatch``, preferred over whatever its bytes broke)
    with nothing left behind, and the blob is read once, not hashed first and read again.
    ``dest`` must not exist; it appears only if every entry of every layer was accepted and
    every layer verified.
    """
    if dest.exists():
        raise FileExistsError(dest)
    staging = dest.with_name(f".unpack-{dest.name}-{secrets.token_hex(4)}")
    staging.mkdir(mode=0o700)
    try:
        root_fd = os.open(staging, _DIR_FLAGS)
        dirs = _Dirs(root_fd)
        try:
            entries = 0
            budget = [limits.max_bytes]
            seen: dict[tuple[str, ...], bool] = {}
            for i, layer in enumerate(layers):
                # the tar stream itself is bounded too (headers count): max_bytes plus slack
                source = _Gunzip(layer) if compressed is None or compressed[i] else layer
                stream = _Inflated(source, limits.max_bytes + 1024 * (limits.max_entries + 16))
                verify = getattr(layer, "verify", None)  # a VerifyingReader: checked after its stream
                try:
                    # plain "r" mode over a forward-only stream: tarfile parses the headers (and
                    # skips to each next one; a snapshot's normalised headers are recognised
                    # directly, ``tarhead.PlainTarInfo``), the contents are read here (``_extract_one``)
                    with tarfile.open(fileobj=stream, mode="r:", tarinfo=PlainTarInfo) as tar:
                        while (ti := tar.next()) is not None:
                            entries += 1
                            if entries > limits.max_entries:
                                raise PackageRejected(
                                    f"the package has more than {limits.max_entries} entries",
                                    reason="too_many_entries", limit=limits.max_entries)
                            parts = _check(ti, limits)
                            _extract_one(stream, ti, dirs, parts, seen, budget)
                            tar.members.clear()  # nothing looks back
                    # the rest of the stream (the archive's padding, the gzip trailer) is read
                    # too: a cut trailer, a CRC or size that does not match, or bytes after the
                    # last member are ``corrupt``, not ignored
                    while stream.read(CHUNK):
                        pass
                except (tarfile.TarError, OSError, EOFError, *INFLATE_ERRORS, PackageRejected) as err:
                    if verify is not None:
                        verify()  # an altered blob is named as such, not by what it broke
                    if isinstance(err, (FileExistsError, PermissionError, PackageRejected)):
                        raise
                    kind = "gzip'd tar" if source is not layer else "tar"
                    raise PackageRejected(f"a layer is not a valid {kind}: {err}", reason="corrupt") from None
                if verify is not None:
                    verify()  # before the staging directory can become visible
        finally:
            dirs.close()
            os.close(root_fd)
        os.rename(staging, dest)
        return dest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


#: what a seal keeps of each entry of a kept tree: any write, chmod, link, rename or
#: replacement changes one of these (ctime is set by the kernel, not settable from user space)
def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, stat.S_IFMT(st.st_mode)]


def seal_tree(root: Path) -> dict[str, list[int]]:
    """A seal of ``root`` (a tree ``unpack_layers`` made, made read-only): each entry's
    relative path -> its inode, size, mtime, ctime, link count and type, read fd-relative
    without following links. ``copy_tree(..., seal=)`` refuses a tree that no longer matches."""
    out: dict[str, list[int]] = {}

    def walk(fd: int, prefix: str, depth: int) -> None:
        if depth > 256:
            raise PackageRejected("the unpacked package is nested too deep", reason="corrupt")
        for name in sorted(os.listdir(fd)):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            out[prefix + name] = _stamp(st)
            if stat.S_ISDIR(st.st_mode):
                with _closing(os.open(name, _DIR_FLAGS, dir_fd=fd)) as sub:
                    walk(sub, prefix + name + "/", depth + 1)

    with _closing(os.open(root, _DIR_FLAGS)) as fd:
        walk(fd, "", 0)
    return out


def copy_tree(src: Path, dest: Path, max_entries: int = UnpackLimits.max_entries, *,
              seal: dict[str, list[int]] | None = None) -> Path:
    """Copy ``src`` — a tree ``unpack_layers`` made (the kernel's cache of unpacked packages)
    — into the new directory ``dest``, staged and renamed like an unpack: fd-relative, no link
    followed, regular files and directories only (anything else means the tree was altered:
    refused, ``corrupt``), modes normalised again (0755 / 0644), data copied inside the
    kernel (``copy_file_range``). With ``seal`` (``seal_tree`` of the tree when it was made),
    every entry must still match it — checked on the file actually opened, before and after
    its data is copied — and none may be missing or added (else ``corrupt``). Returns ``dest``."""
    if dest.exists():
        raise FileExistsError(dest)
    staging = dest.with_name(f".copy-{dest.name}-{secrets.token_hex(4)}")
    staging.mkdir(mode=0o700)
    count = [0]
    try:
        with _closing(os.open(src, _DIR_FLAGS)) as sfd, _closing(os.open(staging, _DIR_FLAGS)) as dfd:
            _copy_dir(sfd, dfd, count, max_entries, 0, seal, "")
        if seal is not None and count[0] != len(seal):
            raise PackageRejected("the kept unpacked package lost entries since it was verified (it was "
                                  "altered)", reason="corrupt")
        os.rename(staging, dest)
        return dest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _altered(name: str) -> PackageRejected:
    return PackageRejected(f"{name!r} in the kept unpacked package changed since it was verified (it was "
                           "altered)", reason="corrupt", path=name[:200])


def _copy_dir(sfd: int, dfd: int, count: list[int], max_entries: int, depth: int,
              seal: dict[str, list[int]] | None = None, prefix: str = "") -> None:
    if depth > 256:
        raise PackageRejected("the unpacked package is nested too deep (the cache was altered?)", reason="corrupt")
    for name in sorted(os.listdir(sfd)):
        count[0] += 1
        if count[0] > max_entries:
            raise PackageRejected(f"the package has more than {max_entries} entries",
                                  reason="too_many_entries", limit=max_entries)
        st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        rel = prefix + name
        if seal is not None and seal.get(rel) != _stamp(st):
            raise _altered(rel)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o755, dir_fd=dfd)
            with _closing(os.open(name, _DIR_FLAGS, dir_fd=sfd)) as s2, \
                    _closing(os.open(name, _DIR_FLAGS, dir_fd=dfd)) as d2:
                _copy_dir(s2, d2, count, max_entries, depth + 1, seal, rel + "/")
        elif stat.S_ISREG(st.st_mode):
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            with _closing(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                  dir_fd=sfd)) as rfd, \
                    _closing(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     mode, dir_fd=dfd)) as wfd:
                opened = os.fstat(rfd)
                if not stat.S_ISREG(opened.st_mode):
                    raise PackageRejected(f"{name!r} in the unpacked package is not a regular file",
                                          reason="corrupt")
                if seal is not None and seal.get(rel) != _stamp(opened):
                    raise _altered(rel)   # swapped between the stat and the open
                _copy_data(rfd, wfd)
                if seal is not None and _stamp(os.fstat(rfd)) != seal[rel]:
                    raise _altered(rel)   # written to while it was copied
        else:
            raise PackageRejected(f"{name!r} in the unpacked package is not a file or directory "
                                  "(the cache was altered?)", reason="corrupt")


def _copy_data(rfd: int, wfd: int) -> None:
    try:
        while os.copy_file_range(rfd, wfd, CHUNK * 64):
            pass
        return
    except OSError as err:  # no in-kernel copy between these filesystems: copy by hand
        if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(rfd, 0, os.SEEK_SET)
    os.ftruncate(wfd, 0)
    os.lseek(wfd, 0, os.SEEK_SET)
    while chunk := os.read(rfd, CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(wfd, view):]


def seed_workspace(tree: Path, workspace: Path, program: str) -> str:
    """Move an unpacked package ``tree`` into an empty ``workspace`` (same filesystem: renames);
    return the program path boot runs. ``program`` is the package's relative program path
    (already checked by the Agentfile model) or a ``module:agentix.agents.…`` name."""
    from agentix.core.errors import InvalidRequest

    for entry in sorted(os.listdir(tree)):
        os.rename(tree / entry, workspace / entry)
    if program.startswith("module:"):
        return program
    parts = [p for p in program.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or program.startswith("/"):
        raise InvalidRequest(f"program {program!r} must be a relative path inside the package", field="program")
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.stat("/".join(parts), dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.stat("/".join([*parts, "__main__.py"]), dir_fd=fd, follow_symlinks=False)
        elif not (stat.S_ISREG(st.st_mode) and parts[-1].endswith(".py")):
            raise InvalidRequest(f"program {program!r} must be a .py file or a directory with __main__.py",
                                 field="program")
    except FileNotFoundError:
        raise InvalidRequest(f"program {program!r} is not in the package (a directory needs __main__.py)",
                             field="program") from None
    finally:
        os.close(fd)
    return "/".join(parts)
