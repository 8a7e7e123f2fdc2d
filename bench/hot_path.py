"""Where the kernel's CPU goes: at start, and per no-effect system call (``tool.call echo``).

Latency on a shared host moves with the load; CPU time per call moves much less, so this
bench reports both, for head-to-head runs (this tree against another one's interpreter):

* ``start``: CPU seconds (``process_time``) a daemon spends importing its modules and
  starting until it is ready (``run_kernel``'s ready event), ``--starts`` times, median;
* ``echo``: one agent (isolation ``degraded``) makes ``--calls`` ``tool.call echo`` calls
  (after 200 warm-up calls); reported: its p50, and CPU per call of the kernel's main
  thread (the event loop: the pipeline) and of its other threads (the store's writer: the
  audit records of each call), user and system, read from ``/proc/<pid>/task`` around the
  calls less an agent that made none; and the agent's own CPU per call (the SDK client);
* ``--profile FILE``: the daemon runs under ``cProfile`` with a thread-CPU timer (time a
  thread is descheduled on a busy host is not charged to the function it was in), the
  main thread only, and the top functions by own time are printed (the profiler's own
  overhead is ~4x: read the shares, not the times). A bench tool only: nothing in
  ``src/`` knows about it.

    python bench/hot_path.py [--calls 5000] [--starts 5] [--profile /tmp/kernel.prof]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import pct  # noqa: E402

from agentix.sdk import Kernel  # noqa: E402
from agentix.sdk.errors import KernelNotRunning  # noqa: E402

START = """
import asyncio, json, os, signal, sys, time
from pathlib import Path
t0 = time.process_time()
from agentix.kernel.daemon import run_kernel
from agentix.kernel.home import Home
t1 = time.process_time()

async def main():
    ready = asyncio.Event()
    home = Home(Path(sys.argv[1]))
    task = asyncio.create_task(run_kernel(home, {"isolation": "degraded"}, ready=ready))
    await ready.wait()
    print(json.dumps({"import_s": t1 - t0, "ready_s": time.process_time() - t0}))
    os.kill(os.getpid(), signal.SIGTERM)
    await task

asyncio.run(main())
"""

PROFILED = """
import cProfile, sys, time
from agentix.kernel.daemon import main
p = cProfile.Profile(time.thread_time)
p.enable()
try:
    main(sys.argv[2:])
finally:
    p.disable()
    p.dump_stats(sys.argv[1])
"""

AGENT = """
import resource, sys, time
from agentix.sdk import agent
k = agent.connect()
n = int(sys.argv[1])
for _ in range(200 if n else 0):
    k.tools.call("echo", {})
lat = []
pc = time.perf_counter_ns
r0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(n):
    t = pc()
    k.tools.call("echo", {})
    lat.append(pc() - t)
r1 = resource.getrusage(resource.RUSAGE_SELF)
k.exit({"lat": lat, "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime})
"""


def start_cpu(runs: int) -> dict[str, float]:
    got = []
    for _ in range(runs):
        home = tempfile.mkdtemp(prefix="axb-start-", dir="/tmp")
        try:
            out = subprocess.run([sys.executable, "-c", START, home], capture_output=True, text=True, check=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: round(statistics.median(g[k] for g in got), 3) for k in ("import_s", "ready_s")}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``: ``main``/``other`` x ``user``/``sys``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"main_user": 0.0, "main_sys": 0.0, "other_user": 0.0, "other_sys": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        who = "main" if tid == str(pid) else "other"
        out[f"{who}_user"] += int(fields[11]) / tick
        out[f"{who}_sys"] += int(fields[12]) / tick
    return out


def echo(calls: int, profile: str | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="axb-hot-", dir="/tmp"))
    home = tmp / "h"
    home.mkdir()
    args = ["--home", str(home), "--isolation", "degraded", "--log-level", "WARNING"]
    argv = ([sys.executable, "-c", PROFILED, profile, *args] if profile
            else [sys.executable, "-m", "agentix.kernel.daemon", *args])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            k = Kernel(home)
            break
        except KernelNotRunning:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)
    prog = tmp / "echo_agent.py"
    prog.write_text(AGENT)

    def run(n: int) -> tuple[dict[str, Any], dict[str, float]]:
        before = thread_cpu(proc.pid)
        a = k.spawn({"name": f"hot-{n}-{time.monotonic_ns()}", "program": str(prog), "args": [str(n)],
                     "capabilities": ["tool: echo"]}).agent_id
        info = k.wait(a, timeout=600)
        if info.reason != "completed":
            raise SystemExit(f"the agent {info.reason}: {k.logs(a)[0][-2000:]}")
        after = thread_cpu(proc.pid)
        return info.result, {t: after[t] - before[t] for t in after}

    try:
        run(0)  # the first spawn's one-time costs
        _, base = run(0)
        res, cpu = run(calls)
    finally:
        try:
            k.shutdown()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
            shutil.rmtree(tmp, ignore_errors=True)
    n = calls + 200  # the warm-up calls ran inside the measured span too
    per_call = {t: round((cpu[t] - base[t]) / n * 1e6, 1) for t in cpu}
    us = [x / 1000 for x in res["lat"]]
    return {"p50_us": round(pct(us, 50), 1), "p99_us": round(pct(us, 99), 1),
            "kernel_cpu_us_per_call": per_call, "kernel_cpu_us_per_call_total": round(sum(per_call.values()), 1),
            "agent_cpu_us_per_call": round(res["cpu"] / calls * 1e6, 1)}


def show_profile(path: str, top: int = 30) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="run the daemon under cProfile (thread CPU timer), write FILE, print the top")
    args = ap.parse_args()
    start = start_cpu(args.starts) if args.starts else None
    one = echo(args.calls, args.profile)
    if args.profile:
        show_profile(args.profile)
    if start:
        print(f"kernel start CPU: import {start['import_s']} s, ready {start['ready_s']} s (median of {args.starts})")
    print(f"echo, 1 agent: p50 {one['p50_us']} us; kernel CPU per call {one['kernel_cpu_us_per_call_total']} us "
          f"{one['kernel_cpu_us_per_call']}; agent CPU per call {one['agent_cpu_us_per_call']} us"
          + (" (profiled)" if args.profile else ""))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(json.dumps({"bench": "hot_path", "start_cpu_s": start, "echo": one, "profiled": bool(args.profile),
                      "loadavg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
