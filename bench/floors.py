"""Floors: what the machine itself costs, measured so that every goal can be judged beside it.

Starts: no kernel. Measures, in this run:

* raw socketpair JSON-RPC echo between two processes (the SDK's client against a bare
  echo loop): the transport alone, the floor of any system call;
* ``fdatasync`` of a 100-byte write in the directory benchmarks put ``$AGENTIX_HOME`` in
  (``/tmp``): the floor of any durable record;
* ``python -c pass`` and ``python -c "import agentix.sdk.agent"`` (goal: the import within
  2x of ``pass``), and the same import under ``bwrap`` with fresh namespaces (the floor of a
  cold spawn).

Each interpreter start is run ``--runs`` times, interleaved; medians are reported.

    python bench/floors.py [--runs 30] [--echo 5000]

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

sys.path.insert(0, str(Path(__file__).parent))
from syscall import floor as echo_floor  # noqa: E402


def fdatasync_us(directory: str, n: int = 200) -> dict:
    fd, path = tempfile.mkstemp(dir=directory, prefix="axb-fsync-")
    lat = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 100)
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return {"p50_us": round(lat[len(lat) // 2] * 1e6, 1), "p99_us": round(lat[int(len(lat) * 0.99)] * 1e6, 1)}


def starts_ms(runs: int) -> dict:
    py = sys.executable
    cases = {
        "python_pass": [py, "-c", "pass"],
        "import_sdk_agent": [py, "-c", "import agentix.sdk.agent"],
    }
    bwrap = shutil.which("bwrap")
    if bwrap:
        # a private /tmp first, then / bound over it: a venv or checkout under /tmp (a CI
        # clone) stays visible, as in the agent sandbox
        cases["bwrap_import_sdk_agent"] = [
            bwrap, "--tmpfs", "/tmp", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--unshare-all", "--die-with-parent", py, "-c", "import agentix.sdk.agent"]
    res: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for k, argv in cases.items():
            t = time.perf_counter()
            subprocess.run(argv, check=True)
            res[k].append(time.perf_counter() - t)
    return {k: round(statistics.median(v) * 1e3, 2) for k, v in res.items()}


def measure(runs: int = 30, echo_calls: int = 5000) -> dict:
    starts = starts_ms(runs)
    out = {
        "bench": "floors",
        "socketpair_echo": echo_floor(echo_calls, 200),
        "fdatasync": fdatasync_us("/tmp"),
        "starts_ms": starts,
        "import_vs_pass": round(starts["import_sdk_agent"] / starts["python_pass"], 2),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    out["goals"] = {"import_sdk_agent_le_2x_pass": out["import_vs_pass"] <= 2.0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--echo", type=int, default=5000)
    a = ap.parse_args()
    r = measure(a.runs, a.echo)
    s = r["starts_ms"]
    print(f"raw socketpair JSON-RPC echo: p50 {r['socketpair_echo']['p50_us']} us, "
          f"p99 {r['socketpair_echo']['p99_us']} us")
    print(f"fdatasync (100 bytes, /tmp): p50 {r['fdatasync']['p50_us']} us, p99 {r['fdatasync']['p99_us']} us")
    print(f"python -c pass: {s['python_pass']} ms; import agentix.sdk.agent: {s['import_sdk_agent']} ms "
          f"({r['import_vs_pass']}x, goal <= 2x)")
    if "bwrap_import_sdk_agent" in s:
        print(f"bwrap (fresh namespaces) + import agentix.sdk.agent: {s['bwrap_import_sdk_agent']} ms")
    print(f"load average: {r['loadavg']} on {os.cpu_count()} cpus")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
