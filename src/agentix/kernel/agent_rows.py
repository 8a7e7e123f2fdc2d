"""An agent's row in the durable store: written at spawn and exit, read back at start.

The rows let a kernel restart account for every agent: the exited ones of earlier runs are
put back in the process table (``ps -a``, ``inspect``), and the process groups a dead kernel
left running are killed (``kill_leftovers``), identified by pid *and* start time.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import datetime, timezone
from typing import Any

from agentix.core.errors import AgentixError, NotFound
from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.process import AgentRecord, ExitRecord, ProcessTable, proc_start_time
from agentix.store.db import Database
from agentix.store.state import AgentStore, StoredAgent

__all__ = ["AgentRows", "kill_leftovers"]

log = logging.getLogger(__name__)


class AgentRows:
    """The agents table of the kernel's store (``db=None``: a kernel without a store, in tests)."""

    def __init__(self, db: Database | None, home: Home, config: KernelConfig) -> None:
        self.db = db
        self.home = home
        self.config = config

    async def persist_spawn(self, rec: AgentRecord) -> None:
        """The agent's record in the durable store, so a kernel restart can account for it."""
        if self.db is None:
            return
        await AgentStore(self.db).upsert(StoredAgent(
            id=rec.agent_id, name=rec.name, parent=rec.parent, manifest=rec.manifest.to_data(),
            state="running", persistent=rec.manifest.lifecycle == "persistent",
            created_at=_iso(rec.created_at), pid=rec.pid, pgid=rec.pid,
            start_time=proc_start_time(rec.pid) if rec.pid else None))

    async def persist_exit(self, rec: AgentRecord) -> None:
        if self.db is None or rec.exit is None:
            return
        try:
            await AgentStore(self.db).mark_exited(
                rec.agent_id, rec.exit.reason, rec.exit.to_data(), _iso(rec.exit.at))
        except AgentixError as err:  # never recorded (e.g. the store was closed first)
            log.warning("could not record the exit of %s: %s", rec.agent_id, err.message)

    def restore(self, table: ProcessTable, keep: int = 10_000) -> None:
        """Put the store's agents of earlier runs in the table (exited), for ``ps -a`` and ``inspect``."""
        if self.db is None:
            return
        for a in AgentStore(self.db).list()[-keep:]:
            if a.state != "exited":
                continue
            try:
                table.get(a.id)
                continue
            except NotFound:
                pass
            try:
                manifest = parse_manifest(a.manifest)
            except Exception:  # noqa: BLE001 - an old or foreign record must not stop the start
                log.warning("agent record %s has a manifest this kernel cannot read; not listed", a.id)
                continue
            ex = a.exit_record or {}
            at = _ts(a.exited_at)
            rec = AgentRecord(
                agent_id=a.id, name=a.name, manifest=manifest, parent=a.parent, depth=0,
                root=a.id, workspace=self.home.workspaces / a.id,
                log_path=self.home.logs / f"{a.id}.log",
                limits=self.config.effective_limits(manifest.limits),
                created_at=_ts(a.created_at) or 0.0, state="exited", pid=a.pid, restored=True,
                exit=ExitRecord(code=ex.get("code"), signal=ex.get("signal"),
                                reason=a.exit_reason or str(ex.get("reason") or "unknown"),
                                detail=str(ex.get("detail") or ""), at=at or 0.0))
            rec.ended_mono = rec.started_mono
            rec.settled.set()
            rec.exited.set()
            table.restore(rec)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def kill_leftovers(left: list[Any]) -> None:
    """Kill process groups a dead kernel left behind (bwrap dies with its kernel; this is the
    second line). A leftover is the recorded pid with the recorded start time (/proc/<pid>/stat
    field 22), never a command line: a reused pid has another start time and is left alone, and
    a record without a start time is not acted on (its cgroup is still swept at start)."""
    for a in left:
        if not a.pid or a.start_time is None:
            continue
        if proc_start_time(a.pid) != a.start_time:
            continue  # gone, or the pid now belongs to another process
        try:
            if a.pgid and os.getpgid(a.pid) == a.pgid:
                os.killpg(a.pgid, signal.SIGKILL)
            else:
                os.kill(a.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
