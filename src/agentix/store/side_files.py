"""Side files an older agentix kept under ``$AGENTIX_HOME``, imported into ``agentix.db``
(DESIGN.md §9: one database behind one writer, no side files).

Every import follows one pattern: read the old files (their shape is untrusted: anything
malformed is skipped), write what they said through the store's one writer, and only once
that is durable remove them — ``retire`` — and their directory when it is left empty. A
crash between the two imports the same files again at the next start, which the writes
make harmless (they merge, never replace what the store says).

An import whose files must mean nothing afterwards (``registry/made/``: a file there said
"this kernel made that snapshot, trust its grants") happens once: the migration that made
its table also writes a row ``NAME`` in ``imports_due`` that says the import is ``due``;
the import clears it (``done_in``) in the same transaction that writes the imported rows,
so a file planted there later is never read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from agentix.store.db import Database, Txn

__all__ = ["retire", "due", "done_in"]

def retire(files: Iterable[Path], directory: Path | None = None) -> None:
    """Remove side files whose content is now durable in the store; then ``directory`` (the
    one they were kept in), if that left it empty."""
    for f in files:
        f.unlink(missing_ok=True)
    if directory is not None:
        with contextlib.suppress(OSError):
            directory.rmdir()


def due(db: Database, name: str) -> bool:
    """The one-time import ``name`` has not run yet (its migration's row is still there)."""
    return db.reader().execute("SELECT 1 FROM imports_due WHERE name=?", (name,)).fetchone() is not None


def done_in(txn: Txn, name: str) -> None:
    """Mark the one-time import ``name`` as done, in the transaction that wrote its rows."""
    txn.conn.execute("DELETE FROM imports_due WHERE name=?", (name,))
