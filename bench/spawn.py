"""Spawn latency: isolated agent spawn-to-first-byte-on-the-channel vs. python and bare bwrap.

Cases, run interleaved (one of each per round, N rounds) so that they see the same host load:
- ``python -c pass``: fork + exec + exit of the venv interpreter;
- ``bwrap true``: bubblewrap with the agent's namespaces running /usr/bin/true;
- ``bwrap python -c pass``: the same sandbox running the interpreter;
- ``agentix, no pool``: ``BwrapSubstrate(pool=0).spawn`` (cgroups joined on the spawn path by
  a shell wrapper; a v1 cgroup move costs an RCU grace period) until the agent's first byte
  arrives on its channel — the moment it can make its first system call;
- ``agentix``: the same with the default pool of pre-started launchers (already in a fresh
  cgroup, they only receive argv and descriptors and exec bwrap).

Every agentix spawn applies every layer (namespaces, mounts, setpriv, seccomp, Landlock,
rlimits, no_new_privs, cgroups) and is confirmed by the in-sandbox confine report.
Goal (issue 3): isolated p50 <= 50 ms, p99 <= 150 ms. Last line: one JSON object of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agentix.core.manifest import Limits
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.bwrap import BwrapSubstrate

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
PROG = ("from agentix.sandbox.confine import apply_from_env\napply_from_env()\n"
        "import os\nos.write(int(os.environ['AGENTIX_FD']), b'x')\n")
BWRAP = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-ipc", "--die-with-parent",
         "--new-session", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
         "--symlink", "usr/lib64", "/lib64", "--ro-bind", sys.base_prefix, sys.base_prefix,
         "--ro-bind", sys.prefix, sys.prefix, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000


async def run_cmd(argv: list[str]) -> float:
    t = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv)
    assert await proc.wait() == 0
    return time.perf_counter() - t


async def agentix_spawn(sub: BwrapSubstrate, tmp: Path) -> float:
    loop = asyncio.get_running_loop()
    ws = tmp / uuid.uuid4().hex[:10]
    ws.mkdir()
    (ws / "prog.py").write_text(PROG)
    parent, child = socket.socketpair()
    parent.setblocking(False)
    spec = LaunchSpec(agent_id=f"bench-{uuid.uuid4().hex[:8]}", name="bench",
                      argv=[sys.executable, "prog.py"], workspace=ws,
                      env={"AGENTIX_FD": str(child.fileno())}, channel_fd=child.fileno(),
                      log_path=tmp / "log", limits=Limits())
    t = time.perf_counter()
    h = await sub.spawn(spec)
    child.close()
    assert await loop.sock_recv(parent, 1) == b"x"
    dt = time.perf_counter() - t
    assert not h.missing_layers
    await h.wait()
    await h.cleanup()
    parent.close()
    return dt


async def main() -> None:
    rows: dict[str, list[float]] = {k: [] for k in (
        "python -c pass", "bwrap true", "bwrap python -c pass", "agentix, no pool", "agentix")}
    nopool, pooled = BwrapSubstrate(pool=0), BwrapSubstrate(pool=2)
    nopool.status()
    await pooled.warm()
    with tempfile.TemporaryDirectory(prefix="agentix-bench-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)
        for _ in range(N):
            rows["python -c pass"].append(await run_cmd([sys.executable, "-c", "pass"]))
            rows["bwrap true"].append(await run_cmd(BWRAP + ["/usr/bin/true"]))
            rows["bwrap python -c pass"].append(await run_cmd(BWRAP + [sys.executable, "-c", "pass"]))
            rows["agentix, no pool"].append(await agentix_spawn(nopool, tmp))
            await asyncio.sleep(0.05)  # agents do not arrive back to back; lets the pool refill
            rows["agentix"].append(await agentix_spawn(pooled, tmp))
        stats = pooled.statistics()
        await pooled.close()
    load = os.getloadavg()[0]
    print(f"{'case (spawn -> first byte)':28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   "
          f"(N={N}, load average {load:.1f}, pooled {stats['pooled']}/{stats['spawns']})")
    figures: dict[str, object] = {"n": N, "load_average": round(load, 2), "pooled": stats["pooled"]}
    for name, xs in rows.items():
        print(f"{name:28} {pct(xs, 50):8.1f} {pct(xs, 99):8.1f} {max(xs) * 1000:8.1f}")
        key = name.replace(",", "").replace(" ", "_").replace("-", "")
        figures[f"{key}_p50_ms"] = round(pct(xs, 50), 2)
        figures[f"{key}_p99_ms"] = round(pct(xs, 99), 2)
    figures["goal_met"] = figures["agentix_p50_ms"] <= 50 and figures["agentix_p99_ms"] <= 150
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
