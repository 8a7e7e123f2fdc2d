"""Benchmark: round trip of checked system calls from agent processes.

Starts: a kernel daemon (``python -m agentix.kernel.daemon`` in a throwaway
``$AGENTIX_HOME`` under /tmp, isolation ``degraded`` by default -- plain processes, no
bwrap) and real agent processes spawned by it; the agents time their own calls with
time.perf_counter_ns and report through ``sys.exit``.

Runs, in one go:

* the floors: a raw socketpair JSON-RPC echo between two processes using the same client
  library, and ``fdatasync`` of 100 bytes in /tmp;
* a no-effect call (``tool.call echo``, records committed asynchronously): 1 agent, then 50
  concurrent agents. Every call goes through the capability check (``tool: echo``).
  Goals: p50 <= 3x the raw echo; >= 20,000 calls/s aggregate at 50 agents;
* an effect call (``file_write`` of 100 bytes in the workspace: durable intent record, the
  write with its own fsync, durable outcome record): 1 agent. Goal: p50 <= raw echo +
  2x fdatasync p50.

Last line: one JSON object.

    python bench/syscall.py [--calls 5000] [--agents 50] [--per-agent 400] [--isolation degraded]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel, pct  # noqa: E402

from agentix.sdk._client import Connection  # noqa: E402

AGENT = '''
import sys, time
from agentix.sdk import agent
k = agent.connect()
n, warm, barrier = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "barrier"
tool, args = "echo", {}
if len(sys.argv) > 4 and sys.argv[4] == "write":
    tool, args = "file_write", {"path": "bench.txt", "content": "x" * 100}
for _ in range(warm):
    k.tools.call(tool, args)
if barrier:
    k.recv(timeout=120)
lat = []
pc = time.perf_counter_ns
start = pc()
for _ in range(n):
    t = pc()
    k.tools.call(tool, args)
    lat.append(pc() - t)
end = pc()
k.exit({"lat": lat, "start": start, "end": end})
'''


def floor(n: int, warm: int) -> dict:
    """A raw JSON echo over a socketpair between two processes: the cost of the transport alone."""
    import orjson

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        f = b.makefile("rb", buffering=65536)
        try:
            for line in f:
                msg = orjson.loads(line)
                b.sendall(orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"echo": None}}) + b"\n")
        finally:
            os._exit(0)
    b.close()
    conn = Connection(a)
    for _ in range(warm):
        conn.call("tool.call", {"name": "echo", "args": {}})
    lat = []
    pc = time.perf_counter_ns
    start = pc()
    for _ in range(n):
        t = pc()
        conn.call("tool.call", {"name": "echo", "args": {}})
        lat.append(pc() - t)
    end = pc()
    conn.close()
    os.waitpid(pid, 0)
    return summarise(lat, n / ((end - start) / 1e9))


def summarise(lat_ns: list[int], rate: float) -> dict:
    us = [x / 1000 for x in lat_ns]
    return {"p50_us": round(pct(us, 50), 1), "p99_us": round(pct(us, 99), 1), "calls_per_s": round(rate),
            "calls": len(us)}


def run_agents(bk: BenchKernel, prog: Path, agents: int, per_agent: int, warm: int,
               mode: str = "echo") -> dict:
    k = bk.client
    barrier = "barrier" if agents > 1 else "go"
    # every call is checked: the agents hold a root-minted `tool: echo` token (checked vs unchecked
    # and a 4-times attenuated token, in one run: bench/auth_kernel.py)
    caps = ["tool: echo"] if mode == "echo" else ["file_write: {workspace}/*"]
    ids = [k.spawn({"name": f"bench-{mode}-{i}", "program": str(prog),
                    "args": [str(per_agent), str(warm), barrier, mode],
                    "capabilities": caps}).agent_id
           for i in range(agents)]
    if agents > 1:
        # wait until all have warmed up and sit in recv, then release them together
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = [a for a in ids if k.status(a).raw["syscalls"] >= warm + 1]
            if len(done) == len(ids):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        for a in ids:
            k.send(a, "go")
    lat: list[int] = []
    starts, ends = [], []
    for a in ids:
        info = k.wait(a, timeout=600)
        if info.reason != "completed":
            raise SystemExit(f"agent {a} {info.reason}: {k.logs(a)[0][-2000:]}")
        lat += info.result["lat"]
        starts.append(info.result["start"])
        ends.append(info.result["end"])
    rate = len(lat) / ((max(ends) - min(starts)) / 1e9)
    return summarise(lat, rate)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000, help="calls by the single agent")
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--per-agent", type=int, default=400)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--write-calls", type=int, default=300, help="file_write calls by one agent")
    ap.add_argument("--isolation", default="degraded")
    ap.add_argument("--http", default=None, metavar="HOST:PORT",
                    help="also serve the HTTP API, which turns the metrics observer on (kernel/telemetry.py)")
    args = ap.parse_args()

    from floors import fdatasync_us

    flo = floor(args.calls, args.warm)
    sync = fdatasync_us("/tmp")
    bk = BenchKernel(args.isolation, {"max_agents": max(100, args.agents + 1)},
                     args=("--http", args.http) if args.http else ())
    try:
        prog = bk.tmp / "echo_agent.py"
        prog.write_text(AGENT)
        one = run_agents(bk, prog, 1, args.calls, args.warm)
        many = run_agents(bk, prog, args.agents, args.per_agent, args.warm)
        write = run_agents(bk, prog, 1, args.write_calls, 20, mode="write")
    finally:
        bk.close()

    rows = [("raw socketpair echo (floor)", flo), ("echo, 1 agent", one),
            (f"echo, {args.agents} agents", many), ("file_write 100 B, 1 agent", write)]
    print(f"{'case':<30} {'calls':>7} {'p50 us':>9} {'p99 us':>9} {'calls/s':>9}")
    for name, r in rows:
        print(f"{name:<30} {r['calls']:>7} {r['p50_us']:>9} {r['p99_us']:>9} {r['calls_per_s']:>9}")
    print(f"fdatasync 100 B in /tmp: p50 {sync['p50_us']} us, p99 {sync['p99_us']} us")
    ratio = round(one["p50_us"] / flo["p50_us"], 2)
    write_bound = round(flo["p50_us"] + 2 * sync["p50_us"], 1)
    goals = {"echo_p50_le_3x_floor": ratio <= 3,
             "echo_aggregate_ge_20000": many["calls_per_s"] >= 20_000,
             "write_p50_le_floor_plus_2_fdatasync": write["p50_us"] <= write_bound}
    print(f"echo 1-agent p50 / floor p50 = {ratio}x; file_write p50 {write['p50_us']} us vs bound "
          f"{write_bound} us; goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(json.dumps({"bench": "syscall", "floor": flo, "fdatasync": sync, "one_agent": one,
                      "agents": args.agents, "many_agents": many, "file_write": write,
                      "ratio_to_floor": ratio, "write_bound_us": write_bound, "goals": goals,
                      "loadavg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
