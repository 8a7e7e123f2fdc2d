"""Spawn latency: isolated agent spawn-to-first-byte-on-the-channel vs. python and bare bwrap.

Rows (N runs each, sequential):
- ``python -c pass``: fork + exec + exit of the venv interpreter;
- ``bwrap true``: bubblewrap with the agent's namespaces running /usr/bin/true;
- ``bwrap python -c pass``: the same sandbox running the interpreter;
- ``agentix spawn -> first byte``: ``BwrapSubstrate.spawn`` (cgroups, bwrap, seccomp, setpriv,
  confine: rlimits, no_new_privs, Landlock) until the agent's first byte arrives on its
  channel — the moment it can make its first system call.

Goal (issue 3): isolated p50 <= 50 ms, p99 <= 150 ms. Last line: one JSON object of figures.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
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


def timed_run(argv: list[str]) -> list[float]:
    out = []
    for _ in range(N):
        t = time.perf_counter()
        subprocess.run(argv, check=True)
        out.append(time.perf_counter() - t)
    return out


async def agentix_spawns(tmp: Path) -> list[float]:
    sub = BwrapSubstrate()
    sub.status()  # probe once, as the kernel does at start-up
    out = []
    loop = asyncio.get_running_loop()
    for i in range(N):
        ws = tmp / f"a{i}"
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
        out.append(time.perf_counter() - t)
        await h.wait()
        await h.cleanup()
        parent.close()
    return out


def main() -> None:
    rows = {}
    rows["python -c pass"] = timed_run([sys.executable, "-c", "pass"])
    rows["bwrap true"] = timed_run(BWRAP + ["/usr/bin/true"])
    rows["bwrap python -c pass"] = timed_run(BWRAP + [sys.executable, "-c", "pass"])
    with tempfile.TemporaryDirectory(prefix="agentix-bench-") as d:
        Path(d).chmod(0o755)
        rows["agentix spawn -> first byte"] = asyncio.run(agentix_spawns(Path(d)))
    print(f"{'case':32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   (N={N})")
    figures = {}
    for name, xs in rows.items():
        print(f"{name:32} {pct(xs, 50):8.1f} {pct(xs, 99):8.1f} {max(xs) * 1000:8.1f}")
        key = name.split(" ->")[0].replace(" ", "_").replace("-", "")
        figures[f"{key}_p50_ms"] = round(pct(xs, 50), 2)
        figures[f"{key}_p99_ms"] = round(pct(xs, 99), 2)
    figures["goal_met"] = figures["agentix_spawn_p50_ms"] <= 50 and figures["agentix_spawn_p99_ms"] <= 150
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
