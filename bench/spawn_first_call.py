"""Benchmark: spawn to first system call, over N spawns, beside `python -c pass` in the same run.

For each spawn the operator notes perf_counter_ns just before its agent.spawn request; the
agent notes perf_counter_ns just before sending its first system call (sys.info) and reports
it through sys.exit (perf_counter is CLOCK_MONOTONIC: one clock for every process). Starts:
a kernel daemon (``python -m agentix.kernel.daemon``, isolation ``degraded`` by default, i.e.
plain processes; ``--isolation strict`` for bwrap) and real agent processes.

``--warm`` (strict only) runs two daemons one after the other: one with ``[kernel]
warm_pool = 0`` (every spawn cold, one at a time) and one with ``warm_pool = --pool``
(default 4) whose spawns arrive at ``--rate`` per second (default 10, an open-loop
schedule: a spawn is issued on time whether or not the previous one has finished). Each
warm-mode row counts the spawns the kernel really started warm (``isolation.start``). The
floor, measured in the same run: ``bwrap … python -c "import agentix.sdk.agent"``
(bench/floors.py). Goals (issue 12): warm p50 <= 15 ms, p99 <= 50 ms; cold <= 1.3x the floor.
Last line: one JSON object.

    python bench/spawn_first_call.py [--spawns 100] [--isolation degraded]
    python bench/spawn_first_call.py --warm [--spawns 100] [--rate 10] [--pool 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel, pct  # noqa: E402

from agentix.sdk import Kernel  # noqa: E402

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


def _one(k: Kernel, prog: Path, t0: int) -> tuple[float, str]:
    r = k.spawn({"name": "s", "program": str(prog)})
    info = k.wait(r.agent_id, timeout=60)
    if info.reason != "completed":
        raise SystemExit(f"spawn: {info.reason}: {k.logs(r.agent_id)[0]}")
    return (info.result["first_call"] - t0) / 1e6, str(r.isolation.get("start", "cold"))


def run_mode(pool: int, spawns: int, rate: float | None) -> dict:
    """Spawn -> first call on a strict kernel with ``warm_pool = pool``; one at a time when
    ``rate`` is None, else issued at ``rate`` per second (each on its own client)."""
    bk = BenchKernel("strict", {"warm_pool": pool})
    try:
        prog = bk.tmp / "first.py"
        prog.write_text(AGENT)
        deadline = time.monotonic() + 60
        while pool and bk.client.info()["isolation"]["warm_pool"]["ready"] < pool:
            if time.monotonic() > deadline:
                raise SystemExit(f"the pool never filled: {bk.client.info()['isolation']}")
            time.sleep(0.05)
        out: list[tuple[float, str]] = []
        if rate is None:
            for _ in range(spawns):
                out.append(_one(bk.client, prog, time.perf_counter_ns()))
        else:
            local = threading.local()

            def job(due: float) -> tuple[float, str]:
                if not hasattr(local, "k"):
                    local.k = Kernel(bk.home)
                while time.perf_counter() < due:
                    time.sleep(max(0.0, due - time.perf_counter()))
                return _one(local.k, prog, time.perf_counter_ns())

            start = time.perf_counter() + 0.5
            with ThreadPoolExecutor(max_workers=16) as ex:
                futs = [ex.submit(job, start + i / rate) for i in range(spawns)]
                out = [f.result() for f in futs]
        stats = bk.client.info()["isolation"].get("warm_pool")
    finally:
        bk.close()
    all_ms = [ms for ms, _ in out]
    warm_ms = [ms for ms, s in out if s == "warm"]
    cold_ms = [ms for ms, s in out if s != "warm"]
    return {"all": all_ms, "warm": warm_ms, "cold": cold_ms, "pool": stats}


def main_warm(args: argparse.Namespace) -> None:
    from floors import starts_ms

    floor = starts_ms(max(10, min(args.spawns, 30)))
    cold = run_mode(0, args.spawns, None)
    warm = run_mode(args.pool, args.spawns, args.rate)
    rows = [row("cold, one at a time", cold["all"]),
            row(f"warm pool {args.pool}, {args.rate:g}/s: all", warm["all"])]
    if warm["warm"]:
        rows.append(row("  of which started warm", warm["warm"]))
    if warm["cold"]:
        rows.append(row("  of which started cold (pool empty)", warm["cold"]))
    fl = floor.get("bwrap_import_sdk_agent")
    print(f"{'case (spawn -> first system call)':<38} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for r in rows:
        print(f"{r['case']:<38} {r['n']:>4} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['mean_ms']:>8}")
    print(f"floor: bwrap + import agentix.sdk.agent {fl} ms (median); python -c pass "
          f"{floor['python_pass']} ms")
    cold_p50, all_p = rows[0]["p50_ms"], rows[1]
    goals = {"warm_p50_le_15ms": all_p["p50_ms"] <= 15, "warm_p99_le_50ms": all_p["p99_ms"] <= 50,
             "cold_le_1.3x_floor": fl is not None and cold_p50 <= 1.3 * fl}
    print(f"cold p50 / floor = {cold_p50 / fl:.2f}x (goal <= 1.3x)" if fl else "no bwrap: no floor")
    print(f"goals: {goals}; pool at the end: {warm['pool']}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(json.dumps({"bench": "spawn_warm", "rows": rows, "floor_ms": floor, "goals": goals,
                      "pool": warm["pool"], "rate": args.rate, "loadavg": round(os.getloadavg()[0], 2)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=100)
    ap.add_argument("--isolation", default="degraded")
    ap.add_argument("--warm", action="store_true", help="cold vs warm pool at --rate spawns/s (strict)")
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--pool", type=int, default=4)
    args = ap.parse_args()
    if args.warm:
        main_warm(args)
        return

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
