"""Benchmark: where one durable audit record's time goes, beside the fsync floor.

Starts: no kernel. A real ``Database`` (SQLite WAL, ``synchronous=FULL``, the group-commit
writer thread) and ``AuditLog`` in a throwaway directory under /tmp, and one coroutine on an
asyncio loop that appends ``tool.invoked`` records one at a time and awaits each, as an
effect call's intent and outcome records are awaited. Each append is split with
``perf_counter_ns`` stamps into:

* ``handoff``: ``Database.write`` called -> the operation starts in the writer thread;
* ``op``: the operation (seq, timestamp, hash chain, Merkle nodes) and the inserts;
* ``commit``: COMMIT, i.e. the WAL frames written and fsynced;
* ``wakeup``: COMMIT returned -> the awaiting coroutine runs again;

and, interleaved with the appends (one each), a bare ``fdatasync`` of a 100-byte write in
the same directory (the floor, as in floors.py). The first ``--skip`` appends are left out
of the figures unless ``--fresh``: they are the ones that still grow a new WAL
(store/db.py, "The WAL is rewritten in place"). ``--old`` turns off the background
checkpointer (the store as it was before it), for alternating comparisons.

    python bench/durable.py [--records 2000] [--skip 300] [--old] [--fresh]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import pct  # noqa: E402

from agentix.store.audit_store import AuditLog  # noqa: E402
from agentix.store.db import Database, Txn  # noqa: E402

_pc = time.perf_counter_ns


class _Stamps:
    """A participant that only stamps the instants around COMMIT (writer thread)."""

    def __init__(self) -> None:
        self.op = self.before = self.after = 0

    def snapshot(self) -> Any:
        return None

    def restore(self, snap: Any) -> None:
        pass

    def before_commit(self, txn: Txn) -> None:
        self.before = _pc()

    def committed(self) -> None:
        self.after = _pc()


async def measure(records: int, skip: int, old: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="axb-durable-", dir="/tmp"))
    kw: dict[str, Any] = {"checkpoint_every": 0} if old else {}
    db = Database(work / "agentix.db", **kw)
    try:
        log = AuditLog(db)
        stamps = _Stamps()
        db.add_participant(stamps)  # after the log: its stamp follows the log's inserts
        floor_fd = os.open(work / "floor", os.O_CREAT | os.O_WRONLY, 0o600)
        data = {"tool": "file_write", "by": "bench", "args": {"path": "bench.txt", "content": "x" * 100}}
        rows: dict[str, list[float]] = {k: [] for k in ("handoff", "op", "commit", "wakeup", "total", "fdatasync")}
        for i in range(records):
            append = log._append_op("tool.invoked", "agent-1", data, ())

            def op(txn: Txn, append: Any = append) -> Any:
                stamps.op = _pc()
                return append(txn)

            t0 = _pc()
            await db.write(op)
            t1 = _pc()
            os.write(floor_fd, b"x" * 100)
            f0 = _pc()
            os.fdatasync(floor_fd)
            f1 = _pc()
            if i < skip:
                continue
            for k, v in (("handoff", stamps.op - t0), ("op", stamps.before - stamps.op),
                         ("commit", stamps.after - stamps.before), ("wakeup", t1 - stamps.after),
                         ("total", t1 - t0), ("fdatasync", f1 - f0)):
                rows[k].append(v / 1000)
        os.close(floor_fd)
        stats = db.stats()
    finally:
        db.close()
        shutil.rmtree(work, ignore_errors=True)
    out = {k: {"p50_us": round(pct(v, 50), 1), "p90_us": round(pct(v, 90), 1)} for k, v in rows.items()}
    return {"bench": "durable", "store": "old" if old else "new", "records": len(rows["total"]),
            "steps": out, "checkpoints": stats.checkpoints,
            "loadavg": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--skip", type=int, default=300, help="appends left out (the WAL's first cycle)")
    ap.add_argument("--fresh", action="store_true", help="keep the first appends (skip none)")
    ap.add_argument("--old", action="store_true", help="no background checkpointer")
    a = ap.parse_args()
    r = asyncio.run(measure(a.records, 0 if a.fresh else a.skip, a.old))
    print(f"store: {r['store']}; {r['records']} durable appends, one at a time; "
          f"{r['checkpoints']} background checkpoints")
    print(f"{'step':<12} {'p50 us':>9} {'p90 us':>9}")
    for k, v in r["steps"].items():
        print(f"{k:<12} {v['p50_us']:>9} {v['p90_us']:>9}")
    print(f"load average: {r['loadavg']} on {os.cpu_count()} cpus")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
