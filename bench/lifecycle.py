"""Lifecycle timings: how soon the kernel notices and acts, the speed goals the tests no longer assert.

Starts: one kernel daemon (degraded isolation, so it runs anywhere). Measures, ``--runs``
times each, medians and worst:

* reap: SIGKILL from outside the kernel -> ``agent.wait`` returns the exit record (goal < 1 s;
  tests/kernel/test_agents.py checks the record, this the delay);
* kill: ``agent.kill`` of an agent that ignores SIGTERM (goal < 1 s);
* wait overshoot: ``agent.wait(timeout=0.3)`` on a live agent, time past 0.3 s (goal < 0.5 s);
* wall clock: an agent with ``limits.wall_clock = 1s``, spawn -> exit, past 1 s (goal < 1 s);
* a fast call behind a slow one on one connection: ``kernel.info`` answered while an
  ``agent.wait`` of 2 s is pending on the same socket (goal < 100 ms, as scenario 9 asks of
  a sibling agent's calls).

    python bench/lifecycle.py [--runs 5]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel  # noqa: E402

PROGRAMS = Path(__file__).resolve().parent.parent / "tests" / "programs"


def _spawn(bk: BenchKernel, prog: str, **fields: object) -> str:
    manifest = {"name": prog.split(".")[0].replace("_", "-"), "program": str(PROGRAMS / prog),
                "capabilities": ["preset: standard"], **fields}
    return bk.client.spawn(manifest).agent_id


def _ready(bk: BenchKernel, aid: str, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in bk.client.logs(aid)[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{aid} never printed {text!r}")
        time.sleep(0.01)


def reap(bk: BenchKernel) -> float:
    aid = _spawn(bk, "sleeper.py")
    _ready(bk, aid, "ready")
    pid = bk.client.status(aid).pid
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    bk.client.wait(aid, timeout=30)
    return time.monotonic() - t


def kill(bk: BenchKernel) -> float:
    aid = _spawn(bk, "ignore_term.py")
    _ready(bk, aid, "ignoring")
    t = time.monotonic()
    bk.client.kill(aid)
    return time.monotonic() - t


def wait_overshoot(bk: BenchKernel) -> float:
    from agentix.sdk.errors import Timeout

    aid = _spawn(bk, "sleeper.py")
    t = time.monotonic()
    try:
        bk.client.wait(aid, timeout=0.3)
    except Timeout:
        pass
    took = time.monotonic() - t - 0.3
    bk.client.kill(aid)
    return took


def wall_clock_overshoot(bk: BenchKernel) -> float:
    t = time.monotonic()
    aid = _spawn(bk, "sleeper.py", limits={"wall_clock": "1s"})
    bk.client.wait(aid, timeout=30)
    return time.monotonic() - t - 1.0


def fast_behind_slow(bk: BenchKernel) -> float:
    aid = _spawn(bk, "sleeper.py")
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(bk.home / "agentixd.sock"))
    f = s.makefile("rb")

    def send(obj: dict) -> None:
        s.sendall(json.dumps({"jsonrpc": "2.0", **obj}).encode() + b"\n")

    send({"id": "slow", "method": "agent.wait", "params": {"agent_id": aid, "timeout": 2}})
    t = time.monotonic()
    send({"id": "fast", "method": "kernel.info", "params": {}})
    first = json.loads(f.readline())
    took = time.monotonic() - t
    assert first["id"] == "fast", first
    json.loads(f.readline())  # the slow one, after its 2 s
    s.close()
    bk.client.kill(aid)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    cases = {"reap_s": (reap, 1.0), "kill_s": (kill, 1.0), "wait_overshoot_s": (wait_overshoot, 0.5),
             "wall_clock_overshoot_s": (wall_clock_overshoot, 1.0),
             "fast_behind_slow_s": (fast_behind_slow, 0.1)}
    bk = BenchKernel("degraded", config={"max_agents": 1000})
    out: dict[str, object] = {}
    goals: dict[str, bool] = {}
    try:
        for name, (fn, goal) in cases.items():
            xs = [fn(bk) for _ in range(a.runs)]
            med, worst = statistics.median(xs), max(xs)
            out[name] = {"p50": round(med, 4), "max": round(worst, 4), "goal": goal}
            goals[f"{name} p50 < {goal}"] = med < goal
            print(f"{name:24s} p50 {med * 1e3:8.1f} ms  max {worst * 1e3:8.1f} ms  (goal < {goal * 1e3:.0f} ms)")
    finally:
        bk.close()
    out["goals"] = goals
    out["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
