"""Path-safe file operations beneath a granted root (used by the kernel's file tools).
(Over 400 lines: the safe-open primitives stay private to the module that uses them, so no other
module can open a file without the beneath/fence checks.)

Rules:

- Every function takes ``root`` (the granted directory, from ``Token.file_root``) and ``rel``
  (the requested path below it, from ``agentix.core.paths.split_under``). ``rel`` must be
  relative, without ``..`` or empty components.
- Files are opened with ``openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS)``; where the kernel lacks openat2, each component is opened with
  ``O_NOFOLLOW`` relative to its parent's fd. So the file checked is the file opened: a
  symlink anywhere below the root — or swapped in between check and use — is refused
  (``capability_denied``, reason ``symlink``), never followed. All symlinks are refused, even
  ones that would stay inside the grant.
- Only regular files are read or written (a FIFO or device is refused, never blocked on).
- A refused call changes nothing: writes go to a new temporary file in the already-opened
  parent directory and are renamed over the target (atomic replace); in-place appends refuse
  files with more than one hard link; parents are created only with ``create_parents`` and
  only after the path has been walked without finding a symlink, and are removed again if the
  write then fails.
- The kernel's own state is fenced *at open time* too (the decision already refuses its paths):
  inside ``fenced(Fence)`` every directory opened is walked up by ``..`` (dev, inode), and a
  walk that meets a denied directory (``$AGENTIX_HOME``) before an allowed one (the caller's
  own workspace) is refused (``capability_denied`` reason ``kernel_state``), as is a file whose
  (dev, inode) is a protected file (the keys, the database: a hard link elsewhere is the same
  file). Recursive listings and greps skip denied directories. So no path spelling, bind
  mount or hard link reaches the keys from a grant such as ``file_read: /*``.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import re
import secrets
import stat
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from agentix.core.caps import Token
from agentix.tools.thread_work import commit_point
from agentix.core.grants import Request
from agentix.core.paths import resolve_request, split_under
from agentix.core.errors import (
    AgentixError,
    CapabilityDenied,
    InvalidRequest,
    LimitExceeded,
    ToolError,
)

__all__ = [
    "Seen",
    "observed",
    "DiskQuota",
    "Fence",
    "fenced",
    "locate",
    "MAX_READ_BYTES",
    "MAX_READ_MANY",
    "MAX_WRITE_BYTES",
    "file_edit",
    "file_list",
    "file_read",
    "file_read_many",
    "file_write",
    "grep",
    "measure_in",
    "open_beneath",
    "openat2_available",
    "room",
    "usage",
]

MAX_READ_BYTES = 1024 * 1024
MAX_WRITE_BYTES = 16 * 1024 * 1024
#: what one entry of a workspace counts at least (a block: an empty file or a directory
#: still takes an inode and a block of the host's disk)
ENTRY_BYTES = 4096
#: entries a quota walk looks at; a workspace with more is over any quota
MAX_USAGE_ENTRIES = 200_000
MAX_READ_MANY = 16
MAX_LIST_ENTRIES = 2000
MAX_GREP_MATCHES = 500
MAX_GREP_FILES = 5000
MAX_DEPTH = 64  # recursive walks hold one fd per level; deeper trees are reported as truncated

_SYS_OPENAT2 = 437  # x86_64 and aarch64 (asm-generic) alike
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_openat2_ok: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
    fd = _syscall(
        ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return int(fd)


def openat2_available() -> bool:
    """Whether this kernel supports openat2 (probed once)."""
    global _openat2_ok
    if _openat2_ok is None:
        try:
            os.close(_openat2(-100, "/", os.O_RDONLY | os.O_DIRECTORY, 0))  # AT_FDCWD
            _openat2_ok = True
        except OSError as err:
            _openat2_ok = err.errno not in (errno.ENOSYS, errno.EPERM)
    return _openat2_ok


def _components(rel: str) -> list[str]:
    if not isinstance(rel, str) or "\x00" in rel:
        raise InvalidRequest("a relative path must be a string without NUL bytes")
    if rel.startswith("/"):
        raise InvalidRequest(f"{rel!r}: expected a path relative to the granted root")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CapabilityDenied(f"{rel!r} contains '..'", reason="path_traversal")
    return parts


def _open_dir_nofollow(name: str, dirfd: int) -> int:
    """Open directory ``name`` under ``dirfd``; a symlink is ELOOP (not the ENOTDIR that
    O_DIRECTORY|O_NOFOLLOW gives), so callers report it as the refusal it is."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except NotADirectoryError:
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
        raise


