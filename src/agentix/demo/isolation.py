"""``agentix demo``, section 2: isolation, live and measured.

Four misbehaving agents run next to a well-behaved one (``worker``, which times its own
system calls); each row of the table is backed by figures the kernel measured through the
agents' cgroups (``agent.status`` → ``resources``), by exit reasons, and by the agents'
own results:

- an infinite loop under ``cpu: 0.1`` is throttled (CPU share from ``cpu_usage_ns`` over
  wall time, ``cpu_nr_throttled``) while the worker's round trips stay fast;
- a memory leak under ``memory: 64M`` is OOM-killed alone (reason ``oom``);
- a malicious agent's file reads, sockets, name lookups and forks are refused (errno each);
- a crashing agent (SIGSEGV) leaves the others running.

Only the SDK is used: the section is what any operator could run.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from agentix.demo.agents import PROGRAMS as _ALL
from agentix.sdk import Kernel

__all__ = ["isolation_section"]

PROGRAMS = _ALL / "isolation"
BASELINE_CALLS = 300  # worker.py's BASELINE
HOG_WINDOW_S = 1.5
HOG_CPU = 0.1
LEAK_MEMORY = "64M"
MALICIOUS_PIDS = 16


def _spawn(k: Kernel, program: str, name: str, limits: dict[str, Any] | None = None,
           message: Any = None) -> str:
    manifest: dict[str, Any] = {"name": name, "program": str(PROGRAMS / program),
                                "capabilities": ["tool: echo"]}
    if limits:
        manifest["limits"] = limits
    return k.spawn(manifest, message=message).agent_id


def _wait_syscalls(k: Kernel, agent_id: str, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = k.status(agent_id)
        if st.raw.get("syscalls", 0) >= n:
            return True
        if st.state == "exited":
            return False
        time.sleep(0.02)
    return False


def _mib(n: Any) -> str:
    return "-" if not isinstance(n, int) else f"{n / 2**20:.1f} MiB"


def _states(k: Kernel, ids: dict[str, str]) -> dict[str, str]:
    return {name: k.status(aid).state for name, aid in ids.items()}


def isolation_section(k: Kernel, console: Console) -> dict[str, Any]:
    """Run the four rows; return their figures and whether every check held."""
    console.rule("[bold]2. Isolation: one agent misbehaves, the others do not notice")
    t0 = time.monotonic()
    ids: dict[str, str] = {}
    live_ids: list[str] = []
    try:
        return _run(k, console, t0, ids, live_ids)
    finally:
        for aid in live_ids:  # never leave the demo's agents behind, whatever happened
            try:
                if k.status(aid).state != "exited":
                    k.kill(aid)
            except Exception:  # noqa: BLE001 — best effort clean-up on the way out
                pass


def _run(k: Kernel, console: Console, t0: float, ids: dict[str, str],
         live_ids: list[str]) -> dict[str, Any]:
    # -- the bystander: baseline latency with nothing else running
    ids["worker"] = _spawn(k, "worker.py", "iso-worker")
    live_ids.append(ids["worker"])
    baseline_done = _wait_syscalls(k, ids["worker"], BASELINE_CALLS + 1, timeout=15)

    # -- (a) CPU hog at 10 %
    ids["hog"] = _spawn(k, "hog.py", "iso-hog", {"cpu": HOG_CPU})
    live_ids.append(ids["hog"])
    time.sleep(0.3)  # past its start-up: measure the loop, not the interpreter
    s1, w1 = k.status(ids["hog"]).raw.get("resources", {}), time.monotonic()
    k.send(ids["worker"], {"seconds": HOG_WINDOW_S})
    time.sleep(HOG_WINDOW_S)
    s2, w2 = k.status(ids["hog"]).raw.get("resources", {}), time.monotonic()
    cpu_ns = (s2.get("cpu_usage_ns") or 0) - (s1.get("cpu_usage_ns") or 0)
    share = cpu_ns / 1e9 / (w2 - w1)
    throttled = s2.get("cpu_nr_throttled") or 0
    hog = {"cpu_limit": HOG_CPU, "cpu_share": round(share, 3), "nr_throttled": throttled,
           "throttled_s": round((s2.get("cpu_throttled_ns") or 0) / 1e9, 3),
           "state": k.status(ids["hog"]).state}

    # -- (b), (c), (d) at once, while the worker and the hog live on
    worker_ws = k.status(ids["worker"]).raw["workspace"]
    ids["leak"] = _spawn(k, "leak.py", "iso-leak", {"memory": LEAK_MEMORY})
    ids["malicious"] = _spawn(k, "malicious.py", "iso-malicious", {"pids": MALICIOUS_PIDS},
                              message={"sibling_workspace": worker_ws,
                                       "operator_socket": str(k.socket_path)})
    ids["crash"] = _spawn(k, "crash.py", "iso-crash")
    live_ids += [ids["leak"], ids["malicious"], ids["crash"]]
    ends = {n: k.wait(ids[n], timeout=15) for n in ("leak", "malicious", "crash")}
    bystanders = _states(k, {"worker": ids["worker"], "hog": ids["hog"]})

    lk = ends["leak"]
    lres = lk.raw.get("resources", {})
    leak = {"reason": lk.reason, "memory_limit": LEAK_MEMORY, "memory_peak": lres.get("memory_peak"),
            "oom_kills": lres.get("oom_kills"), "others": bystanders}
    mal = ends["malicious"]
    attempts = (mal.result or {}).get("attempts", []) if isinstance(mal.result, dict) else []
    malicious = {"reason": mal.reason, "attempts": attempts}
    cr = ends["crash"]
    crash = {"reason": cr.reason, "detail": (cr.exit or {}).get("detail", ""), "others": bystanders}

    # -- wind down: the hog is killed by the operator, the worker finishes its last phase
    k.kill(ids["hog"])
    k.send(ids["worker"], "finish")
    w = k.wait(ids["worker"], timeout=15)
    wres = w.result if isinstance(w.result, dict) else {}
    before, during, after = (wres.get(p) or {} for p in ("before", "during", "after"))
    ratio = (during.get("p50_ms", 0) / before["p50_ms"]) if before.get("p50_ms") else None
    worker = {"reason": w.reason, "before": before, "during": during, "after": after,
              "p50_ratio": None if ratio is None else round(ratio, 2)}

    # -- checks
    checks = {
        "cpu": (baseline_done and hog["state"] == "running" and share < HOG_CPU * 2
                and throttled > 0),
        "worker": (w.reason == "completed" and bool(during.get("n")) and bool(after.get("n"))),
        "oom": lk.reason == "oom" and bystanders == {"worker": "running", "hog": "running"},
        "malicious": (mal.reason == "completed" and len(attempts) == 7
                      and all(a["refused"] for a in attempts[:6]) and not attempts[6]["refused"]),
        "crash": cr.reason == "crashed" and bystanders == {"worker": "running", "hog": "running"},
    }
    ok = all(checks.values())
    elapsed = time.monotonic() - t0

    _print(console, hog, worker, leak, malicious, crash, checks)
    failed = [n for n, v in checks.items() if not v]
    console.print(f"  checks: {len(checks) - len(failed)}/{len(checks)} "
                  + ("[green]held[/]" if ok else f"[red]FAILED[/] ({', '.join(failed)})")
                  + f"  ({elapsed:.2f}s)")
    return {"ok": ok, "seconds": round(elapsed, 3), "checks": checks, "cpu_hog": hog,
            "worker": worker, "memory_leak": leak, "malicious": malicious, "crash": crash}


def _lat(p: dict[str, Any]) -> str:
    return f"p50 {p.get('p50_ms', '-')} / p99 {p.get('p99_ms', '-')} ms" if p else "-"


def _mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def _print(console: Console, hog: dict[str, Any], worker: dict[str, Any], leak: dict[str, Any],
           malicious: dict[str, Any], crash: dict[str, Any], checks: dict[str, bool]) -> None:
    t = Table("", "misbehaviour", "what happened (measured)", box=None, padding=(0, 1),
              show_lines=False)
    t.add_row(_mark(checks["cpu"]), "infinite loop\ncpu: 0.1",
              f"throttled: CPU share {hog['cpu_share']:.1%} over {HOG_WINDOW_S:g}s, "
              f"{hog['nr_throttled']} throttled periods ({hog['throttled_s']}s held back in all)")
    t.add_row(_mark(checks["worker"]), "  worker beside it",
              f"echo round trip before: {_lat(worker['before'])}\n"
              f"during the hog: {_lat(worker['during'])}\n"
              f"after it all: {_lat(worker['after'])}; {worker['reason']}")
    others = ", ".join(f"{n} {s}" for n, s in leak["others"].items())
    t.add_row(_mark(checks["oom"]), f"memory leak\nmemory: {leak['memory_limit']}",
              f"killed alone: reason {leak['reason']}, peak {_mib(leak['memory_peak'])}, "
              f"oom kills {leak['oom_kills']}; {others}")
    lines = []
    for a in malicious["attempts"]:
        verdict = f"refused {a['errno']}" if a["refused"] else f"ok: {a['detail']}"
        if a["attempt"].startswith("fork") and a["refused"]:
            verdict += f" ({a['detail'].split(':')[0]})"
        lines.append(f"{a['attempt']}: {verdict}")
    t.add_row(_mark(checks["malicious"]), f"malicious\npids: {MALICIOUS_PIDS}",
              "\n".join(lines) or f"no result ({malicious['reason']})")
    t.add_row(_mark(checks["crash"]), "crash (SIGSEGV)",
              f"reason {crash['reason']}: {crash['detail']}; "
              + ", ".join(f"{n} {s}" for n, s in crash["others"].items()))
    console.print(t)
