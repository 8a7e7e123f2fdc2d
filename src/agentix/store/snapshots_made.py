"""The snapshots this kernel wrote itself: table ``snapshots_made`` (migration v10).

A snapshot records the grants its agent held. When this kernel wrote it, those grants were
held by one of its own agents, so a restore may mint them again unasked; a snapshot from
anywhere else (pulled) only *says* what its agent held, and its restore must be told which
grants to give (kernel/snapshots_api.py). One row per manifest digest, written through the
store's one writer when ``snapshot.create`` stores the snapshot, before it is tagged.

An older agentix kept this as an empty file per snapshot, ``registry/made/<hex>``. Those are
imported once, at the first start after migration v10 (``import_old``; the pattern of
``store/side_files.py``), and removed; a file put there afterwards is never read.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from agentix.store import side_files
from agentix.store.db import Database, Txn

__all__ = ["mark", "made", "import_old", "IMPORT"]

#: the one-time import's name (the row migration v10 writes in ``imports_due``)
IMPORT = "registry/made"
_HEX = re.compile(r"[0-9a-f]{64}")
MAX_OLD_FILES = 1 << 16


async def mark(db: Database, digest: str) -> None:
    """Record that this kernel wrote the snapshot ``digest`` (a checked ``sha256:<hex>``)."""
    await db.write(lambda t: _insert(t, [digest]))


def made(db: Database, digest: str) -> bool:
    return db.reader().execute("SELECT 1 FROM snapshots_made WHERE digest=?", (digest,)).fetchone() is not None


def _insert(t: Txn, digests: list[str]) -> None:
    t.conn.executemany("INSERT OR IGNORE INTO snapshots_made (digest) VALUES (?)", [(d,) for d in digests])


def import_old(db: Database, directory: Path) -> int:
    """Import the files an older agentix wrote under ``directory`` (``registry/made``), once:
    only while migration v10's row says the import is due. Each regular file named by 64 hex
    digits is a snapshot that kernel made; anything else there is ignored. The rows and the
    end of the import are one transaction; then the files go. Returns the number imported."""
    if not side_files.due(db, IMPORT):
        return 0
    files = _old_files(directory)
    digests = sorted("sha256:" + f.name for f in files)

    def op(t: Txn) -> None:
        _insert(t, digests)
        side_files.done_in(t, IMPORT)

    db.submit(op).result()
    side_files.retire(files, directory)
    return len(digests)


def _old_files(directory: Path) -> list[Path]:
    """The regular files named by 64 hex digits directly in ``directory`` (at most
    ``MAX_OLD_FILES``; none if there is no such directory)."""
    try:
        with os.scandir(directory) as it:
            found = (Path(e.path) for e in it if _HEX.fullmatch(e.name) and e.is_file(follow_symlinks=False))
            return list(itertools.islice(found, MAX_OLD_FILES))
    except (FileNotFoundError, NotADirectoryError):
        return []