def _walk_open(dirfd: int, parts: list[str], flags: int, mode: int) -> int:
    """Fallback for kernels without openat2: one O_NOFOLLOW open per component."""
    cur = os.dup(dirfd)
    try:
        for p in parts[:-1]:
            nxt = _open_dir_nofollow(p, cur)
            os.close(cur)
            cur = nxt
        if not parts:
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=cur)
        if flags & os.O_DIRECTORY:
            return _open_dir_nofollow(parts[-1], cur)
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=cur)
    finally:
        os.close(cur)


def _refusal(err: OSError, shown: str) -> AgentixError:
    if err.errno in (errno.ELOOP, errno.EXDEV):
        return CapabilityDenied(
            f"{shown}: a symbolic link (or a path leaving the grant) is refused", reason="symlink", path=shown
        )
    if err.errno == errno.ENOENT:
        return ToolError(f"{shown}: no such file or directory", errno="ENOENT", path=shown)
    if err.errno == errno.ENOTDIR:
        return ToolError(f"{shown}: a component is not a directory", errno="ENOTDIR", path=shown)
    if err.errno == errno.EISDIR:
        return ToolError(f"{shown}: is a directory", errno="EISDIR", path=shown)
    if err.errno in (errno.EACCES, errno.EPERM):
        return ToolError(f"{shown}: permission denied by the host", errno="EACCES", path=shown)
    if err.errno == errno.ENXIO:
        return ToolError(f"{shown}: not a regular file", errno="ENXIO", path=shown)
    return ToolError(f"{shown}: {os.strerror(err.errno or 0)}", errno=errno.errorcode.get(err.errno or 0, "?"), path=shown)


def open_beneath(dirfd: int, rel: str, flags: int, mode: int = 0o644) -> int:
    """Open ``rel`` beneath ``dirfd`` without following any symlink; raises OSError."""
    parts = _components(rel)
    if openat2_available():
        return _openat2(dirfd, "/".join(parts) or ".", flags, mode)
    return _walk_open(dirfd, parts, flags, mode)


@dataclass(frozen=True)
class Fence:
    """What no file tool may open, by (st_dev, st_ino): ``denied`` directories (and all below
    them) unless an ``allowed`` directory is met first walking up; ``files`` themselves."""

    denied: frozenset[tuple[int, int]]
    allowed: frozenset[tuple[int, int]] = frozenset()
    files: frozenset[tuple[int, int]] = frozenset()


_FENCE: ContextVar[Fence | None] = ContextVar("agentix_fs_fence", default=None)


@contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Run the functions of this module (in this context and threads started from it with
    ``asyncio.to_thread``) behind ``fence``."""
    tok = _FENCE.set(fence)
    try:
        yield
    finally:
        _FENCE.reset(tok)


@dataclass(frozen=True)
class Seen:
    """One file a tool read the content of, listed, or wrote: ``kind`` is ``read``, ``list``
    (its name in a listing), ``write`` (complete replace), ``append`` or ``edit``; ``key`` the file's (st_dev, st_ino) after the
    call (``old``: before it, for a replace); ``path`` the host path."""

    kind: str
    path: str
    key: tuple[int, int]
    old: tuple[int, int] | None = None


_SEEN: ContextVar[list[Seen] | None] = ContextVar("agentix_fs_seen", default=None)


@contextmanager
def observed() -> Iterator[list[Seen]]:
    """Collect, in the list yielded, every file the functions of this module read the content
    of or write (in this context and threads started from it): the kernel labels a context
    by what it read and records what a tainted context wrote (kernel/file_taint.py)."""
    seen: list[Seen] = []
    tok = _SEEN.set(seen)
    try:
        yield seen
    finally:
        _SEEN.reset(tok)


def _saw(kind: str, path: str, st: os.stat_result, old: os.stat_result | None = None) -> None:
    seen = _SEEN.get()
    if seen is not None:
        seen.append(Seen(kind, path, (st.st_dev, st.st_ino), None if old is None else (old.st_dev, old.st_ino)))


def _saw_at(kind: str, pfd: int, name: str, shown: str, old: os.stat_result | None = None) -> None:
    """``_saw`` the file ``name`` in the directory open at ``pfd`` as it is now."""
    if _SEEN.get() is None:
        return
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except OSError:
        return
    _saw(kind, shown, st, old)


def _kernel_state(shown: str) -> CapabilityDenied:
    return CapabilityDenied(f"{shown} is the kernel's own state; no grant reaches it",
                            reason="kernel_state", path=shown)


def _guard_dir(fd: int, shown: str) -> None:
    """Refuse if the directory open at ``fd`` lies in a denied directory (walking up by ``..``)."""
    f = _FENCE.get()
    if f is None:
        return
    cur = os.dup(fd)
    try:
        for _ in range(4096):
            st = os.fstat(cur)
            key = (st.st_dev, st.st_ino)
            if key in f.allowed:
                return
            if key in f.denied:
                raise _kernel_state(shown)
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
            ust = os.fstat(up)
            os.close(cur)
            cur = up
            if (ust.st_dev, ust.st_ino) == key:
                return  # the root of the file system
    finally:
        os.close(cur)


def _guard_file(st: os.stat_result, shown: str) -> None:
    f = _FENCE.get()
    if f is not None and (st.st_dev, st.st_ino) in f.files:
        raise _kernel_state(shown)


def _denied_dir(fd: int) -> bool:
    """For walks going down: whether this directory is a denied one (not entered)."""
    f = _FENCE.get()
    if f is None:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) in f.denied


@dataclass
class _Root:
    path: str
    fd: int

    def shown(self, rel: str) -> str:
        rel = "/".join(_components(rel))
        if not rel:
            return self.path
        return (self.path.rstrip("/") + "/" + rel) if self.path != "/" else "/" + rel

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> _Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_guarded_dir(opener: Callable[[], int], shown: str) -> int:
    """The directory ``opener()`` opens, refused (its fd closed) if it lies in a denied
    directory (``_guard_dir``); an error opening it is a ``_refusal``. The caller closes it."""
    try:
        fd = opener()
    except OSError as err:
        raise _refusal(err, shown) from None
    try:
        _guard_dir(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_root(root: str) -> _Root:
    if not isinstance(root, str) or not root.startswith("/"):
        raise InvalidRequest(f"granted root {root!r} must be an absolute path")
    return _Root(root, _open_guarded_dir(lambda: os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), root))


def _guard_parent_of(r: _Root, rel: str, shown: str) -> None:
    parts = _components(rel)
    if len(parts) < 2 or _FENCE.get() is None:
        return  # the root itself was checked when it was opened
    os.close(_open_guarded_dir(lambda: open_beneath(r.fd, "/".join(parts[:-1]), os.O_RDONLY | os.O_DIRECTORY),
                               shown))


@contextmanager
def _regular_at(pfd: int, name: str, flags: int, shown: str) -> Iterator[tuple[int, os.stat_result]]:
    """The regular file ``name`` in the directory open at ``pfd``, opened with ``flags`` (never
    through a symlink, never blocking on a FIFO; created 0644 with ``O_CREAT``) and closed
    after the block; anything but a regular file is refused."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=pfd)
    except OSError as err:
        raise _refusal(err, shown) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{shown}: not a regular file", errno="EINVAL", path=shown)
        yield fd, st
    finally:
        os.close(fd)


