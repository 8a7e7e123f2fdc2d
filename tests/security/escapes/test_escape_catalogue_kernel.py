"""The escape catalogue again, each attack a real agent spawned by the kernel.

The same programs as ``test_escape_catalogue.py``, run through ``KernelRoot.spawn`` on the
bwrap backend: the verdict is the agent's result (``sys.exit``), OOM and wall-clock
overruns are the exit reason in the ``agent.exited`` event. Each test asserts the attack
failed visibly and the host (the kernel's $AGENTIX_HOME, keys, a sibling agent's
workspace, listeners, /etc/shadow) did not change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.sandbox import cgroups
from agentix.sandbox.bwrap import BwrapSubstrate, probe
from agentix.sandbox.warm import WarmBwrapSubstrate

HERE = Path(__file__).parent
PROGRAMS = sorted(p.stem for p in (HERE / "programs").glob("*.py"))
PRELUDE = (HERE / "prelude.py").read_text()
SECRET_ENV = "sk-escape-kernel-" + uuid.uuid4().hex

pytestmark = pytest.mark.skipif(
    not all(s.ok for s in probe().values()), reason="this host cannot provide every isolation layer")

LIMITS = {
    "fork_bomb": {"pids": 16}, "memory_bomb": {"memory": "64M"}, "fd_exhaustion": {"nofile": 64},
    "disk_fill": {"disk": "8M"}, "wall_clock_overrun": {"wall_clock": 1.5}, "cpu_hog": {"cpu": 0.5},
}
CTX = {"fork_bomb": {"pids_limit": 16}, "fd_exhaustion": {"nofile": 64}, "cpu_hog": {"hog_seconds": 2.0}}
SLEEPER = "import time\ntime.sleep(120)\n"


def _snapshot(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(skip):
            continue
        if p.is_symlink():
            out[rel] = "symlink->" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.mark.parametrize("start", ["cold", "warm"])
@pytest.mark.parametrize("attack", PROGRAMS)
def test_escape_fails_as_a_kernel_agent(attack: str, start: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``warm``: the attack runs in a pre-confined pool worker (sandbox/warm.py) wherever its
    limits fit the pool's shape (every attack but disk_fill, whose tmpfs size differs)."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_ENV)
    asyncio.run(_run(attack, tmp_path, start))


async def _pool_ready(kernel: KernelRoot) -> None:
    deadline = time.monotonic() + 60
    while kernel.substrate.pool_statistics()["ready"] < 1:
        assert time.monotonic() < deadline, kernel.substrate.pool_statistics()
        await asyncio.sleep(0.05)


async def _run(attack: str, tmp: Path, start: str = "cold") -> None:
    root = tmp / "home"
    home = Home(root)
    home.create()
    own = {"cgroup_name": cgroups.subtree_name(root), "sweep": True}  # this test's own cgroup subtree
    substrate = BwrapSubstrate(**own) if start == "cold" else WarmBwrapSubstrate(
        warm_root=root / "warm", workspace_root=home.workspaces, warm_pool=1, **own)
    kernel = KernelRoot(home, KernelConfig(stop_grace=1.0), substrate=substrate)
    await kernel.start()
    home.keys.mkdir(parents=True, exist_ok=True)
    (home.keys / "root.key").write_text("ROOT-SIGNING-KEY")
    contacts: list[str] = []

    async def on_conn(reader, writer):
        contacts.append("stream")
        writer.close()

    op = await asyncio.start_unix_server(on_conn, path=str(home.socket))
    tcp = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    abstract = "agentix-escape-" + uuid.uuid4().hex[:8]
    ab = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ab.bind("\0" + abstract)
    ab.listen()
    absrv = await asyncio.start_unix_server(on_conn, sock=ab)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    progs = tmp / "progs"
    progs.mkdir()
    (progs / "sleeper.py").write_text(SLEEPER)
    try:
        sibling = await kernel.spawn(parse_manifest({"name": "sibling", "program": str(progs / "sleeper.py")}))
        (sibling.workspace / "secret.txt").write_text("sibling secret")
        name = attack.replace("_", "-")
        ctx = {"name": name, "home": str(root), "sibling_workspace": str(sibling.workspace),
               "kernel_pid": os.getpid(), "sibling_pid": sibling.handle.agent_pid(),
               "operator_socket": str(home.socket), "abstract_socket": abstract,
               "tcp_port": tcp.sockets[0].getsockname()[1], "udp_port": udp.getsockname()[1],
               "secret_env_value": SECRET_ENV, **CTX.get(attack, {})}
        (progs / f"{attack}.py").write_text(PRELUDE + "\n" + (HERE / "programs" / f"{attack}.py").read_text())
        shadow = hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest()
        # agentix.db* is the kernel's own store (the audit log grows with every event); it
        # is checked by verifying the audit chain instead
        if start == "warm":
            await _pool_ready(kernel)  # the sibling took the first worker
        # warm/: the pool's placeholders (one is renamed to the attack's workspace)
        before = _snapshot(root, ("workspaces/ag-", "logs", "events", "agentix.db", "warm"))
        sib_before = _snapshot(sibling.workspace, ())
        manifest = parse_manifest({"name": name, "program": str(progs / f"{attack}.py"),
                                   "limits": LIMITS.get(attack, {}),
                                   "env": {"ESCAPE_CTX": json.dumps(ctx), "ESCAPE_MODE": "kernel"}})
        rec = await kernel.spawn(manifest)
        # the agent's cgroups, named now: cleanup empties the handle's own list as it removes them
        cg_dirs = list(rec.handle._cg.dirs.values()) if rec.handle is not None and rec.handle._cg else []
        assert rec.isolation["missing_layers"] == [] and "seccomp" in rec.isolation["layers"]
        assert rec.isolation["start"] == ("warm" if start == "warm" and attack != "disk_fill" else "cold")
        if attack == "leftover_processes":
            await _wait_log(rec.log_path, "VERDICT")
            pids = set(rec.handle.pids())
            assert len(pids) >= 4  # bwrap x2, the agent, the daemonised grandchild
            await kernel.kill(rec)
            await kernel.wait(rec, 10)
            assert await _all_gone(pids), [p for p in pids if _alive(p)]
        elif attack == "cpu_hog":
            # four busy processes against a 0.5 CPU quota: between two samples the group uses
            # at most its quota (50 ms) per period the cgroup counted it running, plus one
            # period either side for the two samples' reads. Judged by the cgroup's own count,
            # not the wall clock: the hog ran before spawn returned (longer on a loaded host),
            # and a wall-clock bound from then charged that head start to the quota
            cpu_dir = rec.handle._cg.dirs["cpu"] if "cpu" in rec.handle._cg.dirs else None
            assert cpu_dir is None or (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
            await asyncio.sleep(0.6)  # a head start, as on a loaded host: the bound must not mind it
            first: dict = {}
            seen: dict = {}
            while rec.live:
                seen = kernel.status(rec)["resources"] or seen
                first = first or seen
                if seen:
                    used = seen["cpu_usage_ns"] - first["cpu_usage_ns"]
                    assert used <= 50e6 * (seen["cpu_nr_periods"] - first["cpu_nr_periods"] + 2), (first, seen)
                await asyncio.sleep(0.2)
            assert seen.get("cpu_usage_ns") and seen["cpu_nr_periods"] > first["cpu_nr_periods"], (first, seen)
            await kernel.wait(rec, 60)
        else:
            await kernel.wait(rec, 60)
        exited = [e for e in kernel.audit.sink.tail(agent=rec.agent_id, kind="agent.exited")]
        assert exited, kernel.audit.sink.tail(agent=rec.agent_id)
        reason = rec.exit.reason
        log = rec.log_path.read_text(errors="replace") if rec.log_path.exists() else ""
        if attack == "memory_bomb":
            # no RLIMIT_AS: the memory cgroup stops it, and the kernel reports it as such
            assert reason == "oom" and rec.result is None, (reason, rec.result, log)
            assert exited[0]["data"]["reason"] == reason
        elif attack == "wall_clock_overrun":
            assert reason == "timeout" and exited[0]["data"]["reason"] == "timeout"
        elif attack == "leftover_processes":
            assert reason == "killed"
        else:
            assert reason == "completed", (reason, rec.exit, log[-2000:])
            v = rec.result
            assert v is not None and v["escaped"] is False, v
            if attack != "cpu_hog":  # the hog "succeeds"; its containment is the throttling above
                assert any(r[0] == "error" and r[1] for r in v["results"]), v
        # the host did not move
        assert hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest() == shadow
        assert _snapshot(root, ("workspaces/ag-", "logs", "events", "agentix.db", "warm")) == before
        if getattr(kernel, "audit", None) is not None:
            assert kernel.audit.log.verify().ok
        assert _snapshot(sibling.workspace, ()) == sib_before
        assert sibling.live, "the sibling agent was harmed"
        assert contacts == []
        with pytest.raises(BlockingIOError):
            udp.recv(100)
        for m in ("/usr/agentix-escape", "/etc/agentix-escape", "/agentix-escape", "/root/agentix-escape"):
            assert not os.path.exists(m)
        assert not [d for d in cg_dirs if d.exists()], "the agent's cgroups outlived it"
    finally:
        await kernel.shutdown(grace=1.0)
        for s in (op, tcp, absrv):
            s.close()
        udp.close()


async def _all_gone(pids: set[int], timeout: float = 5.0) -> bool:
    """True once none of ``pids`` is alive (a task may finish exiting after leaving its cgroup)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _wait_log(path: Path, needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")

