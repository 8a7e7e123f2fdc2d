"""The kernel's minimal event record: an in-memory ring plus an append-only JSONL file.

This is the event sink the pipeline writes to until the tamper-evident audit log
(store/audit.py) replaces it behind the same ``record`` method.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

__all__ = ["EventLog"]


class EventLog:
    def __init__(self, path: Path | None, keep: int = 10_000) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=keep)
        self._file = open(path, "ab") if path is not None else None
        self._seq = 0
        self._waiters: set[asyncio.Event] = set()
        self._flush_scheduled = False

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._file is not None:
            self._file.flush()

    async def record(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        self._seq += 1
        entry = {"seq": self._seq, "ts": time.time(), "agent": agent_id, "kind": kind,
                 "data": data, "taint": list(taint)}
        self._ring.append(entry)
        if self._file is not None:
            self._file.write(orjson.dumps(entry) + b"\n")
            if not self._flush_scheduled:
                # one write(2) per loop iteration, not one per event (the hot path records two)
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        for ev in self._waiters:
            ev.set()
        return entry

    def tail(self, after: int = 0, agent: str | None = None, kind: str | None = None,
             limit: int = 1000) -> list[dict[str, Any]]:
        out = [e for e in self._ring if e["seq"] > after
               and (agent is None or e["agent"] == agent)
               and (kind is None or e["kind"] == kind or e["kind"].startswith(kind + "."))]
        return out[-limit:]

    async def wait_for_new(self, timeout: float) -> None:
        ev = asyncio.Event()
        self._waiters.add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiters.discard(ev)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