def _open_regular_read(r: _Root, rel: str) -> tuple[int, os.stat_result]:
    shown = r.shown(rel)
    try:
        fd = open_beneath(r.fd, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        raise _refusal(err, shown) from None
    st = os.fstat(fd)
    try:
        _guard_file(st, shown)
        _guard_parent_of(r, rel, shown)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{shown}: is a directory (use file_list)", errno="EISDIR", path=shown)
        raise ToolError(f"{shown}: not a regular file", errno="EINVAL", path=shown)
    return fd, st


def _decode(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def locate(token: Token, kind: str, path: str, workspace: str | None = None) -> tuple[str, str]:
    """Authorise ``path`` for ``kind`` (file_read/file_write) with ``token`` and return
    ``(root, rel)`` to pass to the functions here: the most specific granted directory over
    the token's chain and the remainder below it. Raises ``capability_denied``."""
    norm = resolve_request(path, workspace)
    req = Request(kind, norm)  # type: ignore[arg-type]
    root = token.file_root(kind, norm) if token.permits(req) else None
    if root is None:
        raise CapabilityDenied(f"no capability allows {kind} on {norm}", reason="not_granted",
                               request=str(req), token_id=token.id)
    return root, split_under(root, norm)


# ----------------------------------------------------------------------------- reading

def file_read(
    root: str, rel: str, *, offset: int = 0, limit: int | None = None, max_bytes: int = MAX_READ_BYTES
) -> dict[str, Any]:
    """Read up to ``limit`` (capped at ``max_bytes``) bytes from ``offset``."""
    if not isinstance(offset, int) or offset < 0:
        raise InvalidRequest("offset must be a non-negative integer")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidRequest("limit must be a non-negative integer")
    want = max_bytes if limit is None else min(limit, max_bytes)
    with _open_root(root) as r:
        fd, st = _open_regular_read(r, rel)
        try:
            data = os.pread(fd, want, offset)
        finally:
            os.close(fd)
        _saw("read", r.shown(rel), st)
        content, enc = _decode(data)
        return {
            "path": r.shown(rel),
            "content": content,
            "encoding": enc,
            "size": st.st_size,
            "offset": offset,
            "bytes_read": len(data),
            "truncated": offset + len(data) < st.st_size,
        }


def file_read_many(
    resolve: Callable[[str], tuple[str, str]],
    paths: list[str],
    *,
    max_files: int = MAX_READ_MANY,
    max_bytes: int = MAX_READ_BYTES,
) -> dict[str, Any]:
    """Read several files; ``resolve(path) -> (root, rel)`` authorises each one (raising
    ``capability_denied`` for a path the caller may not read). One failure does not fail the
    others: each result is ``{path, ok, ...}`` or ``{path, ok: False, error: {code, message}}``."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InvalidRequest("paths must be a list of strings")
    if len(paths) > max_files:
        raise LimitExceeded(
            f"file_read_many reads at most {max_files} files at once, got {len(paths)}",
            limit=max_files, requested=len(paths),
        )
    per_file = max(1, max_bytes // max(1, len(paths)))
    results = []
    for p in paths:
        try:
            root, rel = resolve(p)
            res = file_read(root, rel, max_bytes=per_file)
            results.append({"ok": True, **res, "path": p})
        except AgentixError as err:
            results.append({"path": p, "ok": False, "error": {"code": err.code, "message": err.message}})
    return {"results": results}


def _iter_dir(dfd: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(dfd) as it:
        yield from sorted(it, key=lambda e: e.name)


def _kind(e: os.DirEntry[str]) -> str:
    if e.is_symlink():
        return "symlink"
    if e.is_dir(follow_symlinks=False):
        return "dir"
    if e.is_file(follow_symlinks=False):
        return "file"
    return "other"


def file_list(
    root: str, rel: str = "", *, recursive: bool = False, max_entries: int = MAX_LIST_ENTRIES
) -> dict[str, Any]:
    """Entries of a directory (never following symlinks; they are listed as ``symlink``)."""
    with _open_root(root) as r:
        shown = r.shown(rel)
        dfd = _open_guarded_dir(lambda: open_beneath(r.fd, rel, os.O_RDONLY | os.O_DIRECTORY), shown)
        entries: list[dict[str, Any]] = []
        truncated = False

        def walk(fd: int, prefix: str, depth: int = 0) -> None:
            nonlocal truncated
            try:
                for e in _iter_dir(fd):
                    if len(entries) >= max_entries:
                        truncated = True
                        return
                    kind = _kind(e)
                    st = e.stat(follow_symlinks=False)
                    _saw("list", f"{shown}/{prefix}{e.name}", st)  # a name is its writer's text
                    entries.append({"name": prefix + e.name, "type": kind,
                                    "size": st.st_size if kind == "file" else None})
                    if recursive and kind == "dir":
                        if depth >= MAX_DEPTH:
                            truncated = True
                            continue
                        try:
                            sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                        except OSError:
                            continue
                        if _denied_dir(sub):
                            os.close(sub)
                            continue
                        walk(sub, prefix + e.name + "/", depth + 1)
            finally:
                os.close(fd)

        walk(dfd, "")
        return {"path": shown, "entries": entries, "truncated": truncated}


def grep(
    root: str,
    rel: str,
    pattern: str,
    *,
    regex: bool = True,
    ignore_case: bool = False,
    max_matches: int = MAX_GREP_MATCHES,
    max_file_bytes: int = MAX_READ_BYTES,
    max_files: int = MAX_GREP_FILES,
) -> dict[str, Any]:
    """Lines matching ``pattern`` in the file or tree at ``rel`` (text files only, no symlinks)."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > 1000:
        raise InvalidRequest("pattern must be a non-empty string of at most 1000 characters")
    try:
        rx = re.compile(pattern if regex else re.escape(pattern), re.IGNORECASE if ignore_case else 0)
    except re.error as err:
        raise InvalidRequest(f"pattern is not a valid regular expression: {err}") from None
    matches: list[dict[str, Any]] = []
    state = {"files": 0, "truncated": False}

    def scan(fd: int, name: str) -> None:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            f = _FENCE.get()
            if f is not None and (st.st_dev, st.st_ino) in f.files:
                return
            data = os.pread(fd, max_file_bytes, 0)
        finally:
            os.close(fd)
        _saw("read", name, st)
        state["files"] += 1
        if b"\x00" in data[:8192]:
            return
        text = data.decode("utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            if rx.search(line):
                if len(matches) >= max_matches:
                    state["truncated"] = True
                    return
                matches.append({"path": name, "line": i, "text": line[:1000]})

    def walk(dfd: int, prefix: str, depth: int = 0) -> None:
        try:
            for e in _iter_dir(dfd):
                if state["truncated"] or state["files"] >= max_files:
                    state["truncated"] = True
                    return
                kind = _kind(e)
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    if kind == "file":
                        scan(os.open(e.name, flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd), prefix + e.name)
                    elif kind == "dir" and depth < MAX_DEPTH:
                        sub = os.open(e.name, flags | os.O_DIRECTORY, dir_fd=dfd)
                        if _denied_dir(sub):
                            os.close(sub)
                            continue
                        walk(sub, prefix + e.name + "/", depth + 1)
                except OSError:
                    continue
        finally:
            os.close(dfd)

    with _open_root(root) as r:
        shown = r.shown(rel)
        try:
            fd = open_beneath(r.fd, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as err:
            raise _refusal(err, shown) from None
        try:
            fst = os.fstat(fd)
            _guard_file(fst, shown)
            _guard_dir(fd, shown) if stat.S_ISDIR(fst.st_mode) else _guard_parent_of(r, rel, shown)
        except BaseException:
            os.close(fd)
            raise
        if stat.S_ISDIR(fst.st_mode):
            walk(fd, shown.rstrip("/") + "/")
        else:
            scan(fd, shown)
    return {"matches": matches, "truncated": state["truncated"], "files_searched": state["files"]}


# ----------------------------------------------------------------------------- writing

def _open_parent(r: _Root, parts: list[str], create: bool) -> tuple[int, list[tuple[int, str]]]:
    """An fd of the parent directory of ``parts``; with ``create``, make missing directories
    (returns (parent fd, name) of each directory made, outermost first, for rollback)."""
    dirs = parts[:-1]
    flags = os.O_RDONLY | os.O_DIRECTORY
    shown = r.shown("/".join(dirs))
    try:
        pfd = open_beneath(r.fd, "/".join(dirs), flags)
    except OSError as err:
        if err.errno != errno.ENOENT or not create:
            if err.errno == errno.ENOENT:
                raise ToolError(
                    f"{shown}: the parent directory does not exist (pass create_parents)",
                    errno="ENOENT", path=shown,
                ) from None
            raise _refusal(err, shown) from None
    else:
        try:
            _guard_dir(pfd, shown)
        except BaseException:
            os.close(pfd)
            raise
        return pfd, []
    # walk component by component; everything up to the first missing one already exists
    cur = os.dup(r.fd)
    made: list[tuple[int, str]] = []
    try:
        for d in dirs:
            try:
                nxt = _open_dir_nofollow(d, cur)
            except FileNotFoundError:
                os.mkdir(d, 0o755, dir_fd=cur)
                made.append((os.dup(cur), d))
                nxt = _open_dir_nofollow(d, cur)
            os.close(cur)
            cur = nxt
            if _denied_dir(cur):  # walking down from a checked root: the first denied dir stops it
                raise _kernel_state(shown)
    except OSError as err:
        os.close(cur)
        _rollback(made)
        raise _refusal(err, shown) from None
    except CapabilityDenied:
        os.close(cur)
        _rollback(made)
        raise
    return cur, made


def _rollback(made: list[tuple[int, str]]) -> None:
    for pfd, name in reversed(made):
        try:
            os.rmdir(name, dir_fd=pfd)
        except OSError:
            pass
        finally:
            os.close(pfd)


def _release(made: list[tuple[int, str]]) -> None:
    for pfd, _ in made:
        os.close(pfd)


def usage(dirfd: int, *, max_entries: int = MAX_USAGE_ENTRIES, stop_over: int | None = None) -> int:
    """Bytes the tree under ``dirfd`` takes on the host: each entry its size or its allocated
    blocks, whichever is more, and at least ``ENTRY_BYTES`` (fd-relative, never following a
    link; a hard link counts each time). More than ``max_entries`` entries: ``limit_exceeded``.
    With ``stop_over``, the walk ends once the total is over it (a quota check needs no more:
    at most ``stop_over / ENTRY_BYTES`` entries are looked at)."""
    total, seen = 0, 0
    stack = [os.dup(dirfd)]
    try:
        while stack:
            fd = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    for e in entries:
                        seen += 1
                        if seen > max_entries:
                            raise LimitExceeded(f"the workspace holds more than {max_entries} entries",
                                                limit=max_entries, reason="disk")
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue  # gone meanwhile
                        total += max(st.st_size, st.st_blocks * 512, ENTRY_BYTES)
                        if stop_over is not None and total > stop_over:
                            return total
                        if stat.S_ISDIR(st.st_mode):
                            try:
                                stack.append(_open_dir_nofollow(e.name, fd))
                            except OSError:
                                pass
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total


@dataclass
class DiskQuota:
    """One workspace's ``limits.disk`` and what the kernel counts it takes (``used``: None until
    measured, and again whenever the count may be out of date). A write checks against ``used``
    (measuring it first if it is None) and adds exactly what it changed: each entry it made,
    replaced or grew, the directories on its path included, as ``usage`` counts them."""

    limit: int
    used: int | None = None
    walks: int = 0  # how many times it was measured

    def measure(self, dirfd: int, *, whole: bool = False) -> int:
        """``used``, walking the tree under ``dirfd`` when it is not known (a walk stops once
        over the limit, and leaves it unknown: it is not the whole count; ``whole``: the walk
        goes on, to say by how much)."""
        if self.used is not None:
            return self.used
        self.walks += 1
        used = usage(dirfd, stop_over=None if whole else self.limit)
        if used <= self.limit:
            self.used = used
        return used

    def add(self, delta: int) -> None:
        if self.used is not None:
            self.used += delta


def _value(st: os.stat_result) -> int:
    """What one entry counts (``usage``'s rule)."""
    return max(st.st_size, st.st_blocks * 512, ENTRY_BYTES)


def _new_entry_room(parts: list[str]) -> int:
    """What a directory below the root may grow by when one entry is added to it: a block, and
    one more when ext4 turns a full one-block directory into an indexed one (three blocks).
    The root's own size is not the workspace's, so an entry added there costs nothing."""
    return 2 * ENTRY_BYTES if len(parts) > 1 else 0


class _PathDirs:
    """What the directories on the path ``dirs`` below ``rfd`` take (outermost first; the walk
    ends at the first that is missing or not a directory): writing a file can grow each of
    them, or make them. Walked down once, before the write (``before``); a write adds an entry
    only to the deepest of them and to the directories it makes, so ``now`` looks at those alone
    (the others cannot have changed), not down the path again. A context manager: it holds the
    deepest directory open."""

    def __init__(self, rfd: int, dirs: list[str], *, counted: bool = True) -> None:
        values: list[int] = []
        self.deepest: int | None = None  # the deepest directory's fd (None: none exists below the root)
        self.before = self._fixed = 0
        if not counted:  # no count is kept: nothing to walk, nothing changes
            return
        cur = os.dup(rfd)
        try:
            for d in dirs:
                st = os.stat(d, dir_fd=cur, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    break
                nxt = _open_dir_nofollow(d, cur)
                os.close(cur)
                cur = nxt
                values.append(_value(st))
        except OSError:
            pass
        except BaseException:
            os.close(cur)
            raise
        self.deepest = cur if values else None
        if not values:
            os.close(cur)
        self.before = sum(values)
        self._fixed = self.before - (values[-1] if values else 0)

    def now(self, made: list[tuple[int, str]]) -> int:
        """What they take now, ``made`` (``_open_parent``'s: the directories the write made,
        each under its parent) included."""
        total = self._fixed
        if self.deepest is not None:
            try:
                total += _value(os.fstat(self.deepest))
            except OSError:
                pass
        return total + sum(_entry(pfd, name) for pfd, name in made)

    def __enter__(self) -> _PathDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.deepest is not None:
            os.close(self.deepest)
            self.deepest = None


def _entry(pfd: int, name: str) -> int:
    try:
        return _value(os.stat(name, dir_fd=pfd, follow_symlinks=False))
    except OSError:
        return 0


def measure_in(workspace: str, quota: DiskQuota, *, whole: bool = False) -> int:
    """``quota.measure`` of the tree at ``workspace``."""
    with _open_root(workspace) as r:
        return quota.measure(r.fd, whole=whole)


def room(workspace: str, disk_limit: int, quota: DiskQuota | None = None) -> int:
    """Bytes the tree at ``workspace`` may still grow by under ``disk_limit`` (from ``quota``'s
    count when it has one, measured again before it says none is left); none left is
    ``limit_exceeded`` (reason ``disk``)."""
    quota = quota or DiskQuota(disk_limit)
    walks = quota.walks
    used = measure_in(workspace, quota)
    if used >= disk_limit and quota.walks == walks:  # a kept count: never refuse on it
        quota.used = None
        used = measure_in(workspace, quota)
    if used >= disk_limit:
        raise LimitExceeded(f"the workspace takes {used} bytes, at or over its disk limit of {disk_limit} "
                            "bytes (limits.disk); remove files first or raise limits.disk",
                            limit=disk_limit, used=used, reason="disk")
    return disk_limit - used


def _blocks(size: int) -> int:
    """What a file of ``size`` bytes takes: whole blocks, at least one."""
    return max(-(-size // ENTRY_BYTES) * ENTRY_BYTES, ENTRY_BYTES)


class _StaleCount(LimitExceeded):
    """A refusal decided on a count from before this call; ``_counted_afresh`` runs the call
    again on a fresh one (the count is dropped) before it refuses."""


def _counted_afresh(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``; if it would be refused on a kept count (files removed since by something other
    than the kernel's tools are not in it), once more on a count measured now: a refusal is
    always on a fresh count, a kept one only ever lets a write through."""
    try:
        return fn()
    except _StaleCount:
        return fn()


def _room(r: _Root, quota: DiskQuota | None, grows: int, shown: str, *, entry: int = 0,
          walks: int = 0) -> None:
    """``limit_exceeded`` (reason ``disk``) if the tree under ``r`` would take more than
    ``quota.limit`` bytes after growing by ``grows``, and ``entry`` more for the directory
    entry the write adds (a write that does not grow the files is never refused: a workspace
    at its limit can always be shrunk). ``walks``: ``quota.walks`` when the call began (a count
    kept from before it is dropped and the call run again rather than refused on it)."""
    if quota is None or grows <= 0:
        return
    grows += entry
    disk_limit = quota.limit
    used = quota.measure(r.fd)
    if used + grows > disk_limit:
        if quota.walks == walks:  # not measured during this call
            quota.used = None
            raise _StaleCount("counted again", limit=disk_limit, reason="disk")
        raise LimitExceeded(
            f"{shown}: writing {grows} more bytes would take the workspace to at least {used + grows} bytes, over "
            f"its disk limit of {disk_limit} bytes (limits.disk); remove files first or raise limits.disk",
            limit=disk_limit, used=used, reason="disk", path=shown)


def _as_bytes(content: str | bytes, max_bytes: int) -> bytes:
    if isinstance(content, str):
        data = content.encode("utf-8")
    elif isinstance(content, (bytes, bytearray)):
        data = bytes(content)
    else:
        raise InvalidRequest("content must be a string")
    if len(data) > max_bytes:
        raise LimitExceeded(f"content is {len(data)} bytes; the limit is {max_bytes}", limit=max_bytes)
    return data


def _existing(pfd: int, name: str, shown: str) -> os.stat_result | None:
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _refusal(err, shown) from None
    if stat.S_ISLNK(st.st_mode):
        raise CapabilityDenied(f"{shown}: a symbolic link is refused", reason="symlink", path=shown)
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{shown}: is a directory", errno="EISDIR", path=shown)
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{shown}: not a regular file", errno="EINVAL", path=shown)
    return st


def _replace(pfd: int, name: str, data: bytes, mode: int) -> None:
    """Replace ``name`` atomically: write a temporary file beside it and rename it over.

    No fsync of the file (docs/audit.md, "What a written file survives"): a ``kill -9`` of
    the kernel loses nothing written here -- the data is in the page cache once ``write``
    returns, and readers see the old content or the new, never a mix; power loss can take
    back a recent write and may leave a new file empty."""
    tmp = f".{name[:100]}.agentix-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=pfd)
        except OSError:
            pass
        raise


def file_write(root: str, rel: str, content: str | bytes, **kw: Any) -> dict[str, Any]:
    """Write (atomic replace) or append ``content`` to the file at ``rel`` (``_file_write``)."""
    return _counted_afresh(lambda: _file_write(root, rel, content, **kw))


def _file_write(
    root: str,
    rel: str,
    content: str | bytes,
    *,
    append: bool = False,
    create_parents: bool = False,
    max_bytes: int = MAX_WRITE_BYTES,
    quota: DiskQuota | None = None,
) -> dict[str, Any]:
    """Write (atomic replace) or append ``content`` to the file at ``rel``; ``quota``: the tree
    under ``root`` (a workspace) may take at most ``quota.limit`` bytes afterwards, and
    ``quota.used`` is kept up to date with what the write changed."""
    data = _as_bytes(content, max_bytes)
    parts = _components(rel)
    if not parts:
        raise InvalidRequest("file_write needs a file path, not the granted directory itself")
    name = parts[-1]
    with _open_root(root) as r:
        shown = r.shown(rel)
        walks = quota.walks if quota is not None else 0
        if quota is not None:
            quota.measure(r.fd)  # before a parent directory is made (those count below)
        with _PathDirs(r.fd, parts[:-1], counted=quota is not None) as path_dirs:
            pfd, made = _open_parent(r, parts, create_parents)
            before = _entry(pfd, name) if quota is not None else 0
            try:
                st = _existing(pfd, name, shown)
                # what the file will take less what it takes, and the parents just made
                had = 0 if st is None else _value(st)
                size = len(data) + (st.st_size if append and st is not None else 0)
                parents = path_dirs.now(made) - path_dirs.before if quota is not None else 0
                # a new file, or the temporary file of a replace, is one more entry in its directory
                entry = 0 if append and st is not None else _new_entry_room(parts)
                _room(r, quota, _blocks(size) - had + parents, shown, entry=entry, walks=walks)
                commit_point()  # the call that asked is still there (tools/thread_work.py)
                if append:
                    with _regular_at(pfd, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, shown) as (fd, fst):
                        if fst.st_nlink > 1:
                            raise CapabilityDenied(
                                f"{shown}: has several hard links; appending in place is refused",
                                reason="hardlink", path=shown,
                            )
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                else:
                    try:
                        _replace(pfd, name, data, stat.S_IMODE(st.st_mode) if st else 0o644)
                    except OSError as err:
                        raise _refusal(err, shown) from None
                _saw_at("append" if append else "write", pfd, name, shown, st)
            except BaseException:
                _rollback(made)
                made = []
                raise
            finally:
                if quota is not None:  # what changed, written or not (a directory may have grown)
                    quota.add(path_dirs.now(made) - path_dirs.before + _entry(pfd, name) - before)
                _release(made)
                os.close(pfd)
            return {"path": shown, "bytes_written": len(data), "created": st is None, "appended": append}


def file_edit(root: str, rel: str, old: str, new: str, **kw: Any) -> dict[str, Any]:
    """Replace ``old`` by ``new`` in the file at ``rel`` (``_file_edit``)."""
    return _counted_afresh(lambda: _file_edit(root, rel, old, new, **kw))


def _file_edit(
    root: str,
    rel: str,
    old: str,
    new: str,
    *,
    replace_all: bool = False,
    max_bytes: int = MAX_WRITE_BYTES,
    quota: DiskQuota | None = None,
) -> dict[str, Any]:
    """Replace ``old`` by ``new``: exactly one occurrence unless ``replace_all`` (``quota``
    as ``file_write``'s)."""
    if not isinstance(old, str) or not old:
        raise InvalidRequest("old must be a non-empty string")
    if not isinstance(new, str):
        raise InvalidRequest("new must be a string")
    parts = _components(rel)
    if not parts:
        raise InvalidRequest("file_edit needs a file path")
    with _open_root(root) as r:
        shown = r.shown(rel)
        with _PathDirs(r.fd, parts[:-1], counted=quota is not None) as path_dirs:
            pfd, _ = _open_parent(r, parts, False)
            before = _entry(pfd, parts[-1]) if quota is not None else 0
            walks = quota.walks if quota is not None else 0
            try:
                with _regular_at(pfd, parts[-1], os.O_RDONLY, shown) as (fd, st):
                    if st.st_size > max_bytes:
                        raise LimitExceeded(f"{shown} is larger than {max_bytes} bytes", limit=max_bytes)
                    raw = os.pread(fd, max_bytes + 1, 0)
                _saw("read", shown, st)  # its answer and its errors tell of the content: as a read
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ToolError(f"{shown}: not a UTF-8 text file", path=shown) from None
                count = text.count(old)
                if count == 0:
                    raise ToolError(f"{shown}: the text to replace was not found", path=shown, matches=0)
                if count > 1 and not replace_all:
                    raise ToolError(
                        f"{shown}: the text to replace occurs {count} times; give more context or set replace_all",
                        path=shown, matches=count,
                    )
                out = text.replace(old, new) if replace_all else text.replace(old, new, 1)
                data = _as_bytes(out, max_bytes)
                _room(r, quota, _blocks(len(data)) - _value(st), shown, entry=_new_entry_room(parts), walks=walks)
                commit_point()
                try:
                    _replace(pfd, parts[-1], data, stat.S_IMODE(st.st_mode))
                except OSError as err:
                    raise _refusal(err, shown) from None
                _saw_at("edit", pfd, parts[-1], shown, st)
            finally:
                if quota is not None:
                    quota.add(path_dirs.now([]) - path_dirs.before + _entry(pfd, parts[-1]) - before)
                os.close(pfd)
            return {"path": shown, "replacements": count if replace_all else 1}
