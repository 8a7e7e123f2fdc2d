"""CPU hog containment: a sibling agent's system-call latency while another agent hogs the CPU.

A sibling sandboxed agent echoes bytes on its channel (each round trip is one small
system call to the kernel's event loop). We measure its round-trip latency idle, then
while a hog agent (cpu limit 0.5) runs 4 busy processes on this 2-core machine, and
report the ratio — back to back (the sibling stays runnable) and spaced 1 ms apart (every
sample is a cold wake-up that must preempt a hog process on a busy core). Goal (issue 3): under the hog, the sibling's p50 stays within 2x idle.
Starts: no kernel -- the sandbox substrate only (``BwrapSubstrate``: bwrap, cgroups,
seccomp, Landlock) in this process, with two sandboxed agent processes.
Last line: one JSON object of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agentix.core.manifest import Limits
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.bwrap import BwrapSubstrate

CONFINE = "from agentix.sandbox.confine import apply_from_env\napply_from_env()\nimport os, time\n"
ECHO = CONFINE + ("fd = int(os.environ['AGENTIX_FD'])\nwhile True:\n    b = os.read(fd, 1)\n"
                  "    if not b:\n        break\n    os.write(fd, b)\n")
HOG = CONFINE + ("for _ in range(4):\n    if os.fork() == 0:\n        end = time.monotonic() + 6\n"
                 "        while time.monotonic() < end:\n            pass\n        os._exit(0)\n"
                 "os.wait(); os.wait(); os.wait(); os.wait()\n")


async def spawn(sub: BwrapSubstrate, tmp: Path, name: str, prog: str, limits: Limits):
    ws = tmp / name
    ws.mkdir()
    (ws / "prog.py").write_text(prog)
    parent, child = socket.socketpair()
    parent.setblocking(False)
    h = await sub.spawn(LaunchSpec(agent_id=f"{name}-{uuid.uuid4().hex[:6]}", name=name,
                                   argv=[sys.executable, "prog.py"], workspace=ws,
                                   env={"AGENTIX_FD": str(child.fileno())}, channel_fd=child.fileno(),
                                   log_path=tmp / f"{name}.log", limits=limits))
    child.close()
    return h, parent


async def rtts(sock: socket.socket, n: int, gap: float) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await loop.sock_sendall(sock, b"p")
        await loop.sock_recv(sock, 1)
        out.append(time.perf_counter() - t)
        if gap:
            await asyncio.sleep(gap)  # the sibling goes to sleep: each sample is a cold wake-up
    return out


async def main() -> None:
    sub = BwrapSubstrate()
    with tempfile.TemporaryDirectory(prefix="agentix-hog-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)
        sib, sock = await spawn(sub, tmp, "sibling", ECHO, Limits())
        idle_b2b, idle = await rtts(sock, 1000, 0), await rtts(sock, 1000, 0.001)
        hog, _hs = await spawn(sub, tmp, "hog", HOG, Limits(cpu=0.5))
        await asyncio.sleep(0.5)
        busy_b2b, busy = await rtts(sock, 1000, 0), await rtts(sock, 1000, 0.001)
        st = hog.stats()
        await hog.wait()
        sock.close()
        await sib.wait()
        await hog.cleanup()
        await sib.cleanup()
    q = lambda xs, p: sorted(xs)[int(p / 100 * (len(xs) - 1))] * 1e6  # noqa: E731
    fig = {"b2b_idle_p50_us": round(q(idle_b2b, 50), 1), "b2b_hog_p50_us": round(q(busy_b2b, 50), 1),
           "b2b_p50_ratio": round(statistics.median(busy_b2b) / statistics.median(idle_b2b), 2),
           "idle_p50_us": round(q(idle, 50), 1), "idle_p99_us": round(q(idle, 99), 1),
           "hog_p50_us": round(q(busy, 50), 1), "hog_p99_us": round(q(busy, 99), 1),
           "p50_ratio": round(statistics.median(busy) / statistics.median(idle), 2),
           "hog_cpu_throttled": st.get("cpu_nr_throttled"), "load_average": round(os.getloadavg()[0], 2)}
    fig["goal_met"] = fig["b2b_p50_ratio"] <= 2 and fig["p50_ratio"] <= 2
    print(f"back to back round trips    idle p50 {fig['b2b_idle_p50_us']} us, under hog p50 "
          f"{fig['b2b_hog_p50_us']} us (ratio {fig['b2b_p50_ratio']})")
    print(f"spaced 1 ms (cold wake-ups) idle p50 {fig['idle_p50_us']} us p99 {fig['idle_p99_us']} us")
    print(f"                under hog   p50 {fig['hog_p50_us']} us p99 {fig['hog_p99_us']} us "
          f"(ratio {fig['p50_ratio']}, hog throttled {fig['hog_cpu_throttled']} periods)")
    print(json.dumps(fig))


if __name__ == "__main__":
    asyncio.run(main())
