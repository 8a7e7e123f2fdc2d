"""The one safe walker: every kernel-side copy into or out of an agent's tree goes through here.

The kernel runs as root and agents control their workspaces, so a walk by path could be
steered anywhere on the host (swap a directory for a symlink mid-walk, leave a FIFO where a
file was expected, link a program to ``/dev/zero`` or ``/etc/shadow``). Rules, all enforced
here, once:

* **fd-relative.** Every entry is opened relative to a directory descriptor already held,
  one component at a time, with ``O_NOFOLLOW``; ``..``, empty and absolute components are
  refused. Nothing below the starting directory is ever resolved by path.
* **Look before opening, check after.** ``fstatat(AT_SYMLINK_NOFOLLOW)`` says what an entry
  is before it is opened (a device or socket is never opened), the open uses ``O_NONBLOCK``
  (a FIFO swapped in meanwhile cannot block), and ``fstat`` of the opened descriptor must
  show the same inode and a regular file or directory before a byte is read.
* **Regular files and directories only.** Symlinks, FIFOs, sockets and devices are refused
  (``WalkError``) or skipped, as the caller chooses (``special="refuse" | "skip"``). ``walk``
  treats a regular file with more than one hard link the same way: its other name may be a
  host file the agent could not read itself.
* **Bounded.** Total bytes, entry count and depth (``Bounds``); over a bound is a
  ``WalkError`` naming the bound, never a partial success.
* **Written fresh.** Copies create their destination entries with ``O_EXCL`` (or
  ``O_TRUNC``, for an operator's output directory) and ``O_NOFOLLOW``, relative to a
  destination directory descriptor, optionally owned by a given uid/gid from creation.

Two walks: ``copy_entry`` copies a tree into a destination; ``walk`` yields a tree's entries
(in one fixed order: depth first, names sorted) with each regular file already opened, for a
reader that does not copy (a snapshot packs them into a layer).

``WalkError`` is the only error this module raises for anything about the tree; callers
turn it into their own error (``invalid_request`` naming the field, for a program). Its
``bound`` names the bound that was passed (``bytes``, ``entries``, ``depth``), else None.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Bounds", "CopyResult", "WalkEntry", "WalkError", "chown_tree", "copy_entry", "open_beneath",
           "open_dir", "read_file", "walk"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20

Special = Literal["refuse", "skip"]


class WalkError(Exception):
    """An entry could not be walked safely; ``path`` is relative to where the walk began."""

    def __init__(self, path: str, why: str, bound: str | None = None) -> None:
        super().__init__(f"{path}: {why}" if path else why)
        self.path = path
        self.why = why
        self.bound = bound


@dataclass(frozen=True)
class Bounds:
    max_bytes: int = 64 * 1024**2
    max_entries: int = 10_000
    max_depth: int = 32


@dataclass
class CopyResult:
    files: list[str] = field(default_factory=list)     # relative paths of the regular files copied
    skipped: list[str] = field(default_factory=list)   # relative paths skipped (special="skip")
    bytes: int = 0
    entries: int = 0


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file or directory"


def open_dir(path: str | Path, *, follow: bool = True) -> int:
    """A descriptor for the directory ``path`` (the start of a walk; the caller trusts the path
    up to here). ``follow=False`` refuses a symlink as the last component."""
    flags = _DIR_FLAGS if not follow else _DIR_FLAGS & ~os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except OSError as err:
        raise WalkError(str(path), _why(err, "a directory")) from None


def _why(err: OSError, wanted: str) -> str:
    if err.errno == errno.ELOOP:
        return "a symbolic link (links are never followed)"
    if err.errno == errno.ENOTDIR:
        return f"not {wanted}"
    return err.strerror or str(err)


def _components(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or not parts or ".." in parts:
        raise WalkError(rel, "must be a relative path inside the directory, without '..'")
    return parts


def _open_entry(dir_fd: int, name: str, rel: str) -> tuple[int, os.stat_result]:
    """Open one entry of ``dir_fd``: a regular file or a directory, never anything else."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as err:
        raise WalkError(rel, _why(err, "a file or directory")) from None
    if stat.S_ISDIR(before.st_mode):
        flags = _DIR_FLAGS
    elif stat.S_ISREG(before.st_mode):
        flags = _FILE_FLAGS
    else:
        raise WalkError(rel, _kind(before.st_mode))
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as err:
        raise WalkError(rel, _why(err, "a file or directory")) from None
    st = os.fstat(fd)
    if (st.st_ino, st.st_dev) != (before.st_ino, before.st_dev) or not (
            stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        os.close(fd)
        raise WalkError(rel, "changed while it was being opened")
    return fd, st


def open_beneath(dir_fd: int, rel: str) -> tuple[int, os.stat_result]:
    """Open ``rel`` below ``dir_fd`` one component at a time without following links.

    Returns the descriptor and its ``fstat``; it is a regular file or a directory."""
    parts = _components(rel)
    fd = os.dup(dir_fd)
    try:
        for i, name in enumerate(parts):
            sub = "/".join(parts[: i + 1])
            nfd, st = _open_entry(fd, name, sub)
            os.close(fd)
            fd = nfd
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                raise WalkError(sub, "not a directory")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read_file(dir_fd: int | None, path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (relative to ``dir_fd``, or by
    path when ``dir_fd`` is None: an operator's own file). Over ``limit`` is a WalkError."""
    if dir_fd is None:
        p = Path(path)
        parent = open_dir(p.parent)
        try:
            fd, st = _open_entry(parent, p.name, path)
        finally:
            os.close(parent)
    else:
        fd, st = open_beneath(dir_fd, path)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise WalkError(path, "not a regular file")
        data = _read_bounded(fd, limit, path)
    finally:
        os.close(fd)
    return data


def _read_bounded(fd: int, limit: int, rel: str) -> bytes:
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise WalkError(rel, f"larger than the limit of {limit} bytes")
        chunks.append(chunk)


class _Budget:
    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.result = CopyResult()

    def entry(self, rel: str) -> None:
        self.result.entries += 1
        if self.result.entries > self.bounds.max_entries:
            raise WalkError(rel, f"more than {self.bounds.max_entries} entries", "entries")

    def bytes(self, n: int, rel: str) -> None:
        self.result.bytes += n
        if self.result.bytes > self.bounds.max_bytes:
            raise WalkError(rel, f"more than {self.bounds.max_bytes} bytes in all", "bytes")


@contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def copy_entry(src_fd: int, src_stat: os.stat_result, dst_dir_fd: int, name: str, *,
               bounds: Bounds = Bounds(), special: Special = "refuse",
               owner: tuple[int, int] | None = None, overwrite: bool = False,
               skip_names: frozenset[str] = frozenset(), skip_suffixes: tuple[str, ...] = (),
               rel: str = "") -> CopyResult:
    """Copy the opened file or directory ``src_fd`` to ``name`` in ``dst_dir_fd``.

    The source must come from ``open_beneath``/``open_dir`` (or ``_open_entry``): a regular
    file or a directory. Entries below a directory are walked by the same rules. ``owner``
    chowns every created entry by descriptor; ``overwrite`` truncates an existing regular file
    in the destination (never following a link there) instead of refusing it.
    """
    budget = _Budget(bounds)
    _copy(src_fd, src_stat, dst_dir_fd, name, rel or name, 0, budget, special, owner,
          overwrite, skip_names, skip_suffixes)
    budget.result.files.sort()
    return budget.result


def _copy(src_fd: int, st: os.stat_result, dst_dir_fd: int, name: str, rel: str, depth: int,
          budget: _Budget, special: Special, owner: tuple[int, int] | None, overwrite: bool,
          skip_names: frozenset[str], skip_suffixes: tuple[str, ...]) -> None:
    budget.entry(rel)
    if stat.S_ISREG(st.st_mode):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_TRUNC if overwrite else os.O_EXCL
        try:
            out = os.open(name, flags, 0o644, dir_fd=dst_dir_fd)
        except OSError as err:
            raise WalkError(rel, f"cannot create the copy: {_why(err, 'a regular file')}") from None
        with _closing(out):
            if not stat.S_ISREG(os.fstat(out).st_mode):
                raise WalkError(rel, "the destination is not a regular file")
            if owner is not None:
                os.fchown(out, *owner)
            while True:
                chunk = os.read(src_fd, _CHUNK)
                if not chunk:
                    break
                budget.bytes(len(chunk), rel)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        budget.result.files.append(rel)
        return
    if depth >= budget.bounds.max_depth:
        raise WalkError(rel, f"nested deeper than {budget.bounds.max_depth} directories")
    try:
        os.mkdir(name, 0o755, dir_fd=dst_dir_fd)
    except FileExistsError:
        if not overwrite:
            raise WalkError(rel, "the destination already exists") from None
    out = os.open(name, _DIR_FLAGS, dir_fd=dst_dir_fd)
    with _closing(out):
        if owner is not None:
            os.fchown(out, *owner)
        names = sorted(os.listdir(src_fd))
        if len(names) > budget.bounds.max_entries:
            raise WalkError(rel, f"more than {budget.bounds.max_entries} entries")
        for child in names:
            if child in skip_names or child.endswith(skip_suffixes):
                continue
            crel = f"{rel}/{child}"
            try:
                cfd, cst = _open_entry(src_fd, child, crel)
            except WalkError:
                if special == "skip":
                    budget.result.skipped.append(crel)
                    continue
                raise
            with _closing(cfd):
                _copy(cfd, cst, out, child, crel, depth + 1, budget, special, owner, overwrite,
                      skip_names, skip_suffixes)


@dataclass(frozen=True)
class WalkEntry:
    """One entry of ``walk``: ``rel`` is relative to the start ('/'-separated, never empty).

    For a regular file, ``fd`` is open for reading (the entry itself, checked after opening)
    and ``size`` its size then; the walker closes ``fd`` when the walk moves on, so read it
    before asking for the next entry, and read at most ``size`` bytes (the byte bound counts
    sizes). A directory has ``fd`` None and size 0."""

    rel: str
    is_dir: bool
    mode: int
    size: int
    fd: int | None


def walk(dir_fd: int, *, bounds: Bounds = Bounds(), special: Special = "refuse",
         skipped: list[str] | None = None) -> Iterator[WalkEntry]:
    """Every directory and regular file below ``dir_fd``, depth first with names sorted (the
    same tree gives the same order), each opened by the rules above before it is yielded.

    Refused (``special="refuse"``: a ``WalkError``) or skipped (``"skip"``: its path appended
    to ``skipped``, and not descended into): symlinks, FIFOs, sockets, devices, entries that
    change between the look and the open, and regular files with more than one hard link.
    Over a bound (entries, depth, total bytes of file sizes) is always a ``WalkError``."""
    budget = _Budget(bounds)
    yield from _walk(dir_fd, "", 0, budget, special, skipped)


def _walk(dir_fd: int, prefix: str, depth: int, budget: _Budget, special: Special,
          skipped: list[str] | None) -> Iterator[WalkEntry]:
    if depth >= budget.bounds.max_depth:
        raise WalkError(prefix, f"nested deeper than {budget.bounds.max_depth} directories", "depth")
    names = sorted(os.listdir(dir_fd))
    if len(names) > budget.bounds.max_entries:
        raise WalkError(prefix, f"more than {budget.bounds.max_entries} entries", "entries")
    for name in names:
        rel = f"{prefix}/{name}" if prefix else name
        try:
            fd, st = _open_entry(dir_fd, name, rel)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                os.close(fd)
                raise WalkError(rel, f"a file with {st.st_nlink} hard links (another name of it may be "
                                "outside the tree)")
        except WalkError:  # also: gone or changed between the listing, the look and the open
            if special == "skip":
                if skipped is not None:
                    skipped.append(rel)
                continue
            raise
        with _closing(fd):
            budget.entry(rel)
            if stat.S_ISDIR(st.st_mode):
                yield WalkEntry(rel, True, st.st_mode, 0, None)
                yield from _walk(fd, rel, depth + 1, budget, special, skipped)
            else:
                budget.bytes(st.st_size, rel)
                yield WalkEntry(rel, False, st.st_mode, st.st_size, fd)


def chown_tree(dir_fd: int, uid: int, gid: int, *, bounds: Bounds = Bounds(max_entries=100_000)) -> int:
    """Give every entry below ``dir_fd`` to ``uid:gid`` without following a link; return
    how many were changed.

    ``fchownat(AT_SYMLINK_NOFOLLOW)`` on names relative to a directory descriptor that was
    itself opened with ``O_NOFOLLOW``, so an entry swapped for a symlink is changed as a link
    (or not at all), never its target. Files with more than one hard link are left alone
    (a link to a file from outside the tree). Stops quietly at ``bounds.max_entries``."""
    seen = 0
    changed = 0
    stack: list[tuple[int, int]] = [(os.dup(dir_fd), 0)]
    try:
        while stack:
            fd, depth = stack.pop()
            with _closing(fd):
                try:
                    names = os.listdir(fd)
                except OSError:
                    continue
                for name in names:
                    seen += 1
                    if seen > bounds.max_entries:
                        return changed
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue  # gone meanwhile
                    if stat.S_ISDIR(st.st_mode) and depth < bounds.max_depth:
                        try:
                            stack.append((os.open(name, _DIR_FLAGS, dir_fd=fd), depth + 1))
                        except OSError:
                            pass  # swapped for a link or removed: not followed
                    if (st.st_uid, st.st_gid) == (uid, gid):
                        continue
                    if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                        continue
                    try:
                        os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                        changed += 1
                    except OSError:
                        pass
    finally:
        for fd, _ in stack:
            os.close(fd)
    return changed
