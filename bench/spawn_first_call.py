"""Benchmark: spawn to first system call, over N spawns, beside `python -c pass` in the same run.

For each spawn the operator notes perf_counter_ns just before its agent.spawn request; the
agent notes perf_counter_ns just before sending its first system call (sys.info) and reports
it through sys.exit (perf_counter is CLOCK_MONOTONIC: one clock for every process). Spawns
run one at a time. Starts: a kernel daemon (``python -m agentix.kernel.daemon``, isolation
``degraded`` by default, i.e. plain processes; ``--isolation strict`` for bwrap) and real agent
processes. Last line: one JSON object.

    python bench/spawn_first_call.py [--spawns 100] [--isolation degraded]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel, pct  # noqa: E402

AGENT = '''
import time
t_start = time.perf_counter_ns()
from agentix.sdk import agent
k = agent.connect()
t_call = time.perf_counter_ns()
k.info()
k.exit({"start": t_start, "first_call": t_call})
'''


def row(name: str, ms: list[float]) -> dict:
    return {"case": name, "n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
            "mean_ms": round(sum(ms) / len(ms), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=100)
    ap.add_argument("--isolation", default="degraded")
    args = ap.parse_args()

    bare = []
    for _ in range(args.spawns):
        t = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append((time.perf_counter_ns() - t) / 1e6)
    sdk_import = []
    for _ in range(min(args.spawns, 30)):
        t = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", "import agentix.sdk.agent"], check=True)
        sdk_import.append((time.perf_counter_ns() - t) / 1e6)

    bk = BenchKernel(args.isolation)
    first, reply, start = [], [], []
    try:
        prog = bk.tmp / "first.py"
        prog.write_text(AGENT)
        k = bk.client
        for i in range(args.spawns):
            t0 = time.perf_counter_ns()
            r = k.spawn({"name": "s", "program": str(prog)})
            t1 = time.perf_counter_ns()
            info = k.wait(r.agent_id, timeout=60)
            if info.reason != "completed":
                raise SystemExit(f"spawn {i}: {info.reason}: {k.logs(r.agent_id)[0]}")
            reply.append((t1 - t0) / 1e6)
            start.append((info.result["start"] - t0) / 1e6)
            first.append((info.result["first_call"] - t0) / 1e6)
        backend = k.info()["isolation"].get("backend")
    finally:
        bk.close()

    rows = [row("python -c pass (whole run)", bare), row("python -c 'import agentix.sdk.agent'", sdk_import),
            row("agent.spawn reply", reply), row("spawn -> program starts", start),
            row("spawn -> first system call", first)]
    print(f"{'case':<38} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for r in rows:
        print(f"{r['case']:<38} {r['n']:>4} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['mean_ms']:>8}")
    print(f"backend {backend}, isolation {args.isolation}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(json.dumps({"bench": "spawn", "backend": backend, "isolation": args.isolation,
                      "rows": rows, "loadavg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
