"""Density: N idle sandboxed agents in a real kernel; operator RPC latency and memory per agent.

Starts: a kernel daemon -- ``python -m agentix.kernel.daemon`` on a fresh home whose ``config.toml`` raises
``[kernel] max_agents`` to 1000, spawns N (default 500) agents through the operator socket
(8 at a time; every isolation layer on, ``memory: 64M``, ``pids: 16``), each blocked in
``ipc.recv``. While all of them live it measures, over the operator socket:

- ``kernel.info`` and ``agent.list`` (N+ records) and ``agent.status`` of a random agent:
  p50/p99 of the round trip;
- a probe agent's own ``echo`` system-call round trips (the agent channel) among them;
- PSS per agent: ``Pss`` of ``/proc/<pid>/smaps_rollup`` summed over every process in the
  agent's cgroup (bwrap's outer and init processes and the Python agent).

Goal (issue 3): PSS <= 15 MB per agent, operator RPC p99 <= 20 ms. Last line: JSON figures.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentix.sandbox import cgroups
from agentix.sdk import Kernel
from agentix.sdk.errors import KernelNotRunning

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
IDLE = "from agentix.sdk import agent\nagent.connect().recv(timeout=3600)\n"
PROBE = textwrap.dedent("""
    import time
    from agentix.sdk import agent
    k = agent.connect()
    lat = []
    for i in range(2000):
        t = time.perf_counter()
        k.tools.echo(message=i)
        lat.append(time.perf_counter() - t)
        time.sleep(0.001)
    lat.sort()
    k.exit({"p50": lat[1000], "p99": lat[1980], "max": lat[-1]})
""")


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def start_kernel(home: Path) -> subprocess.Popen[bytes]:
    (home / "config.toml").write_text("[kernel]\nmax_agents = 1000\n")
    log = open(home / "daemon.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            Kernel(home, connect_timeout=1).close()
            return proc
        except KernelNotRunning:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the kernel did not start: {(home / 'daemon.log').read_text()[-500:]}")
            time.sleep(0.05)


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        time.sleep(0.002)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="axd-", dir="/tmp"))
    home = tmp / "h"
    home.mkdir()
    (tmp / "idle.py").write_text(IDLE)
    (tmp / "probe.py").write_text(PROBE)
    proc = start_kernel(home)
    failures: list[str] = []
    ids: list[str] = []
    try:
        def one(i: int) -> str:
            with Kernel(home) as k:
                return k.spawn({"name": f"idle-{i}", "program": str(tmp / "idle.py"),
                                "limits": {"memory": "64M", "pids": 16}}).agent_id

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as ex:
            for fut in [ex.submit(one, i) for i in range(N)]:
                try:
                    ids.append(fut.result())
                except Exception as err:  # noqa: BLE001 — counted and reported
                    failures.append(str(err)[:120])
        spawn_s = time.monotonic() - t0
        time.sleep(2)
        with Kernel(home) as k:
            live = k.info()["agents"]["live"]
            info = timed(k.info, 300)
            lst = timed(lambda: k.list(all=False), 100)
            status = timed(lambda: k.status(random.choice(ids)), 300)
            probe = k.spawn({"name": "probe", "program": str(tmp / "probe.py"),
                             "capabilities": ["tool: echo"]}).agent_id  # zero-default: echo needs its grant
            pr = k.wait(probe, timeout=120)
        h = cgroups.detect(cgroups.subtree_name(home))  # the kernel's own subtree
        base = next(iter(h.bases.values()))
        pss = []
        for aid in ids:
            pids = [int(x) for x in (base / aid / "cgroup.procs").read_text().split()]
            pss.append(sum(pss_kb(p) for p in pids) / 1024)
    finally:
        try:
            with Kernel(home) as k:
                k.shutdown()
            proc.wait(timeout=120)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()[0]
    ms = lambda xs, p: round(pct(xs, p) * 1000, 2)  # noqa: E731
    fig = {
        "agents": len(ids), "live_during_measure": live, "spawn_failures": len(failures),
        "spawn_all_s": round(spawn_s, 1), "load_average": round(load, 2),
        "kernel_info_p50_ms": ms(info, 50), "kernel_info_p99_ms": ms(info, 99),
        "agent_list_p50_ms": ms(lst, 50), "agent_list_p99_ms": ms(lst, 99),
        "agent_status_p50_ms": ms(status, 50), "agent_status_p99_ms": ms(status, 99),
        "agent_echo_p50_ms": round(pr.result["p50"] * 1000, 3) if pr.result else None,
        "agent_echo_p99_ms": round(pr.result["p99"] * 1000, 3) if pr.result else None,
        "pss_mb_mean": round(sum(pss) / len(pss), 2) if pss else None,
        "pss_mb_p99": round(pct(pss, 99), 2) if pss else None,
    }
    fig["goal_met"] = bool(pss) and fig["pss_mb_mean"] <= 15 and fig["kernel_info_p99_ms"] <= 20 \
        and fig["agent_list_p99_ms"] <= 20 and not failures
    print(f"{'agents':26} {len(ids)} live {live} (failures {len(failures)}, spawned in {spawn_s:.1f}s, "
          f"load average {load:.1f})")
    for f in failures[:3]:
        print(f"  failure: {f}")
    for name, key in [("kernel.info", "kernel_info"), ("agent.list (live)", "agent_list"),
                      ("agent.status", "agent_status"), ("agent echo syscall", "agent_echo")]:
        print(f"{name + ' ms':26} p50 {fig[key + '_p50_ms']}  p99 {fig[key + '_p99_ms']}")
    print(f"{'PSS per agent MB':26} mean {fig['pss_mb_mean']}  p99 {fig['pss_mb_p99']}")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
