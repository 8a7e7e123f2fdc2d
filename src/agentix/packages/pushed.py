"""What this store knows a remote registry holds: a record of pushed blobs, in ``agentix.db``.

After a registry accepted a manifest in a repository, every blob that manifest names is in
that repository (the registry checks: distribution answers ``MANIFEST_BLOB_UNKNOWN``
otherwise). ``push`` records that here, per registry host, so the next push can

* skip a blob the record says the same repository has (no HEAD, no upload), and
* mount a blob the record says another repository of the same registry has
  (``POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER``: no bytes sent).

The record is a cache, never a source of truth: a registry that lost a blob (garbage
collection, a wiped volume) refuses the manifest with ``MANIFEST_BLOB_UNKNOWN`` and the push
forgets what it assumed and uploads (``PackageStore.push``); a mount the registry cannot do
(no such blob there, or credentials that cannot read ``from``) is answered with an upload
session, or refused, and the blob is uploaded the ordinary way. A lost record costs a HEAD
per blob, nothing else.

Table ``pushed_blobs`` (migration v8; DESIGN.md §9: one database, no side files): one row
per (host, blob digest, repository), ``seq`` ordering them, most recently written last; at
most ``MAX_REPOS`` repositories per blob and ``MAX_BLOBS`` blobs per host, the oldest
dropped. A push reads its host's record once and writes the blobs it changed in one
transaction through the store's one writer. The file an older agentix kept per host
(``registry/pushed/<sha256 of the host>.json``: ``{"host": HOST, "blobs": {DIGEST:
[REPOSITORY, ...]}}``) is imported at the first push to that host, then removed
(``store/side_files.py``: the pattern every such import follows).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentix.core.refs import DIGEST_RE
from agentix.store.side_files import retire

if TYPE_CHECKING:
    from agentix.store.db import Database, Txn

__all__ = ["PushRecord", "MAX_BLOBS", "MAX_REPOS"]

MAX_BLOBS = 4096
MAX_REPOS = 8
MAX_FILE = 4 << 20


class PushRecord:
    """The blobs one registry host is known to hold, by repository (a cache; see above)."""

    def __init__(self, db: Database, host: str, legacy_root: Path | None = None) -> None:
        """``legacy_root``: the directory an older agentix kept the record files in
        (``registry/pushed``); this host's file there is imported, and removed at ``save``."""
        self.db = db
        self.host = host
        self.blobs: dict[str, list[str]] = {}
        self._dirty: set[str] = set()   # digests whose repositories changed since the load
        for digest, repo in db.reader().execute(
                "SELECT digest, repo FROM pushed_blobs WHERE host=? ORDER BY seq", (host,)):
            self.blobs[digest] = [*self.blobs.pop(digest, []), repo]  # re-inserted: newest last
        self._legacy: Path | None = None
        if legacy_root is not None:
            path = legacy_root / f"{hashlib.sha256(host.encode()).hexdigest()[:32]}.json"
            if path.exists():
                self._legacy = path
                for digest, repos in _read_legacy(path, host).items():
                    for r in repos:  # oldest first
                        self._put(digest, r)
                self._bound()

    @property
    def changed(self) -> bool:
        return bool(self._dirty) or self._legacy is not None

    def has(self, digest: str, repo: str) -> bool:
        """The record says ``repo`` on this registry holds ``digest``."""
        return repo in self.blobs.get(digest, ())

    def source(self, digest: str, repo: str) -> str | None:
        """Another repository on this registry recorded as holding ``digest`` (the most
        recent one), to mount it from; None if none is known."""
        for other in reversed(self.blobs.get(digest, ())):
            if other != repo:
                return other
        return None

    def add(self, digests: list[str], repo: str) -> None:
        """Record that ``repo`` holds each of ``digests`` (now the newest of each)."""
        for d in digests:
            self._put(d, repo)
        self._bound()

    def _put(self, d: str, repo: str) -> None:
        if self.blobs.get(d, [None])[-1] == repo:
            return  # already the newest
        repos = [x for x in self.blobs.pop(d, []) if x != repo]  # re-inserted: now the newest
        self.blobs[d] = (repos + [repo])[-MAX_REPOS:]
        self._dirty.add(d)

    def _bound(self) -> None:
        while len(self.blobs) > MAX_BLOBS:
            oldest = next(iter(self.blobs))
            del self.blobs[oldest]
            self._dirty.add(oldest)

    def forget(self, digests: list[str], repo: str) -> None:
        for d in digests:
            if not self.has(d, repo):
                continue
            self._dirty.add(d)
            repos = [r for r in self.blobs.get(d, []) if r != repo]
            if repos:
                self.blobs[d] = repos
            else:
                self.blobs.pop(d, None)

    def save(self) -> None:
        """Write the blobs that changed (one transaction, the store's one writer): their rows
        are replaced by what the record says now, after every row already there; the host's
        oldest blobs past ``MAX_BLOBS`` go. Then an imported old file is removed."""
        if not self.changed:
            return
        dirty = [d for d in self.blobs if d in self._dirty]  # in the record's order, oldest first
        gone = [d for d in self._dirty if d not in self.blobs]
        rows = [(d, r) for d in dirty for r in self.blobs[d]]
        host = self.host

        def op(t: Txn) -> None:
            c = t.conn
            for d in [*dirty, *gone]:
                c.execute("DELETE FROM pushed_blobs WHERE host=? AND digest=?", (host, d))
            top = c.execute("SELECT coalesce(max(seq), 0) FROM pushed_blobs WHERE host=?", (host,)).fetchone()[0]
            c.executemany("INSERT INTO pushed_blobs (host, digest, repo, seq) VALUES (?,?,?,?)",
                          [(host, d, r, top + 1 + i) for i, (d, r) in enumerate(rows)])
            # another writer of this host's record (a concurrent push) may have added blobs:
            # the bound holds for the table, whoever wrote last
            over = c.execute("SELECT count(DISTINCT digest) FROM pushed_blobs WHERE host=?",
                             (host,)).fetchone()[0] - MAX_BLOBS
            if over > 0:
                c.execute("DELETE FROM pushed_blobs WHERE host=? AND digest IN (SELECT digest FROM pushed_blobs "
                          "WHERE host=? GROUP BY digest ORDER BY max(seq) LIMIT ?)", (host, host, over))

        self.db.submit(op).result()
        self._dirty.clear()
        if self._legacy is not None:  # durable: the old file goes, and its directory once empty
            retire([self._legacy], self._legacy.parent)
            self._legacy = None


def _read_legacy(path: Path, host: str) -> dict[str, list[str]]:
    """An older agentix's record file for ``host`` (untrusted shape: anything malformed is
    skipped; a corrupt or foreign file is an empty record)."""
    try:
        with open(path, "rb") as f:
            data: Any = json.loads(f.read(MAX_FILE + 1))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("host") != host or not isinstance(data.get("blobs"), dict):
        return {}
    out: dict[str, list[str]] = {}
    for digest, repos in data["blobs"].items():
        if isinstance(digest, str) and DIGEST_RE.match(digest) and isinstance(repos, list):
            kept = [r for r in repos if isinstance(r, str) and r][-MAX_REPOS:]
            if kept:
                out[digest] = kept
    return out
