"""The escape catalogue: every program in programs/ is an attack run as a real sandboxed agent.

Each attack runs through ``BwrapSubstrate`` with a real socketpair channel (the kernel is
not on this branch yet), prints a JSON verdict on the channel, and the test asserts:
1. the attack failed, and the failure is visible (the verdict names the errno, or the exit
   record says ``oom`` / killed);
2. the host did not change: $AGENTIX_HOME, the sibling workspace and /etc/shadow are
   byte-for-byte the same, no marker file appeared, no listener saw a connection, no
   process or cgroup of the agent is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentix.core.manifest import Limits
from agentix.sandbox import cgroups
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.bwrap import BwrapSubstrate, probe

HERE = Path(__file__).parent
PROGRAMS = sorted(p.stem for p in (HERE / "programs").glob("*.py"))
PRELUDE = (HERE / "prelude.py").read_text()
SECRET_ENV = "sk-escape-test-" + uuid.uuid4().hex

pytestmark = pytest.mark.skipif(
    not all(s.ok for s in probe().values()), reason="this host cannot provide every isolation layer")


@dataclass
class Special:
    limits: dict = field(default_factory=dict)
    mode: str = "verdict"          # verdict | oom | timeout | kill_after_start | hog
    ctx: dict = field(default_factory=dict)


SPECIAL = {
    "fork_bomb": Special(limits={"pids": 16}, ctx={"pids_limit": 16}),
    "memory_bomb": Special(limits={"memory": "64M"}, mode="oom"),
    "fd_exhaustion": Special(limits={"nofile": 64}, ctx={"nofile": 64}),
    "disk_fill": Special(limits={"disk": "8M"}),
    "wall_clock_overrun": Special(limits={"wall_clock": 1.0}, mode="timeout"),
    "leftover_processes": Special(mode="kill_after_start"),
    "cpu_hog": Special(limits={"cpu": 0.5}, mode="hog", ctx={"hog_seconds": 3.0}),
}
MARKERS = ["/usr/agentix-escape", "/etc/agentix-escape", "/agentix-escape", "/root/agentix-escape"]


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "symlink->" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root))] = "dir" if p.is_dir() else "other"
    return out


class Host:
    """A fake $AGENTIX_HOME with keys, a sibling workspace and listeners that count contacts."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        (self.home / "keys").mkdir(parents=True)
        (self.home / "keys" / "root.key").write_text("ROOT-SIGNING-KEY")
        os.chmod(self.home / "keys" / "root.key", 0o600)
        (self.home / "agentix.db").write_bytes(b"SQLite format 3\0secret rows")
        self.sibling_ws = self.home / "workspaces" / "sibling"
        self.sibling_ws.mkdir(parents=True)
        (self.sibling_ws / "secret.txt").write_text("sibling secret")
        self.contacts: list[str] = []
        self.op_path = str(self.home / "agentix.sock")
        self.abstract = "agentix-escape-" + uuid.uuid4().hex[:8]

    async def listen(self) -> None:
        async def on_conn(reader, writer):
            self.contacts.append("stream")
            writer.close()

        self.servers = [
            await asyncio.start_unix_server(on_conn, path=self.op_path),
            await asyncio.start_server(on_conn, "127.0.0.1", 0),
        ]
        self.tcp_port = self.servers[1].sockets[0].getsockname()[1]
        ab = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ab.bind("\0" + self.abstract)
        ab.listen()
        self.servers.append(await asyncio.start_unix_server(on_conn, sock=ab))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.udp_port = self.udp.getsockname()[1]

    def udp_received(self) -> bool:
        try:
            self.udp.recv(100)
            return True
        except BlockingIOError:
            return False

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        self.udp.close()


async def _spawn(sub: BwrapSubstrate, host: Host, name: str, program: str, ctx: dict, limits: dict,
                 tmp: Path):
    ws = host.home / "workspaces" / name
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "prog.py").write_text(PRELUDE + "\n" + program)
    parent, child = socket.socketpair()
    spec = LaunchSpec(
        agent_id=f"{name}-{uuid.uuid4().hex[:6]}", name=name,
        argv=[sys.executable, "-m", "agentix.sandbox.confine", "--run", "prog.py"],
        workspace=ws, env={"AGENTIX_FD": str(child.fileno()), "ESCAPE_CTX": json.dumps(ctx)},
        channel_fd=child.fileno(), log_path=tmp / f"{name}.log", limits=Limits(**limits))
    try:
        handle = await sub.spawn(spec)
    finally:
        child.close()
    parent.setblocking(False)
    return handle, parent, ws


async def _read_lines(sock: socket.socket, timeout: float) -> list[dict]:
    loop = asyncio.get_running_loop()
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return [json.loads(x) for x in buf.splitlines() if x.strip()]


async def _first_line(sock: socket.socket, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    buf = b""
    while b"\n" not in buf:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
        assert chunk, "the agent closed its channel without a verdict"
        buf += chunk
    return json.loads(buf.split(b"\n")[0])


def _processes_in(agent_pids: set[int]) -> list[int]:
    return [p for p in agent_pids if Path(f"/proc/{p}").exists()
            and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]]


