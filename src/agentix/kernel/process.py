"""The process table: one record per agent, kept after the agent exits; agents' logs.

Logs: an agent's stdout and stderr are the write end of a pipe (``LogSink``); the kernel
reads the other end on its event loop and appends to ``logs/<agent_id>.log``. The agent
never holds a kernel file descriptor (it cannot learn the home's path from
``/proc/self/fd`` nor truncate or seek its log). Size is bounded by keeping the newest
output: when the current file reaches half of ``cap`` it becomes ``<agent_id>.log.1``
(replacing the older one) and a new file starts; the bytes dropped so far are kept in
``<agent_id>.log.cut``. So at most ``cap`` (plus two 64 KiB read chunks) is on disk per agent, and
``read_log`` tells a reader when what it asked for was cut.

Back-pressure: if the kernel reads more slowly than the agent writes, the pipe fills and the
agent's writes block until the kernel catches up. If the reader goes away (the kernel
exits), the agent's writes fail with EPIPE; they never block forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentix.core.budget import BudgetLedger
from agentix.core.errors import NotFound
from agentix.core.lifecycle import LIVE_STATES, check_transition
from agentix.core.mailbox import BoundedFifo
from agentix.core.taint import CappedLabels
from agentix.core.manifest import Limits, Manifest
from agentix.kernel.clock import Clock, SystemClock
from agentix.kernel.pipes import PipeReader
from agentix.rpc.server import Notify
from agentix.sandbox.base import Handle

__all__ = ["AgentRecord", "ExitRecord", "LogSink", "ProcessTable", "proc_start_time", "read_log"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


def proc_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); None if gone.

    A pid with the recorded start time is the same process; a reused pid has another.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data.rsplit(b")", 1)[1].split()[19])  # fields after "(comm)" start at 3
    except (IndexError, ValueError):
        return None


class LogSink(PipeReader):
    """Reads one agent's output pipe and appends it to its log, keeping the newest ``cap`` bytes."""

    chunk = _CHUNK

    def __init__(self, path: Path, cap: int) -> None:
        super().__init__()
        self.path, self.cap = path, max(cap, 2 * _CHUNK)
        self._file: int | None = None
        self._size = 0
        self.dropped = _read_cut(path)
        self._warned = False

    def start(self) -> None:
        """Open the log and start reading (before the child starts)."""
        self._open_file()
        super().start()

    def _open_file(self) -> None:
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                             | os.O_NOFOLLOW, 0o600)
        self._size = os.fstat(self._file).st_size

    def take(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            if self._size >= self.cap // 2:
                self._rotate()
            os.write(self._file, data)
            self._size += len(data)
        except OSError as err:  # disk full...: the output is lost, the agent is not blocked
            self.dropped += len(data)
            if not self._warned:
                log.warning("cannot write the log %s: %s; dropping output", self.path, err)
                self._warned = True

    def _rotate(self) -> None:
        old = self.path.with_name(self.path.name + ".1")
        try:
            self.dropped += old.stat().st_size
        except FileNotFoundError:
            pass
        os.replace(self.path, old)
        assert self._file is not None
        os.close(self._file)
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
                             | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self._size = 0
        _write_cut(self.path, self.dropped)

    def close(self) -> None:
        super().close()
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _cut_path(path: Path) -> Path:
    return path.with_name(path.name + ".cut")


def _read_cut(path: Path) -> int:
    try:
        return int(_cut_path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_cut(path: Path, dropped: int) -> None:
    tmp = _cut_path(path).with_suffix(".tmp")
    tmp.write_text(str(dropped))
    os.replace(tmp, _cut_path(path))


def read_log(path: Path, *, offset: int | None = None, tail: int | None = None,
             head: int | None = None, max_bytes: int) -> dict[str, Any]:
    """Read an agent's log as one stream (the older file, then the current one).

    Offsets count every byte the agent wrote, including the ``dropped`` oldest ones that
    the size cap discarded. Choose one of:

    - ``tail``: the last ``tail`` lines (at most ``max_bytes``, the newest);
    - ``head``: the first ``head`` lines still kept (at most ``max_bytes``);
    - ``offset`` (default 0): up to ``max_bytes`` from there on (follow a log with it).

    Returns ``data`` (bytes), ``start``/``offset`` (stream offsets of the first byte and just
    past the last), ``size`` (bytes written so far), ``dropped``, ``more`` (output after
    ``offset`` exists) and ``cut``: True when output that the request covered is not in the
    answer — for ``tail``, anything before ``start``; for ``head``, dropped output or
    anything after ``offset``; for ``offset``, the part of the request that was dropped.
    """
    parts: list[bytes] = []
    for p in (path.with_name(path.name + ".1"), path):
        try:
            with open(p, "rb") as f:
                parts.append(f.read())  # bounded: both files together hold at most the cap
        except FileNotFoundError:
            pass
    data = b"".join(parts)
    dropped = _read_cut(path)
    size = dropped + len(data)
    if tail is not None:
        chosen = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
        chosen = chosen[-max_bytes:] if max_bytes > 0 else b""
        start = size - len(chosen)
        cut = start > 0
    elif head is not None:
        chosen = b"".join(data.splitlines(keepends=True)[:head]) if head > 0 else b""
        chosen = chosen[:max_bytes]
        start = dropped
        cut = dropped > 0 or start + len(chosen) < size
    else:
        want = max(offset or 0, 0)
        start = max(want, dropped)
        chosen = data[start - dropped:start - dropped + max_bytes] if start < size else b""
        start = min(start, size)
        cut = want < dropped
    end = start + len(chosen)
    return {"data": chosen, "start": start, "offset": end, "size": size, "dropped": dropped,
            "more": end < size, "cut": cut}


@dataclass(frozen=True)
class ExitRecord:
    code: int | None
    signal: int | None
    reason: str
    detail: str = ""
    at: float = 0.0

    def to_data(self) -> dict[str, Any]:
        return {"code": self.code, "signal": self.signal, "reason": self.reason,
                "detail": self.detail, "at": self.at}


@dataclass
class AgentRecord:
    agent_id: str
    name: str
    manifest: Manifest
    parent: str | None
    depth: int
    root: str
    workspace: Path
    log_path: Path
    limits: Limits
    created_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    state: str = "spawning"
    pid: int | None = None
    handle: Handle | None = None
    children: list[str] = field(default_factory=list)
    exit: ExitRecord | None = None
    result: Any = None
    requested_reason: str | None = None
    requested_detail: str = ""
    taint: CappedLabels = field(default_factory=CappedLabels)  # at most MAX_LABELS (core.taint)
    isolation: dict[str, Any] = field(default_factory=dict)
    mailbox: BoundedFifo[dict[str, Any]] = field(default_factory=lambda: BoundedFifo(1000))
    mail_event: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # the spawn committed or unwound
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    syscalls: int = 0
    budget: BudgetLedger | None = None
    ended_mono: float | None = None
    last_stats: dict[str, Any] = field(default_factory=dict)  # resources sampled at exit
    notify: Notify | None = None  # the agent's channel's notifications, once it is served
    log_sink: LogSink | None = None   # reads the agent's output pipe while it runs
    restored: bool = False            # a record of an earlier kernel run (from the store)
    #: the kernel's clock (spawn gives it, with ``created_at`` and ``started_mono`` read from it)
    clock: Clock = field(default_factory=SystemClock)

    @property
    def live(self) -> bool:
        """Its process may still run: a live state and no exit seen. Once the reaper has seen
        the exit the agent is no longer live (nothing signals, pauses or delivers to it) but
        not yet ``exited`` either: that state, and ``exited`` the event, are set together once
        its exit is accounted for (``kernel/reap.py``)."""
        return self.state in LIVE_STATES and self.exit is None

    def set_state(self, new: str) -> None:
        check_transition(self.state, new, self.agent_id)
        self.state = new

    def runtime(self) -> float:
        end = self.ended_mono if self.ended_mono is not None else self.clock.monotonic()
        return end - self.started_mono

    def summary(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "name": self.name,
            "state": self.state,
            "parent": self.parent,
            "pid": self.pid,
            "depth": self.depth,
            "children": list(self.children),
            "created_at": self.created_at,
            "runtime_s": round(self.runtime(), 3),
            "exit": self.exit.to_data() if self.exit else None,
            "program": self.manifest.program,
            "syscalls": self.syscalls,
        }


class ProcessTable:
    """Agents by id, and the live ones by name (names are released when an agent exits)."""

    def __init__(self) -> None:
        self._by_id: dict[str, AgentRecord] = {}
        self._live_names: dict[str, str] = {}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def live_count(self) -> int:
        return sum(1 for r in self._by_id.values() if r.live)

    def add(self, rec: AgentRecord) -> None:
        self._by_id[rec.agent_id] = rec
        self._live_names[rec.name] = rec.agent_id

    def restore(self, rec: AgentRecord) -> None:
        """An exited agent of an earlier run (listed, never live: its name is free)."""
        self._by_id[rec.agent_id] = rec
        parent = self._by_id.get(rec.parent) if rec.parent else None
        if parent is not None and rec.agent_id not in parent.children:
            parent.children.append(rec.agent_id)
            rec.depth, rec.root = parent.depth + 1, parent.root

    def discard(self, agent_id: str) -> None:
        rec = self._by_id.pop(agent_id, None)
        if rec is not None and self._live_names.get(rec.name) == agent_id:
            del self._live_names[rec.name]

    def release_name(self, rec: AgentRecord) -> None:
        if self._live_names.get(rec.name) == rec.agent_id:
            del self._live_names[rec.name]

    def unique_name(self, base: str) -> str:
        if base not in self._live_names:
            return base
        n = 2
        while f"{base}-{n}" in self._live_names:
            n += 1
        return f"{base}-{n}"

    def get(self, agent_id: str) -> AgentRecord:
        rec = self._by_id.get(agent_id)
        if rec is None:
            raise NotFound(f"no agent with id {agent_id!r}; `agentix ps --all` lists them", agent_id=agent_id)
        return rec

    def find(self, ref: str) -> AgentRecord:
        """By id, or by name: the live agent of that name, else the latest that had it."""
        rec = self._by_id.get(ref)
        if rec is not None:
            return rec
        aid = self._live_names.get(ref)
        if aid is not None:
            return self._by_id[aid]
        named = [r for r in self._by_id.values() if r.name == ref]
        if named:
            return max(named, key=lambda r: r.created_at)
        raise NotFound(f"no agent with id or name {ref!r}; `agentix ps --all` lists them", agent=ref)

    def find_live(self, ref: str) -> AgentRecord:
        rec = self.find(ref)
        if not rec.live:
            raise NotFound(f"agent {ref} has exited ({rec.exit.reason if rec.exit else 'exited'})", agent=ref)
        return rec

    def subtree(self, agent_id: str) -> list[AgentRecord]:
        out: list[AgentRecord] = []
        stack = [agent_id]
        while stack:
            rec = self._by_id.get(stack.pop())
            if rec is None:
                continue
            out.append(rec)
            stack.extend(rec.children)
        return out
