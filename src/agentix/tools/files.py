"""The kernel's file tools: file_read, file_read_many, file_list, file_write, file_edit, grep.

Rules:

- They run after the capability stage made the call's one decision (``core.authorize``) over
  every path the call names; they receive only that ``Authorization`` (``ctx.authorization``),
  never a token list. Each path is opened beneath the granted directory of the token the
  decision chose *for that path* (``file_read_many``: a path the decision refused — not
  granted, revoked, expired, exhausted, the kernel's own state — is reported as a partial
  failure and never opened).
- Paths are in the agent's view: relative paths and ``/workspace/...`` mean the *caller's*
  workspace. A located path under ``/workspace`` is opened beneath the caller's host
  workspace directory (the whole remainder, so ``openat2``'s no-symlink rule covers every
  component the agent could have made); any other path is a real host path opened beneath the
  granted directory. Results and errors show virtual paths, never the host's.
- The operator (``tool.invoke`` without ``agent_id``) holds no tokens: it must name an agent.
- ``limits.disk``: the writes into one workspace run one at a time against the kernel's count
  of what it takes (``DiskTally``): measured by a walk at first use, then adjusted by each write
  and edit by exactly what it changed. What the kernel did not write can change it too (an
  ``exec`` run, the agent's own process): the count is measured again after each exec run
  (``net_exec``) and whenever it is more than ``COUNT_FRESH_S`` old (the kernel's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from agentix.core.errors import AgentixError, InvalidRequest, NotFound, ToolError
from agentix.core.grants import Request
from agentix.core.paths import resolve_request, split_under
from agentix.tools import safe_fs
from agentix.tools.base import ToolContext, ToolSpec
from agentix.tools.thread_work import in_thread

__all__ = ["COUNT_FRESH_S", "DiskTally", "VIRTUAL_WORKSPACE", "make_specs"]

VIRTUAL_WORKSPACE = "/workspace"
#: how long the kernel trusts its count of a workspace (seconds of the kernel's clock) before
#: a growing write walks the workspace again: what the agent's own process wrote there is
#: seen by then (a burst of writes pays one walk a second, not one per write)
COUNT_FRESH_S = 1.0


class _QuotaLock:
    """One workspace's writes under a disk limit, one at a time (check, then write), and the
    kernel's count of what it takes (None: to be measured)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.quota: safe_fs.DiskQuota | None = None
        self.counted_at = float("-inf")
        self.users = 0  # the writes that hold it (DiskTally's guard): one in use is never dropped


class DiskTally:
    """The kernel's count of what each workspace under a ``limits.disk`` takes (one per
    kernel: ``KernelRoot.disk_tally``), read and adjusted by ``file_write`` / ``file_edit`` and
    ``exec`` (kernel/net_exec.py) under the workspace's one lock."""

    def __init__(self, monotonic: Callable[[], float], *, fresh_for: float = COUNT_FRESH_S) -> None:
        self.monotonic = monotonic
        self.fresh_for = fresh_for
        self._locks: dict[str, _QuotaLock] = {}  # by host workspace path
        self._guard = threading.Lock()
        self.walks = 0  # workspaces measured by a walk (statistics; a test reads it)

    @contextlib.contextmanager
    def _held(self, workspace: str) -> Iterator[_QuotaLock]:
        with self._guard:
            held = self._locks.get(workspace)
            if held is None:
                held = self._locks[workspace] = _QuotaLock()
            held.users += 1
        try:
            yield held
        finally:
            with self._guard:
                held.users -= 1

    def forget(self, workspace: str) -> None:
        """Let go of ``workspace``'s count (its agent exited: one entry per workspace ever
        written would otherwise stay for the kernel's life). One a write still holds is kept
        (two writes never get two locks); a later write counts again from a walk."""
        with self._guard:
            held = self._locks.get(workspace)
            if held is not None and held.users == 0:
                del self._locks[workspace]

    @contextlib.contextmanager
    def writing(self, workspace: str | None, disk_limit: int | None) -> Iterator[safe_fs.DiskQuota | None]:
        """The workspace's count (its writes one at a time, so two at once cannot both fit the
        room that is left for one); None when no limit applies."""
        if workspace is None or disk_limit is None:
            yield None
            return
        with self._held(workspace) as held, held.lock:
            quota, now = held.quota, self.monotonic()
            if quota is None or quota.used is None or quota.limit != disk_limit or now - held.counted_at > self.fresh_for:
                quota = held.quota = safe_fs.DiskQuota(disk_limit)
                held.counted_at = now
            try:
                yield quota
            finally:
                self.walks += quota.walks
                quota.walks = 0

    def room(self, workspace: str, disk_limit: int) -> int:
        """What the workspace may still grow by (``safe_fs.room``), from the count."""
        with self.writing(workspace, disk_limit) as quota:
            return safe_fs.room(workspace, disk_limit, quota)

    def recount(self, workspace: str, disk_limit: int) -> int | None:
        """Measure the workspace again (something the kernel did not write changed it: an exec
        run); what it takes now (over ``disk_limit`` when it is over; None when it cannot be
        measured: gone, or more entries than any limit allows)."""
        with self._held(workspace) as held, held.lock:
            held.quota = None
        try:
            with self.writing(workspace, disk_limit) as quota:
                assert quota is not None
                return safe_fs.measure_in(workspace, quota, whole=True)
        except AgentixError:
            return None


