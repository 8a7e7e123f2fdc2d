"""What restores of each snapshot were given: table ``snapshot_given`` (migration v8).

A snapshot records, per grant group, the invocations its agent had left. Restoring it hands
those out; restoring it again must not hand them out again (``core/snapshot_rules.py``: ``ration``).
One row per (snapshot digest, group index): ``given``, the invocations restores of that
snapshot were given so far. ``take`` reads and raises it in one transaction of the store's
one writer, so two restores of one snapshot can never both take the same invocations;
``give_back`` returns what a restore that then failed had taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentix.store.db import Database, Txn

__all__ = ["take", "give_back"]


async def take(db: Database, digest: str, wanted: Mapping[int, int], *, reissue: bool = False) -> dict[int, int]:
    """For each group ``i`` of snapshot ``digest`` that asks for ``wanted[i]`` invocations (what
    the snapshot recorded), how many this restore gets: what is left of ``wanted[i]`` after
    earlier restores, or, with ``reissue`` (the operator's explicit choice), ``wanted[i]``
    again. Recorded as given before it returns."""
    if not wanted:
        return {}

    def op(t: Txn) -> dict[int, int]:
        out: dict[int, int] = {}
        for i, n in sorted(wanted.items()):
            row = t.conn.execute("SELECT given FROM snapshot_given WHERE digest=? AND grp=?", (digest, i)).fetchone()
            prior = int(row[0]) if row else 0
            out[i] = n if reissue else max(0, n - prior)
            t.conn.execute("INSERT INTO snapshot_given (digest, grp, given) VALUES (?,?,?) ON CONFLICT(digest, grp) "
                           "DO UPDATE SET given = excluded.given", (digest, i, prior + out[i]))
        return out

    return await db.write(op)


async def give_back(db: Database, digest: str, taken: Mapping[int, int]) -> None:
    """Undo ``take`` for a restore that failed before its agent started."""
    def op(t: Txn) -> Any:
        for i, n in taken.items():
            if n > 0:
                t.conn.execute("UPDATE snapshot_given SET given = max(0, given - ?) WHERE digest=? AND grp=?",
                               (n, digest, i))

    await db.write(op)
