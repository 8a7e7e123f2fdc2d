"""How fast the `agentix` command answers, beside ``python -c pass`` (issue 12: a quick CLI).

Starts: one kernel daemon (degraded isolation, a tmp home) and one finished agent, so that
``ps`` and ``logs`` have something to show. Then runs, interleaved, ``--runs`` times each:

* ``python -c pass`` — the floor;
* ``agentix info``, ``agentix ps -a``, ``agentix logs NAME`` through the installed entry point
  (``agentix.cli.quick``: these run without importing click) — goal: ``info`` within 2.5x
  of ``pass``;
* ``python -m agentix.cli.main info`` — the same command through the full click CLI.

Output goes to a pipe (as a script would read it). Medians are reported, with the load.

    python bench/cli_start.py [--runs 30]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel  # noqa: E402


def measure(runs: int = 30) -> dict:
    py = sys.executable
    agentix = str(Path(py).parent / "agentix")
    k = BenchKernel()
    try:
        prog = k.tmp / "hello.py"
        prog.write_text("from agentix.sdk import agent\nfor i in range(50):\n    print('line', i)\n"
                        "agent.connect().exit({'ok': True})\n")
        k.client.wait(k.client.spawn(program=str(prog), name="hello").agent_id, timeout=60)
        env = {**os.environ, "AGENTIX_HOME": str(k.home)}
        cases = {
            "python_pass": [py, "-c", "pass"],
            "agentix_info": [agentix, "info"],
            "agentix_ps": [agentix, "ps", "-a"],
            "agentix_logs": [agentix, "logs", "hello"],
            "click_info": [py, "-m", "agentix.cli.main", "info"],
        }
        res: dict[str, list[float]] = {c: [] for c in cases}
        for _ in range(runs):
            for name, argv in cases.items():
                t = time.perf_counter()
                subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
                res[name].append(time.perf_counter() - t)
    finally:
        k.close()
    ms = {c: round(statistics.median(v) * 1e3, 2) for c, v in res.items()}
    ratios = {c: round(ms[c] / ms["python_pass"], 2) for c in ms if c != "python_pass"}
    return {"bench": "cli_start", "runs": runs, "median_ms": ms, "vs_pass": ratios,
            "loadavg": round(os.getloadavg()[0], 2),
            "goals": {"agentix_info_le_2_5x_pass": ratios["agentix_info"] <= 2.5}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    r = measure(ap.parse_args().runs)
    for c, v in r["median_ms"].items():
        print(f"{c:<14} {v:8.2f} ms" + (f"  ({r['vs_pass'][c]}x pass)" if c in r["vs_pass"] else ""))
    print(f"goal: agentix info <= 2.5x python -c pass: {r['goals']['agentix_info_le_2_5x_pass']}; "
          f"load average {r['loadavg']} on {os.cpu_count()} cpus")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