def _under_ws(norm: str) -> bool:
    return norm == VIRTUAL_WORKSPACE or norm.startswith(VIRTUAL_WORKSPACE + "/")


class _Locator:
    def __init__(self, ctx: ToolContext) -> None:
        self.auth = ctx.require_authorization()
        self.ws = ctx.workspace

    def disk_limit(self, path: str, agent: Any) -> int | None:
        """The agent's ``limits.disk`` when ``path`` is in its workspace (what its files there may
        take in all), else None."""
        if agent is None or self.ws is None or not _under_ws(resolve_request(path, VIRTUAL_WORKSPACE)):
            return None
        limits = getattr(agent, "limits", None)
        return getattr(limits, "disk", None)

    def __call__(self, kind: str, path: str) -> tuple[str, str]:
        norm = resolve_request(path, VIRTUAL_WORKSPACE)
        token = self.auth.token_for(Request(kind, norm))  # type: ignore[arg-type]
        root, rel = safe_fs.locate(token, kind, norm, VIRTUAL_WORKSPACE)
        if _under_ws(norm):
            if self.ws is None:
                raise InvalidRequest("a /workspace path needs an agent", field="agent_id")
            return str(self.ws), split_under(VIRTUAL_WORKSPACE, norm)
        return root, rel

    def virtual(self, obj: Any) -> Any:
        """``obj`` with the host workspace path shown as /workspace."""
        if self.ws is None:
            return obj
        host = str(self.ws)

        def walk(x: Any) -> Any:
            if isinstance(x, str):
                if x == host or x.startswith(host + "/"):
                    return VIRTUAL_WORKSPACE + x[len(host):]
                return x.replace(host + "/", VIRTUAL_WORKSPACE + "/").replace(host, VIRTUAL_WORKSPACE)
            if isinstance(x, dict):
                return {k: walk(v) for k, v in x.items()}
            if isinstance(x, list):
                return [walk(v) for v in x]
            return x

        return walk(obj)


async def _run(ctx: ToolContext, fn: Any, *, writes: bool = False) -> dict[str, Any]:
    loc = _Locator(ctx)
    try:
        with safe_fs.fenced(ctx.fence):  # the thread inherits the context, hence the fence
            if writes:  # ended by its call: all or nothing, answered once the thread is done
                out = await in_thread(lambda: fn(loc))
            else:
                out = await asyncio.to_thread(fn, loc)
        return loc.virtual(out)
    except AgentixError as err:
        message, data = loc.virtual(err.message), loc.virtual(err.data)
        if isinstance(err, ToolError) and err.data.get("errno") == "ENOENT":
            raise NotFound(message, **data) from None  # a missing file is not_found to the caller
        raise err.evolve(message=message, **data) from None


def _int(args: dict[str, Any], key: str, default: int | None) -> int | None:
    v = args.get(key, default)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        raise InvalidRequest(f"{key} must be a non-negative integer", field=key)
    return v


