"""What the file taint records cost a kernel start: ``FileTaint`` over a table of ``--rows``
records (a JSON list of 4 labels each), its construction's CPU time and peak Python memory
(``tracemalloc``: it slows the construction several times; compare, do not read the
seconds as a start's), then the time of a file's lookup: the first (this thread's database
reader opened), the same again (cached), another file. Run it with each tree's interpreter
for a head-to-head (the records were all loaded at start; now none are).

    python bench/file_taint.py [--rows 100000]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from agentix.kernel.file_taint import FileTaint
from agentix.store.db import Database
from agentix.tools.safe_fs import Seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "agentix.db")
        labels = [f"fetched_url:https://example.com/page/{i}" for i in range(4)]

        def fill(txn) -> None:
            txn.conn.executemany(
                "INSERT INTO file_taint (dev, ino, path, labels, updated_at) VALUES (0, ?, ?, ?, 0)",
                ((i, f"/data/shared/file-{i}.txt", json.dumps(labels)) for i in range(args.rows)))

        asyncio.run(db.write(fill))
        try:
            tracemalloc.start()
            t0 = time.process_time()
            ft = FileTaint(db, (), None)
            start_cpu = time.process_time() - t0
            _, peak = tracemalloc.get_traced_memory()
            current, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            seen = [Seen("read", "/data/shared/file-7.txt", (0, 7))]
            t0 = time.perf_counter()
            got = ft.labels_for(seen)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            ft.labels_for(seen)
            again = time.perf_counter() - t0
            assert len(got) == 5, got
            t0 = time.perf_counter()
            ft.labels_for([Seen("read", "/data/shared/file-8.txt", (0, 8))])
            other = time.perf_counter() - t0
        finally:
            db.close()
    print(json.dumps({"bench": "file_taint", "rows": args.rows, "start_cpu_s": round(start_cpu, 3),
                      "start_peak_mb": round(peak / 2**20, 1), "held_mb": round(current / 2**20, 1),
                      "first_lookup_us": round(first * 1e6, 1), "cached_lookup_us": round(again * 1e6, 1),
                      "another_file_us": round(other * 1e6, 1)}))


if __name__ == "__main__":
    main()
