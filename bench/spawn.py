"""Spawn latency: isolated agent spawn-to-first-byte-on-the-channel vs. python and bare bwrap.

Cases, run interleaved (one of each per round, N rounds) so that they see the same host load:
- ``python -c pass``: fork + exec + exit of the venv interpreter;
- ``bwrap true``: bubblewrap with the agent's namespaces running /usr/bin/true;
- ``bwrap python -c pass``: the same sandbox running the interpreter;
- ``agentix, no pool``: ``BwrapSubstrate(pool=0).spawn`` (cgroups joined on the spawn path by
  a shell wrapper; a v1 cgroup move costs an RCU grace period) until the agent's first byte
  arrives on its channel — the moment it can make its first system call;
- ``agentix``: the same with a pool of two pre-started launchers (already in a fresh
  cgroup, they only receive argv and descriptors and exec bwrap);
- ``kernel agent.spawn`` (``[kernel] launcher_pool`` 0 and 2): the operator's ``agent.spawn``
  round trip on a real ``agentixd`` (manifest parsing, workspace and program copy, socketpair,
  the sandbox spawn above, process-table entry, events), and ``→ first syscall``: until the
  agent's first system call has been served (its ``syscalls`` counter, polled by the operator
  — an upper bound, within about a millisecond).

Every agentix spawn applies every layer (namespaces, mounts, setpriv, seccomp, Landlock,
rlimits, no_new_privs, cgroups) and is confirmed by the in-sandbox confine report.
Starts: the sandbox substrate (``BwrapSubstrate``) in this process for the substrate rows,
and a kernel daemon (``python -m agentix.kernel.daemon``, strict isolation) for the
``kernel agent.spawn`` rows. Goal (issue 3): isolated p50 <= 50 ms, p99 <= 150 ms. Last
line: one JSON object of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from agentix.sdk import Kernel
from agentix.sdk.errors import KernelNotRunning

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
PROG = ("from agentix.sandbox.confine import apply_from_env\napply_from_env()\n"
        "import os\nos.write(int(os.environ['AGENTIX_FD']), b'x')\n")
# the private /tmp before the runtime binds: a venv under /tmp (a CI clone) stays visible
BWRAP = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-ipc", "--die-with-parent",
         "--new-session", "--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
         "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--ro-bind", sys.base_prefix, sys.base_prefix, "--ro-bind", sys.prefix, sys.prefix,
         "--proc", "/proc", "--dev", "/dev"]


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


KERNEL_PROG = "from agentix.sdk import agent\nagent.connect().tools.echo(message=1)\n"


class RealKernel:
    """An ``agentixd`` on its own home with the given ``[kernel] launcher_pool``."""

    def __init__(self, root: Path, pool: int) -> None:
        self.home = root / f"k{pool}"
        self.home.mkdir()
        (self.home / "config.toml").write_text(f"[kernel]\nlauncher_pool = {pool}\n")
        self.log = open(self.home / "daemon.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentix.kernel.daemon", "--home", str(self.home)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.k = Kernel(self.home, connect_timeout=1)
                break
            except KernelNotRunning:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((self.home / "daemon.log").read_text()[-500:]) from None
                time.sleep(0.05)
        self.prog = root / "first.py"
        self.prog.write_text(KERNEL_PROG)

    def spawn(self) -> tuple[float, float]:
        t = time.perf_counter()
        aid = self.k.spawn({"name": "b", "program": str(self.prog)}).agent_id
        rpc = time.perf_counter() - t
        while self.k.status(aid).raw["syscalls"] < 1:
            time.sleep(0.0005)
        first = time.perf_counter() - t
        self.k.wait(aid, timeout=30)
        return rpc, first

    def close(self) -> None:
        self.k.shutdown()
        self.k.close()
        self.proc.wait(timeout=60)
        self.log.close()


async def main() -> None:
    rows: dict[str, list[float]] = {k: [] for k in (
        "python -c pass", "bwrap true", "bwrap python -c pass", "agentix, no pool", "agentix",
        "kernel agent.spawn, pool 0", "kernel agent.spawn, pool 2",
        "kernel → first syscall, pool 0", "kernel → first syscall, pool 2")}
    nopool, pooled = BwrapSubstrate(pool=0), BwrapSubstrate(pool=2)
    nopool.status()
    await pooled.warm()
    with tempfile.TemporaryDirectory(prefix="agentix-bench-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)
        kernels = {0: RealKernel(tmp, 0), 2: RealKernel(tmp, 2)}
        time.sleep(0.5)
        for _ in range(N):
            rows["python -c pass"].append(await run_cmd([sys.executable, "-c", "pass"]))
            rows["bwrap true"].append(await run_cmd(BWRAP + ["/usr/bin/true"]))
            rows["bwrap python -c pass"].append(await run_cmd(BWRAP + [sys.executable, "-c", "pass"]))
            rows["agentix, no pool"].append(await agentix_spawn(nopool, tmp))
            await asyncio.sleep(0.05)  # agents do not arrive back to back; lets the pool refill
            rows["agentix"].append(await agentix_spawn(pooled, tmp))
            for pool, kern in kernels.items():
                await asyncio.sleep(0.05)
                rpc, first = await asyncio.to_thread(kern.spawn)
                rows[f"kernel agent.spawn, pool {pool}"].append(rpc)
                rows[f"kernel → first syscall, pool {pool}"].append(first)
        stats = pooled.statistics()
        await pooled.close()
        for kern in kernels.values():
            kern.close()
    load = os.getloadavg()[0]
    print(f"{'case (spawn -> first byte)':32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   "
          f"(N={N}, load average {load:.1f}, pooled {stats['pooled']}/{stats['spawns']})")
    figures: dict[str, object] = {"n": N, "load_average": round(load, 2), "pooled": stats["pooled"]}
    for name, xs in rows.items():
        print(f"{name:32} {pct(xs, 50):8.1f} {pct(xs, 99):8.1f} {max(xs) * 1000:8.1f}")
        key = (name.replace(",", "").replace("→ ", "").replace(".", "_").replace(" ", "_")
               .replace("-", ""))
        figures[f"{key}_p50_ms"] = round(pct(xs, 50), 2)
        figures[f"{key}_p99_ms"] = round(pct(xs, 99), 2)
    figures["goal_met"] = figures["agentix_p50_ms"] <= 50 and figures["agentix_p99_ms"] <= 150
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