async def file_read(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    offset = _int(args, "offset", 0) or 0
    limit = _int(args, "limit", None)
    return await _run(ctx, lambda loc: safe_fs.file_read(*loc("file_read", args["path"]), offset=offset, limit=limit))


async def file_read_many(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _run(ctx, lambda loc: safe_fs.file_read_many(lambda p: loc("file_read", p), args["paths"]))


async def file_list(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    path = args.get("path") or "."
    return await _run(ctx, lambda loc: safe_fs.file_list(*loc("file_read", path),
                                                    recursive=bool(args.get("recursive", False))))


async def grep(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    path = args.get("path") or "."
    return await _run(ctx, lambda loc: safe_fs.grep(*loc("file_read", path), args["pattern"],
                                               regex=bool(args.get("regex", True)),
                                               ignore_case=bool(args.get("ignore_case", False))))


def _file_write(tally: DiskTally) -> Any:
    async def file_write(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        def go(loc: _Locator) -> dict[str, Any]:
            limit = loc.disk_limit(args["path"], ctx.agent)
            with tally.writing(loc.ws and str(loc.ws), limit) as quota:
                res = safe_fs.file_write(*loc("file_write", args["path"]), args["content"],
                                         append=bool(args.get("append", False)),
                                         create_parents=bool(args.get("create_parents", True)), quota=quota)
            res["bytes"] = res["bytes_written"]  # the name older callers read
            return res

        return await _run(ctx, go, writes=True)
    return file_write


def _file_edit(tally: DiskTally) -> Any:
    async def file_edit(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        def go(loc: _Locator) -> dict[str, Any]:
            loc("file_read", args["path"])  # both rights: read what is edited
            limit = loc.disk_limit(args["path"], ctx.agent)
            with tally.writing(loc.ws and str(loc.ws), limit) as quota:
                return safe_fs.file_edit(*loc("file_write", args["path"]), args["old"], args["new"],
                                         replace_all=bool(args.get("replace_all", False)), quota=quota)

        return await _run(ctx, go, writes=True)
    return file_edit


_PATH = {"type": "string", "description": "a path; relative paths are in /workspace"}


def _schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def make_specs(tally: DiskTally) -> list[ToolSpec]:
    """The file tools; the writing ones keep ``tally``, the kernel's count of each workspace."""
    return [
        ToolSpec("file_read", "Read a file (offset/limit in bytes; at most 1 MiB per call).",
                 _schema({"path": _PATH, "offset": {"type": "integer"}, "limit": {"type": "integer"}}, ["path"]),
                 file_read, durability="no_effect"),
        ToolSpec("file_read_many", f"Read up to {safe_fs.MAX_READ_MANY} files; each result says ok or why not.",
                 _schema({"paths": {"type": "array", "items": {"type": "string"}, "maxItems": safe_fs.MAX_READ_MANY}},
                         ["paths"]), file_read_many, partial=True, durability="no_effect"),
        ToolSpec("file_list", "List a directory (recursive optional; symlinks are listed, never followed).",
                 _schema({"path": _PATH, "recursive": {"type": "boolean"}}, []), file_list,
                 durability="no_effect"),
        ToolSpec("file_write", "Write a file (atomic replace) or append to it; parent directories are "
                 "created unless create_parents is false.",
                 _schema({"path": _PATH, "content": {"type": "string"}, "append": {"type": "boolean"},
                          "create_parents": {"type": "boolean"}}, ["path", "content"]), _file_write(tally)),
        ToolSpec("file_edit", "Replace text in a file: old must occur exactly once unless replace_all.",
                 _schema({"path": _PATH, "old": {"type": "string"}, "new": {"type": "string"},
                          "replace_all": {"type": "boolean"}}, ["path", "old", "new"]), _file_edit(tally)),
        ToolSpec("grep", "Lines matching a pattern in a file or directory tree.",
                 _schema({"pattern": {"type": "string"}, "path": _PATH, "regex": {"type": "boolean"},
                          "ignore_case": {"type": "boolean"}}, ["pattern"]), grep, durability="no_effect"),
    ]
