"""Taint through files: ``untrusted_file`` labels for configured paths and for files a
tainted context wrote (docs/security.md "Taint").

Rules:

- The file tools run inside ``safe_fs.observed()``, which lists each file whose *content*
  they read (``file_read``, ``file_read_many``, ``grep``, and ``file_edit``, whose answer and
  errors tell of the content), each file whose *name* a ``file_list`` returned (a name is
  text its writer chose), and each file they wrote, by (st_dev, st_ino) and host path.
- A reply that carries data from a labelled source carries its labels, errors included: a
  listing labels ``untrusted_file:<the listed entry's directory>`` (one label per directory,
  not per name) when an entry lies under ``untrusted_paths`` or has a record here.
- A file read labels the acting context ``untrusted_file:<host path>`` when the path lies
  under ``[taint] untrusted_paths`` or the file has a record here; a record adds the labels
  of the context that wrote it. The labels go on the call and the agent like ``web_fetch``'s
  ``fetched_url``, and on an error raised after the read (``AgentixError.taint``).
- A ``file_write``/``file_edit`` outside the caller's own workspace by a context carrying
  labels records the file (device, inode -> labels) in the kernel's database through its one
  writer (table ``file_taint``); an append or an edit keeps the labels the file had; a
  complete overwrite by an untainted context drops the record. A replace makes a new inode:
  the record moves to it. A record keeps at most ``MAX_LABELS`` labels (``core.taint.
  cap_labels``: every source survives).
- Not seen: what an agent's own process writes directly (``exec``, its program), and a file
  changed on the host behind the kernel's back keeps its record while its inode lives; a record
  outlives a file deleted outside the kernel (a new file on the reused inode is labelled: on
  the safe side).
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import replace
from typing import Any

from agentix.core.errors import AgentixError
from agentix.core.taint import cap_labels, untrusted_path_match
from agentix.store.db import Database, Txn
from agentix.tools import safe_fs
from agentix.tools.base import ToolContext, ToolSpec

__all__ = ["FileTaint", "READS", "WRITES"]

#: the file tools whose results carry file content, and those that write
READS = frozenset({"file_read", "file_read_many", "grep", "file_list"})
WRITES = frozenset({"file_write", "file_edit"})


class FileTaint:
    """The untrusted paths and the records of tainted writes (loaded at start, kept in step)."""

    def __init__(self, db: Database, untrusted: tuple[str, ...], table: Any) -> None:
        self.db = db
        self.untrusted = untrusted
        self.table = table
        self.records: dict[tuple[int, int], frozenset[str]] = {
            (dev, ino): frozenset(cap_labels(json.loads(labels)))
            for dev, ino, labels in db.reader().execute("SELECT dev, ino, labels FROM file_taint")
        }

    def labels_for(self, seen: list[safe_fs.Seen]) -> set[str]:
        """The labels reading the files in ``seen`` puts on a context."""
        out: set[str] = set()
        for s in seen:
            if s.kind not in ("read", "list"):
                continue
            rec = self.records.get(s.key)
            if rec is not None or untrusted_path_match(self.untrusted, s.path):
                # a listed name: one label for its directory (a listing may name thousands)
                out.add(f"untrusted_file:{s.path if s.kind == 'read' else posixpath.dirname(s.path)}")
                out |= rec or set()
        return out

    def wrap(self, spec: ToolSpec) -> ToolSpec:
        if spec.name not in READS | WRITES:
            return spec
        inner = spec.handler

        async def handler(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
            writer = self._context_labels(ctx)
            with safe_fs.observed() as seen:
                try:
                    result = await inner(ctx, args)
                except AgentixError as err:
                    labels = self.labels_for(seen)
                    self._label(ctx, labels)
                    if labels:
                        raise err.tainted(*sorted({*getattr(err, "taint", ()), *labels})) from None
                    raise
            self._label(ctx, self.labels_for(seen))
            await self._record(ctx, writer, seen)
            return result

        return replace(spec, handler=handler)

    def _context_labels(self, ctx: ToolContext) -> set[str]:
        labels = set(ctx.call.taint)
        if ctx.agent_id is not None:
            labels |= set(self.table.get(ctx.agent_id).taint)
        return labels

    def _label(self, ctx: ToolContext, labels: set[str]) -> None:
        if not labels:
            return
        if ctx.agent_id is not None:
            self.table.get(ctx.agent_id).taint.update(labels)
        ctx.call.taint.update(labels)

    async def _record(self, ctx: ToolContext, writer: set[str], seen: list[safe_fs.Seen]) -> None:
        ws = str(ctx.workspace) if ctx.workspace is not None else None
        changes: list[tuple[tuple[int, int] | None, tuple[int, int], str, frozenset[str]]] = []
        for s in seen:
            if s.kind in ("read", "list") or (ws is not None and (s.path == ws or s.path.startswith(ws + "/"))):
                continue
            had = self.records.get(s.old) if s.old is not None else None
            had = had or self.records.get(s.key) or frozenset()
            if s.kind == "write":  # a complete overwrite: the file holds only what this context wrote
                labels = frozenset(cap_labels(writer))
            else:  # append, edit: what it held stays (capped: every source survives)
                labels = frozenset(cap_labels(had | frozenset(writer)))
            if labels != had or (s.old is not None and s.old != s.key and had):
                changes.append((s.old if s.old != s.key else None, s.key, s.path, labels))
        if not changes:
            return

        def op(txn: Txn) -> None:
            now = time.time()
            for old, key, path, labels in changes:
                if old is not None:
                    txn.conn.execute("DELETE FROM file_taint WHERE dev = ? AND ino = ?", old)
                if labels:
                    txn.conn.execute(
                        "INSERT OR REPLACE INTO file_taint (dev, ino, path, labels, updated_at) "
                        "VALUES (?, ?, ?, ?, ?)", (*key, path, json.dumps(sorted(labels)), now))
                else:
                    txn.conn.execute("DELETE FROM file_taint WHERE dev = ? AND ino = ?", key)

        await self.db.write(op)
        for old, key, _path, labels in changes:
            if old is not None:
                self.records.pop(old, None)
            if labels:
                self.records[key] = labels
            else:
                self.records.pop(key, None)
