"""The process table: one record per agent, kept after the agent exits."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentix.core.errors import NotFound
from agentix.core.lifecycle import LIVE_STATES, check_transition
from agentix.core.mailbox import BoundedFifo
from agentix.core.manifest import Limits, Manifest
from agentix.sandbox.base import Handle

__all__ = ["AgentRecord", "ExitRecord", "ProcessTable"]


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
    taint: set[str] = field(default_factory=set)
    isolation: dict[str, Any] = field(default_factory=dict)
    mailbox: BoundedFifo[dict[str, Any]] = field(default_factory=lambda: BoundedFifo(1000))
    mail_event: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    syscalls: int = 0
    budget: Any = None           # agentix.core.budget.BudgetLedger
    ended_mono: float | None = None
    last_stats: dict[str, Any] = field(default_factory=dict)  # resources sampled at exit

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def set_state(self, new: str) -> None:
        check_transition(self.state, new, self.agent_id)
        self.state = new

    def runtime(self) -> float:
        end = self.ended_mono if self.ended_mono is not None else time.monotonic()
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
