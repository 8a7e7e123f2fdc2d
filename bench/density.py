"""Density: N concurrent idle sandboxed agents; memory per agent (PSS) and channel RPC latency.

Spawns N (default 500) agents through ``BwrapSubstrate`` (every layer on), each idling on
its channel as an echo server. While all of them live it measures:
- PSS per agent: the sum of ``Pss`` in ``/proc/<pid>/smaps_rollup`` over every process in
  the agent's cgroup (bwrap's outer and init processes and the Python agent);
- round trips on the channel from this process (which plays the kernel's event loop) to
  random live agents: p50/p99 — the floor under an operator RPC while they live.

Goal (issue 3): PSS <= 15 MB per agent, RPC p99 <= 20 ms. Last line: JSON figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agentix.core.manifest import Limits
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.bwrap import BwrapSubstrate

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
ECHO = ("from agentix.sandbox.confine import apply_from_env\napply_from_env()\n"
        "import os\nfd = int(os.environ['AGENTIX_FD'])\nos.write(fd, b'r')\n"
        "while True:\n    b = os.read(fd, 1)\n    if not b:\n        break\n    os.write(fd, b)\n")


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


async def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    sub = BwrapSubstrate()
    sub.status()
    loop = asyncio.get_running_loop()
    tmp = Path(tempfile.mkdtemp(prefix="agentix-density-"))
    tmp.chmod(0o755)
    agents: list[tuple[object, socket.socket]] = []
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            ws = tmp / f"a{i}"
            ws.mkdir()
            (ws / "prog.py").write_text(ECHO)
            parent, child = socket.socketpair()
            parent.setblocking(False)
            spec = LaunchSpec(agent_id=f"dens-{uuid.uuid4().hex[:8]}", name=f"d{i}",
                              argv=[sys.executable, "prog.py"], workspace=ws,
                              env={"AGENTIX_FD": str(child.fileno())}, channel_fd=child.fileno(),
                              log_path=tmp / f"a{i}.log", limits=Limits(memory="64M", pids=16))
            h = await sub.spawn(spec)
            child.close()
            assert await loop.sock_recv(parent, 1) == b"r"
            agents.append((h, parent))

    t0 = time.monotonic()
    failures = 0
    results = await asyncio.gather(*(one(i) for i in range(N)), return_exceptions=True)
    failures = sum(1 for r in results if isinstance(r, BaseException))
    spawn_s = time.monotonic() - t0
    await asyncio.sleep(2)
    pss = [sum(pss_kb(p) for p in h.pids()) / 1024 for h, _ in agents]
    rtts = []
    for _ in range(2000):
        h, s = random.choice(agents)
        t = time.perf_counter()
        await loop.sock_sendall(s, b"p")
        await loop.sock_recv(s, 1)
        rtts.append(time.perf_counter() - t)
    alive = sum(1 for h, _ in agents if h._proc.returncode is None)
    for h, s in agents:
        s.close()
    await asyncio.gather(*(h.wait() for h, _ in agents))
    await asyncio.gather(*(h.cleanup() for h, _ in agents))
    fig = {
        "agents": len(agents), "spawn_failures": failures, "alive_during_measure": alive,
        "spawn_all_s": round(spawn_s, 1),
        "pss_mb_mean": round(sum(pss) / len(pss), 2), "pss_mb_p99": round(pct(pss, 99), 2),
        "rpc_p50_ms": round(pct(rtts, 50) * 1000, 3), "rpc_p99_ms": round(pct(rtts, 99) * 1000, 3),
    }
    fig["goal_met"] = fig["pss_mb_mean"] <= 15 and fig["rpc_p99_ms"] <= 20 and not failures
    print(f"{'agents':24} {fig['agents']} (failures {failures}, alive {alive}, spawned in {spawn_s:.1f}s)")
    print(f"{'PSS per agent MB':24} mean {fig['pss_mb_mean']}  p99 {fig['pss_mb_p99']}")
    print(f"{'channel RTT ms':24} p50 {fig['rpc_p50_ms']}  p99 {fig['rpc_p99_ms']}")
    print(json.dumps(fig))


if __name__ == "__main__":
    asyncio.run(main())