async def _echo_rtts(sock: socket.socket, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await loop.sock_sendall(sock, b"p")
        await loop.sock_recv(sock, 1)
        out.append(time.perf_counter() - t)
    return out


ECHO = '''
fd = int(os.environ["AGENTIX_FD"])
while True:
    b = os.read(fd, 1)
    if not b:
        break
    os.write(fd, b)
'''


@pytest.mark.parametrize("attack", PROGRAMS)
def test_escape_fails(attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_ENV)
    asyncio.run(_run_attack(attack, tmp_path))


async def _run_attack(attack: str, tmp: Path) -> None:
    sub = BwrapSubstrate(cgroup_name=cgroups.subtree_name(tmp), sweep=True)  # its own subtree, not the shared one
    host = Host(tmp)
    await host.listen()
    leak_r, leak_w = os.pipe()  # an inheritable host descriptor the agent must not receive
    os.set_inheritable(leak_r, True)
    special = SPECIAL.get(attack, Special())
    shadow_before = hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest()
    home_before = _snapshot(host.home)
    sibling = None
    spawned: list = []
    try:
        sibling, sib_chan, _ = await _spawn(sub, host, "sibling", ECHO, {}, {}, tmp)
        sibling_pid = sibling.agent_pid()
        assert sibling_pid
        home_before = _snapshot(host.home)
        ctx = {"name": attack.replace("_", "-"), "home": str(host.home),
               "sibling_workspace": str(host.sibling_ws), "kernel_pid": os.getpid(),
               "sibling_pid": sibling_pid, "operator_socket": host.op_path,
               "abstract_socket": host.abstract, "tcp_port": host.tcp_port, "udp_port": host.udp_port,
               "secret_env_value": SECRET_ENV, **special.ctx}
        program = (HERE / "programs" / f"{attack}.py").read_text()
        idle = await _echo_rtts(sib_chan, 300) if special.mode == "hog" else []
        handle, chan, ws = await _spawn(sub, host, ctx["name"], program, ctx, special.limits, tmp)
        spawned.append(handle)
        agent_pids = set()

        if special.mode in ("timeout", "kill_after_start"):
            first = await _first_line(chan, 10)
            assert first["phase"] == "started"
            await asyncio.sleep(0.3)
            agent_pids = set(handle._cg.pids()) if handle._cg else set()
            assert len(agent_pids) >= 3
            if special.mode == "timeout":
                # the kernel enforces wall_clock; the substrate gives it wait() and SIGKILL
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(handle.wait()), special.limits["wall_clock"])
            handle.signal(signal.SIGKILL)
            info = await asyncio.wait_for(handle.wait(), 10)
            assert info.signal == signal.SIGKILL or info.code is None or info.code != 0
            verdicts = []
        elif special.mode == "hog":
            await asyncio.sleep(0.5)
            busy = await _echo_rtts(sib_chan, 300)
            verdicts = await _read_lines(chan, 30)
            stats = handle.stats()
            info = await asyncio.wait_for(handle.wait(), 30)
            idle_p50, busy_p50 = statistics.median(idle), statistics.median(busy)
            print(f"sibling echo rtt p50 idle={idle_p50*1e6:.0f}us under hog={busy_p50*1e6:.0f}us; {stats}")
            # 4 busy processes for 3 s would use ~6 CPU-s on 2 cores; the quota allows 0.5 CPU
            # (throttling shows in nr_throttled unless host contention already held it lower)
            assert (handle._cg.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert stats["cpu_usage_ns"] < 0.5 * 1e9 * (3.0 + 1.5), stats
            # the sibling was answered all 300 times while the hog ran (_echo_rtts returned); how
            # fast (goal: p50 at most twice idle) is bench/cpu_hog.py's to judge, not a test's:
            # a latency ratio fails on a loaded host (it did, at load 11)
        else:
            verdicts = await _read_lines(chan, 60)
            info = await asyncio.wait_for(handle.wait(), 60)
            stats = handle.stats()

        log = (tmp / f"{ctx['name']}.log").read_text(errors="replace")
        if special.mode == "oom":
            assert info.oom and info.signal == signal.SIGKILL and verdicts == [], (info, verdicts, log)
        elif special.mode == "verdict":
            assert verdicts, f"no verdict from {attack}; exit {info}; log: {log[-2000:]}"
            v = verdicts[0]
            assert v["escaped"] is False, v
            # the failure is visible: some step reports the error it got
            assert any(r[0] == "error" and r[1] for r in v["results"]), v
        await handle.cleanup()
        deadline = time.monotonic() + 5  # a killed task may finish exiting after leaving its cgroup
        while _processes_in(agent_pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert _processes_in(agent_pids) == []
        assert not [p for p in _cgroup_dirs(handle)], "agent cgroups were not removed"

        # the host is unchanged
        await asyncio.sleep(0)
        assert hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest() == shadow_before
        home_after = _snapshot(host.home)
        home_after = {k: v for k, v in home_after.items() if not k.startswith(f"workspaces/{ctx['name']}")}
        home_before_cmp = {k: v for k, v in home_before.items() if not k.startswith(f"workspaces/{ctx['name']}")}
        assert home_after == home_before_cmp
        for m in MARKERS:
            assert not os.path.exists(m), m
        assert host.contacts == [], host.contacts
        assert not host.udp_received()
        assert os.environ["OPENAI_API_KEY"] == SECRET_ENV
        if attack == "disk_fill":
            assert (ws / "fill.bin").stat().st_size <= 8 * 1024 * 1024
        if attack == "signal_sibling":
            assert Path(f"/proc/{sibling_pid}").exists()
    finally:
        for h in spawned:  # a failed assertion must not leave the attacker running
            h.signal(signal.SIGKILL)
            await h.wait()
            await h.cleanup()
        os.close(leak_r)
        os.close(leak_w)
        if sibling is not None:
            sibling.signal(signal.SIGKILL)
            await sibling.wait()
            await sibling.cleanup()
        await sub.close()  # removes its own (now empty) cgroup subtree
        await host.close()


def _cgroup_dirs(handle) -> list[Path]:
    cg = handle._cg
    return [] if cg is None else [d for d in cg.dirs.values() if d.exists()]
