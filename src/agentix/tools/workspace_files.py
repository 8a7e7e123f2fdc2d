"""file_read, file_write, file_list confined to the calling agent's own workspace.

Paths are relative to the workspace (a leading ``/workspace/`` is accepted too). Every
component is opened with ``O_NOFOLLOW`` from the workspace's directory descriptor, so a
symlink anywhere in the path is refused and the check is made on the object actually
opened; ``..`` is refused outright. A refused call creates, truncates and makes nothing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from agentix.core.errors import CapabilityDenied, InvalidRequest, NotFound, ToolError
from agentix.tools.base import ToolContext, ToolSpec

__all__ = ["SPECS"]

MAX_READ = 4 * 1024 * 1024
MAX_WRITE = 8 * 1024 * 1024


def _parts(path: str) -> list[str]:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidRequest("path must be a non-empty string", field="path")
    p = path
    if p == "/workspace" or p.startswith("/workspace/"):
        p = p[len("/workspace"):]
    elif p.startswith("/"):
        raise CapabilityDenied(
            f"{path}: outside the agent's workspace (no capability covers it)",
            reason="outside_workspace", path=path)
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if ".." in parts:
        raise CapabilityDenied(f"{path}: '..' is not allowed in paths", reason="dotdot", path=path)
    return parts


def _open_dir(root: Path, parts: list[str], *, create: bool = False) -> int:
    """An O_NOFOLLOW walk down ``parts`` from root; returns a directory fd."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts:
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _os_error(path: str, err: OSError) -> Exception:
    if err.errno == errno.ELOOP or err.errno == errno.ENOTDIR:
        return CapabilityDenied(f"{path}: symlinks are not followed", reason="symlink", path=path)
    if isinstance(err, FileNotFoundError):
        return NotFound(f"{path}: no such file", path=path)
    return ToolError(f"{path}: {err.strerror}", path=path)


def _read(root: Path, path: str, offset: int, limit: int) -> dict[str, Any]:
    parts = _parts(path)
    if not parts:
        raise InvalidRequest(f"{path}: is a directory", field="path")
    try:
        dfd = _open_dir(root, parts[:-1])
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        finally:
            os.close(dfd)
    except OSError as err:
        raise _os_error(path, err) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidRequest(f"{path}: not a regular file", field="path")
        f.seek(offset)
        data = f.read(limit)
    return {"path": path, "content": data.decode("utf-8", errors="replace"), "size": st.st_size,
            "offset": offset, "truncated": offset + len(data) < st.st_size}


def _write(root: Path, path: str, content: str, append: bool) -> dict[str, Any]:
    parts = _parts(path)
    if not parts:
        raise InvalidRequest(f"{path}: is a directory", field="path")
    data = content.encode()
    if len(data) > MAX_WRITE:
        raise InvalidRequest(f"content is {len(data)} bytes; the limit is {MAX_WRITE}", field="content")
    try:
        dfd = _open_dir(root, parts[:-1], create=True)
    except OSError as err:
        raise _os_error(path, err) from None
    name = parts[-1]
    try:
        if append:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        else:
            # rename() would replace a symlink (or fail on a directory) after the temporary
            # file exists: refuse those first, and never leave the temporary file behind
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "is a symlink")
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, "is a directory")
            tmp = f".{name}.agentix-tmp-{os.getpid()}-{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
    except OSError as err:
        raise _os_error(path, err) from None
    finally:
        os.close(dfd)
    return {"path": path, "bytes": len(data), "appended": append}


def _list(root: Path, path: str) -> dict[str, Any]:
    parts = _parts(path or ".")
    try:
        dfd = _open_dir(root, parts)
    except OSError as err:
        raise _os_error(path, err) from None
    try:
        entries = []
        with os.scandir(dfd) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
                entries.append({"name": e.name, "type": kind, "size": st.st_size})
    finally:
        os.close(dfd)
    entries.sort(key=lambda x: x["name"])
    return {"path": path or ".", "entries": entries}


async def file_read(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    offset = int(args.get("offset", 0))
    limit = min(int(args.get("limit", MAX_READ)), MAX_READ)
    if offset < 0 or limit < 0:
        raise InvalidRequest("offset and limit must be non-negative", field="offset")
    return await asyncio.to_thread(_read, ctx.require_workspace(), args["path"], offset, limit)


async def file_write(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(_write, ctx.require_workspace(), args["path"], args["content"],
                                   bool(args.get("append", False)))


async def file_list(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(_list, ctx.require_workspace(), args.get("path", "."))


_PATH = {"type": "string", "description": "path relative to the workspace"}
SPECS = [
    ToolSpec("file_read", "Read a text file from the workspace (offset/limit in bytes).",
             {"type": "object", "properties": {"path": _PATH, "offset": {"type": "integer"}, "limit": {"type": "integer"}},
              "required": ["path"], "additionalProperties": False}, file_read),
    ToolSpec("file_write", "Write (or append to) a text file in the workspace; parents are created.",
             {"type": "object", "properties": {"path": _PATH, "content": {"type": "string"}, "append": {"type": "boolean"}},
              "required": ["path", "content"], "additionalProperties": False}, file_write),
    ToolSpec("file_list", "List a directory of the workspace.",
             {"type": "object", "properties": {"path": _PATH}, "additionalProperties": False}, file_list),
]
