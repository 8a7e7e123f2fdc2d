"""What this store knows a remote registry holds: a local record of pushed blobs.

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
session, or refused, and the blob is uploaded the ordinary way. A lost or corrupt record
costs a HEAD per blob, nothing else: it is written without fsync, and last writer wins.

``registry/pushed/<sha256 of the host>.json``:
``{"host": HOST, "blobs": {DIGEST: [REPOSITORY, ...]}}`` (most recent repository last; at
most ``MAX_REPOS`` per blob and ``MAX_BLOBS`` blobs, the oldest dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from agentix.core.refs import DIGEST_RE

__all__ = ["PushRecord", "MAX_BLOBS", "MAX_REPOS"]

MAX_BLOBS = 4096
MAX_REPOS = 8
MAX_FILE = 4 << 20


class PushRecord:
    """The blobs one registry host is known to hold, by repository (a cache; see above)."""

    def __init__(self, root: Path, host: str) -> None:
        self.host = host
        self.path = root / f"{hashlib.sha256(host.encode()).hexdigest()[:32]}.json"
        self.blobs: dict[str, list[str]] = self._load()
        self.changed = False

    def _load(self) -> dict[str, list[str]]:
        try:
            with open(self.path, "rb") as f:
                data: Any = json.loads(f.read(MAX_FILE + 1))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("host") != self.host or not isinstance(data.get("blobs"), dict):
            return {}
        out: dict[str, list[str]] = {}
        for digest, repos in data["blobs"].items():
            if isinstance(digest, str) and DIGEST_RE.match(digest) and isinstance(repos, list):
                kept = [r for r in repos if isinstance(r, str) and r][-MAX_REPOS:]
                if kept:
                    out[digest] = kept
        return out

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
        for d in digests:
            if self.blobs.get(d, [None])[-1] == repo:
                continue  # already the newest
            repos = [r for r in self.blobs.pop(d, []) if r != repo]  # re-inserted: now the newest
            self.blobs[d] = (repos + [repo])[-MAX_REPOS:]
            self.changed = True
        while len(self.blobs) > MAX_BLOBS:
            del self.blobs[next(iter(self.blobs))]

    def forget(self, digests: list[str], repo: str) -> None:
        for d in digests:
            if not self.has(d, repo):
                continue
            self.changed = True
            repos = [r for r in self.blobs.get(d, []) if r != repo]
            if repos:
                self.blobs[d] = repos
            else:
                self.blobs.pop(d, None)

    def save(self) -> None:
        """Write the record if it changed (no fsync: a lost record costs a HEAD per blob)."""
        if not self.changed:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps({"host": self.host, "blobs": self.blobs}, separators=(",", ":")).encode())
            os.replace(tmp, self.path)
            self.changed = False
        finally:
            tmp.unlink(missing_ok=True)
