"""``make bench``: run every bench/*.py, then print ONE summary table.

Each benchmark prints its own table and, as its last line, one JSON object; this runner
streams their output, keeps those last lines, and ends with a table of the headline figures
and every goal each benchmark judged (met / MISSED), with the load average each one saw.
``bench/floors.py`` runs first so the floors sit in the same run.

    python bench/_run_all.py [--quick] [--only syscall,floors] [--json out.json]

``--quick`` passes each benchmark small sizes (a smoke run, not figures for the docs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

QUICK: dict[str, list[str]] = {
    "adapters": ["--calls", "400"],
    "audit": ["--entries", "20000", "--appends", "5000", "--proofs", "300"],
    "crash": ["--trials", "10"],
    "auth_kernel": ["500"],
    "density": ["20"],
    "floors": ["--runs", "10", "--echo", "2000"],
    "hot_path": ["--calls", "1000", "--starts", "2"],
    "mcp": ["--calls", "100", "--warm", "10"],
    "cli_start": ["--runs", "5"],
    "inference": ["--duration", "5", "--no-local"],
    "lifecycle": ["--runs", "2"],
    "spawn": ["10"],
    "spawn_first_call": ["--spawns", "10"],
    "syscall": ["--calls", "1000", "--agents", "10", "--per-agent", "200", "--write-calls", "50"],
}


#: scripts run more than once, with these extra arguments (each run is one row group)
VARIANTS: dict[str, list[list[str]]] = {
    "spawn_first_call": [[], ["--warm"]],   # cold path (degraded), then warm pool vs cold (strict)
}
QUICK_VARIANT: dict[str, list[str]] = {"--warm": ["--spawns", "10", "--rate", "5", "--pool", "2"]}


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if isinstance(d, dict):
            d = d.get(p)
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def headline(name: str, r: dict[str, Any]) -> list[tuple[str, Any]]:
    """The figures worth one line each in the summary."""
    g = lambda *p: _get(r, *p)  # noqa: E731
    if name == "floors":
        return [("raw socketpair echo p50 us", g("socketpair_echo", "p50_us")),
                ("fdatasync p50 us", g("fdatasync", "p50_us")),
                ("python -c pass ms", g("starts_ms", "python_pass")),
                ("import agentix.sdk.agent ms (x pass)",
                 f"{g('starts_ms', 'import_sdk_agent')} ({g('import_vs_pass')}x)"),
                ("bwrap + import agentix.sdk.agent ms", g("starts_ms", "bwrap_import_sdk_agent"))]
    if name == "syscall":
        return [("echo 1 agent p50 us (x floor)", f"{g('one_agent', 'p50_us')} ({g('ratio_to_floor')}x)"),
                (f"echo {g('agents')} agents calls/s", g("many_agents", "calls_per_s")),
                ("file_write 100 B p50 us (bound)", f"{g('file_write', 'p50_us')} ({g('write_bound_us')})")]
    if name == "hot_path":
        return [("kernel start CPU: import / ready s", f"{g('start_cpu_s', 'import_s')} / {g('start_cpu_s', 'ready_s')}"),
                ("echo: kernel CPU us per call (agent)",
                 f"{g('echo', 'kernel_cpu_us_per_call_total')} ({g('echo', 'agent_cpu_us_per_call')})")]
    if name == "audit":
        return [("durable appends/s (group commit)", g("appends_per_s_group_commit")),
                ("verify entries / s", f"{g('verify_entries')} / {g('verify_s')}"),
                ("proof p50 / p99 ms (CPU p99)",
                 f"{g('proof_total_ms_p50')} / {g('proof_total_ms_p99')} ({g('proof_cpu_ms_p99')})")]
    if name == "crash":
        return [("trials; acked; lost", f"{g('trials')}; {g('acknowledged_events')}; "
                 f"{g('lost_acknowledged_events')}"),
                ("effects; without intent record", f"{g('effects')}; {g('effects_without_intent')}")]
    if name == "inference":
        wfq = _get(r, "fake", "rows", 0) or {}
        return [("wfq capacity", round(wfq.get("throughput_share", 0), 3)),
                ("wfq fairness", round(wfq.get("fairness", 0), 3)),
                ("wfq interactive p99 vs alone", round(wfq.get("interactive_vs_alone", 0), 2))]
    if name == "adapters":
        return [("LangChain tool call overhead p50 us", g("langchain_overhead_p50_us")),
                ("plain tool call p50 us", g("rows", "plain", "p50_us"))]
    if name == "mcp":
        return [("MCP call p50 us: direct / agentix effect / agentix read_only",
                 f"{g('direct', 'p50_us')} / {g('agentix', 'p50_us')} / {g('agentix_read_only', 'p50_us')}")]
    if name == "spawn_first_call" and r.get("bench") == "spawn_warm":
        return [(f"{x['case'].strip()} p50 / p99 ms (n)", f"{x['p50_ms']} / {x['p99_ms']} ({x['n']})")
                for x in r.get("rows", [])]
    if name == "spawn_first_call":
        rows = {x["case"]: x for x in r.get("rows", [])}
        f = rows.get("spawn -> first system call", {})
        return [("spawn -> first call p50 / p99 ms", f"{f.get('p50_ms')} / {f.get('p99_ms')}")]
    # others: a few numeric top-level figures
    out = []
    for k, v in r.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and len(out) < 3 and "load" not in k:
            out.append((k, v))
    return out


def goals(r: dict[str, Any]) -> list[tuple[str, bool | None]]:
    for key in ("goals", "goals_met"):
        if isinstance(r.get(key), dict):
            return [(k, v) for k, v in r[key].items()]
    if isinstance(r.get("goal_met"), bool):
        return [("goal", r["goal_met"])]
    return []


def load_of(r: dict[str, Any]) -> Any:
    for k in ("loadavg", "load_average", "loadavg_1m_at_end"):
        if k in r:
            return r[k]
    return None


def run(script: Path, extra: list[str]) -> tuple[dict[str, Any] | None, float, int]:
    print(f"\n== {script.name} {' '.join(extra)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *extra], stdout=subprocess.PIPE,
                            text=True, cwd=HERE.parent)
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip():
            last = line
    rc = proc.wait()
    try:
        got = json.loads(last)
    except ValueError:
        got = None
    return (got if isinstance(got, dict) else None), time.monotonic() - t0, rc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    scripts.sort(key=lambda p: p.stem != "floors")  # floors first
    if a.only:
        want = set(a.only.split(","))
        scripts = [p for p in scripts if p.stem in want]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE.parent).stdout.strip() or "?"
    results: dict[str, Any] = {}
    table: list[tuple[str, str, str, str]] = []
    for s in scripts:
        for variant in VARIANTS.get(s.stem, [[]]):
            key = " ".join([s.stem, *variant])
            extra = (QUICK_VARIANT.get(" ".join(variant)) or QUICK.get(s.stem, [])) if a.quick else []
            r, secs, rc = run(s, [*variant, *extra])
            results[key] = {"result": r, "seconds": round(secs, 1), "exit": rc}
            if r is None:
                table.append((key, "(no JSON result)", f"exit {rc}", ""))
                continue
            load = load_of(r)
            for label, val in headline(s.stem, r):
                table.append((key, label, str(val), ""))
            for label, ok in goals(r):
                table.append((key, f"goal {label}", "met" if ok else ("n/a" if ok is None else "MISSED"), ""))
            if table and table[-1][0] == key:
                table[-1] = (*table[-1][:3], "" if load is None else str(load))
    print(f"\n== summary: commit {commit}, {os.cpu_count()} cpus, "
          f"load average now {os.getloadavg()[0]:.2f}{' (QUICK sizes)' if a.quick else ''}")
    w0 = max(len(x[0]) for x in table) if table else 5
    w1 = max(len(x[1]) for x in table) if table else 5
    w2 = max(len(x[2]) for x in table) if table else 5
    print(f"{'bench':<{w0}}  {'figure':<{w1}}  {'value':<{w2}}  load")
    for b, f, v, ld in table:
        print(f"{b:<{w0}}  {f:<{w1}}  {v:<{w2}}  {ld}")
    if a.json:
        Path(a.json).write_text(json.dumps({"commit": commit, "results": results}, indent=1))
    failed = [k for k, v in results.items() if v["exit"] != 0]
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
