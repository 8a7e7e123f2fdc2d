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
- What it keeps in memory is bounded: records are read from the table when a file is looked
  at (a point query on its (device, inode)), not loaded at start, and the last ``CACHE_SIZE``
  answers (a record, or none) are kept; while the table has never held a row, no file is
  looked up at all. The table itself is not swept: a record is found by its inode wherever
  the file has gone (renamed by an agent's own process through a mounted grant, or on the
  host), and a path that no longer exists says nothing about whether the inode still lives
  elsewhere — a sweep by path (tried) let a rename launder the labels. It grows by one row
  per file a tainted context writes outside its workspace, like the audit log; a row goes
  when an untainted context overwrites the file.
- Not seen: what an agent's own process writes directly (``exec``, its program), and a file
  changed on the host behind the kernel's back keeps its record while its inode lives. A new
  file on the inode of a file deleted outside the kernel is labelled (on the safe side).
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from agentix.core.errors import AgentixError
from agentix.core.taint import cap_labels, untrusted_path_match
from agentix.store.db import Database, Txn
from agentix.tools import safe_fs
from agentix.tools.base import ToolContext, ToolSpec

__all__ = ["CACHE_SIZE", "FileTaint", "READS", "WRITES"]

log = logging.getLogger(__name__)

#: how many answers (a file's record, or that it has none) are kept in memory
CACHE_SIZE = 4096

#: the file tools whose results carry file content, and those that write
READS = frozenset({"file_read", "file_read_many", "grep", "file_list"})
WRITES = frozenset({"file_write", "file_edit"})


class FileTaint:
    """The untrusted paths and the records of tainted writes (read per file, cached)."""

    def __init__(self, db: Database, untrusted: tuple[str, ...], table: Any, *,
                 cache_size: int = CACHE_SIZE) -> None:
        self.db = db
        self.untrusted = untrusted
        self.table = table
        self.cache_size = cache_size
        #: (dev, ino) -> its record (labels, path), or None (no record): the last answers, oldest first
        self._cache: OrderedDict[tuple[int, int], tuple[frozenset[str], str] | None] = OrderedDict()
        #: whether the table may hold a row: False until one is written (or found at start), and
        #: then no lookup is made — the common kernel, with no tainted shared file, pays nothing
        self._any = db.reader().execute("SELECT 1 FROM file_taint LIMIT 1").fetchone() is not None

    def record(self, key: tuple[int, int]) -> tuple[frozenset[str], str] | None:
        """The record of the file ``key`` (device, inode): its labels and the path it was
        written at; None if none."""
        if not self._any:
            return None
        try:
            self._cache.move_to_end(key)
            return self._cache[key]
        except KeyError:
            pass
        row = self.db.reader().execute(
            "SELECT labels, path FROM file_taint WHERE dev = ? AND ino = ?", key).fetchone()
        rec = (frozenset(cap_labels(json.loads(row[0]))), row[1]) if row is not None else None
        self._remember(key, rec)
        return rec

    def _remember(self, key: tuple[int, int], rec: tuple[frozenset[str], str] | None) -> None:
        self._cache[key] = rec
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def labels_for(self, seen: list[safe_fs.Seen]) -> set[str]:
        """The labels reading the files in ``seen`` puts on a context."""
        out: set[str] = set()
        for s in seen:
            if s.kind not in ("read", "list"):
                continue
            rec = self.record(s.key)
            if rec is not None or untrusted_path_match(self.untrusted, s.path):
                # a listed name: one label for its directory (a listing may name thousands)
                out.add(f"untrusted_file:{s.path if s.kind == 'read' else posixpath.dirname(s.path)}")
                out |= rec[0] if rec is not None else set()
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
            rec = (self.record(s.old) if s.old is not None else None) or self.record(s.key)
            had = rec[0] if rec is not None else frozenset()
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

        self._any = self._any or any(labels for *_, labels in changes)
        try:
            await self.db.write(op)
        except BaseException:
            # failed, or cancelled while the commit may still land: forget what is cached of these
            # files (a lookup made meanwhile may have cached "no record"), so the next one reads
            # the table as it is
            for old, key, *_ in changes:
                self._cache.pop(key, None)
                if old is not None:
                    self._cache.pop(old, None)
            raise
        for old, key, path, labels in changes:
            if old is not None:
                self._remember(old, None)
            self._remember(key, (labels, path) if labels else None)
