"""BwrapSubstrate driven directly with a real socketpair: layers, fail-closed, cgroups, signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentix.core.errors import IsolationUnavailable
from agentix.core.manifest import Limits
from agentix.sandbox import cgroups, landlock, seccomp
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.bwrap import ALL_LAYERS, BwrapSubstrate, probe
from agentix.sandbox.confine import CONFINE_FAILED, Policy
from agentix.sandbox.doctor import report

HOST_OK = all(s.ok for s in probe().values())
needs_host = pytest.mark.skipif(not HOST_OK, reason="this host cannot provide every isolation layer")


def _reachable_by_anyone(path: str) -> bool:
    """Every directory from / down to ``path`` lets other users through (o+x)."""
    p = Path(path).resolve()
    return all(os.stat(d).st_mode & 0o001 for d in [*reversed(p.parents), p])


import agentix  # noqa: E402

#: without bwrap the agent runs as the sandbox uid on the host tree: this checkout's source
#: and venv must be reachable by that user (a clone inside a 0700 ``mktemp -d`` is not: the
#: agent then fails with "No module named 'agentix'")
RUNTIME_REACHABLE = all(_reachable_by_anyone(p) for p in (
    sys.prefix, str(Path(agentix.__file__).resolve().parents[1])))

CONFINED = "from agentix.sandbox.confine import apply_from_env\napply_from_env()\n"
INSPECT = CONFINED + '''
import json, os
st = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in open("/proc/self/status") if ":" in l}
info = {"uid": os.getresuid(), "fds": sorted(os.listdir("/proc/self/fd")), "env": sorted(os.environ),
        "seccomp": st["Seccomp"], "nnp": st["NoNewPrivs"], "capeff": st["CapEff"], "capbnd": st["CapBnd"],
        "host": os.uname().nodename, "pid": os.getpid(), "cwd": os.getcwd(),
        "visible": [p for p in ("/home", "/var", "/root/.bashrc", "/etc/shadow", "/etc/passwd", "/usr/bin/python3")
                    if os.path.exists(p)]}
os.write(int(os.environ["AGENTIX_FD"]), json.dumps(info).encode() + b"\\n")
'''


def _spec(tmp: Path, program: str, name: str = "t", *, argv=None, limits=None, degraded_ok=False,
          child: socket.socket) -> LaunchSpec:
    ws = tmp / "ws" / name
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "prog.py").write_text(program)
    return LaunchSpec(agent_id=f"{name}-{uuid.uuid4().hex[:6]}", name=name,
                      argv=argv or [sys.executable, "prog.py"], workspace=ws,
                      env={"AGENTIX_FD": str(child.fileno())}, channel_fd=child.fileno(),
                      log_path=tmp / f"{name}.log", limits=limits or Limits(), degraded_ok=degraded_ok)


async def _line(sock: socket.socket, timeout: float = 20) -> dict:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    buf = b""
    while b"\n" not in buf:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
        assert chunk, "channel closed"
        buf += chunk
    return json.loads(buf.split(b"\n")[0])


_SPAWNED: list = []
# each test's cgroups live in a subtree of its own (as a kernel's do, named by its home), never
# in the shared default: other kernels and test runs on this host create, sweep and remove
# groups at the same time, and a test must neither see theirs nor lose its own to them
SUBTREE = f"agentix-test-{uuid.uuid4().hex[:8]}"


def _sub(**kw) -> BwrapSubstrate:
    return BwrapSubstrate(cgroup_name=kw.pop("cgroup_name", SUBTREE), **kw)


@pytest.fixture(autouse=True)
def _reap_everything():
    """Whatever a failing test left behind is killed and its cgroups removed."""
    yield
    for h in _SPAWNED:
        if h._proc.returncode is None:  # a reaped pid may already belong to someone else
            h.signal(signal.SIGKILL)
        asyncio.run(_finish(h))
    _SPAWNED.clear()


@pytest.fixture(autouse=True, scope="module")
def _own_subtree():
    yield
    cgroups.remove_subtree(cgroups.detect(SUBTREE))


async def _finish(h) -> None:
    await h.wait()
    await h.cleanup()


def _cg_dirs_exist(agent_id: str, name: str = SUBTREE) -> list[str]:
    h = cgroups.detect(name)
    return [str(b / agent_id) for b in h.bases.values() if (b / agent_id).exists()]


@needs_host
def test_every_layer_applied_and_visible_inside(tmp_path: Path) -> None:
    async def go():
        parent, child = socket.socketpair()
        spec = _spec(tmp_path, INSPECT, "inspect", child=child)
        h = await _sub().spawn(spec)
        _SPAWNED.append(h)
        child.close()
        info = await _line(parent)
        assert (await h.wait()).code == 0
        assert sorted(h.layers) == sorted(ALL_LAYERS) and h.missing_layers == []
        assert info["uid"] == [65534, 65534, 65534]
        assert info["seccomp"] == "2" and info["nnp"] == "1"
        assert int(info["capeff"], 16) == 0 and int(info["capbnd"], 16) == 0
        assert info["host"] == "agentix" and info["cwd"] == "/workspace" and info["pid"] == 2
        # only stdio, the channel and the listdir descriptor itself
        assert len(info["fds"]) == 5 and spec.env["AGENTIX_FD"] in info["fds"]
        assert "AGENTIX_CONFINE" not in info["env"] and "AGENTIX_CONFINE_FD" not in info["env"]
        assert not any(k.endswith("_API_KEY") for k in info["env"])
        assert info["visible"] == ["/usr/bin/python3"]
        await h.cleanup()
        assert _cg_dirs_exist(spec.agent_id) == []
    asyncio.run(go())


def test_missing_bwrap_fails_closed_naming_the_layer(tmp_path: Path) -> None:
    async def go():
        parent, child = socket.socketpair()
        spec = _spec(tmp_path, INSPECT, "nobwrap", child=child)
        with pytest.raises(IsolationUnavailable) as ei:
            await _sub(bwrap="bwrap-not-installed").spawn(spec)
        assert ei.value.data["layer"] == "namespaces"
        assert ei.value.to_rpc()["data"]["error"] == "isolation_unavailable"
        # nothing ran: no output in the workspace, no cgroup made
        assert sorted(p.name for p in spec.workspace.iterdir()) == ["prog.py"]
        assert _cg_dirs_exist(spec.agent_id) == []
    asyncio.run(go())


@needs_host
@pytest.mark.skipif(not RUNTIME_REACHABLE, reason="the interpreter or this checkout lies under a directory the "
                    "sandbox uid cannot enter (e.g. a 0700 mktemp dir): degraded mode needs them reachable")
def test_degraded_runs_and_lists_exactly_the_missing_layers(tmp_path: Path) -> None:
    # without bwrap the unprivileged agent sees the host tree: its workspace must be reachable
    tmp_path = Path("/tmp") / f"agentix-degraded-{uuid.uuid4().hex[:8]}"
    tmp_path.mkdir(mode=0o755)

    async def go():
        parent, child = socket.socketpair()
        spec = _spec(tmp_path, INSPECT, "degraded", child=child, degraded_ok=True)
        h = await _sub(bwrap="bwrap-not-installed").spawn(spec)
        _SPAWNED.append(h)
        child.close()
        info = await _line(parent)
        await h.wait()
        assert h.missing_layers == ["namespaces", "filesystem"], h.missing_details
        assert {"landlock", "seccomp", "cgroups", "privileges"} <= set(h.layers)
        assert info["uid"] == [65534, 65534, 65534] and info["seccomp"] == "2"
        await h.cleanup()
    try:
        asyncio.run(go())
    finally:
        shutil.rmtree(tmp_path)


@needs_host
def test_program_that_never_confines_is_refused_and_killed(tmp_path: Path) -> None:
    async def go():
        parent, child = socket.socketpair()
        spec = _spec(tmp_path, "import time\ntime.sleep(60)\n", "noconfine", child=child)
        with pytest.raises(IsolationUnavailable) as ei:
            await _sub(confine_timeout=1.5).spawn(spec)
        child.close()
        assert ei.value.data["layer"] == "confine"
        assert _cg_dirs_exist(spec.agent_id) == []
    asyncio.run(go())


def test_confine_fails_closed_when_a_required_layer_is_missing(tmp_path: Path) -> None:
    # run as root outside any sandbox: the privileges layer cannot hold
    if os.geteuid() != 0:
        pytest.skip("needs root to observe the privileges check failing")
    ro = ["/usr", "/lib", "/lib64", "/bin", "/etc", sys.base_prefix, sys.prefix, str(Path(landlock.__file__).parents[2])]
    pol = Policy(required=["privileges"], seccomp="off", landlock_ro=ro, landlock_rw=[str(tmp_path)])
    r = subprocess.run([sys.executable, "-m", "agentix.sandbox.confine", "--", "/usr/bin/touch", str(tmp_path / "ran")],
                       env={**os.environ, "AGENTIX_CONFINE": pol.to_env()}, capture_output=True, text=True)
    assert r.returncode == CONFINE_FAILED
    assert "isolation_unavailable: privileges" in r.stderr
    assert not (tmp_path / "ran").exists()
    degraded = Policy(required=["privileges"], seccomp="off", degraded_ok=True, landlock_ro=ro,
                      landlock_rw=[str(tmp_path)])
    rfd, wfd = os.pipe()
    r = subprocess.run([sys.executable, "-m", "agentix.sandbox.confine", "--", "/usr/bin/touch", str(tmp_path / "ran")],
                       env={**os.environ, "AGENTIX_CONFINE": degraded.to_env(), "AGENTIX_CONFINE_FD": str(wfd)},
                       pass_fds=(wfd,), capture_output=True, text=True)
    os.close(wfd)
    rep = json.loads(os.read(rfd, 65536).decode().splitlines()[0])
    assert r.returncode == 0 and (tmp_path / "ran").exists()
    assert rep["ok"] and [m["layer"] for m in rep["missing"]] == ["privileges", "seccomp"]


@needs_host
def test_stats_freeze_and_sigterm_reach_the_agent(tmp_path: Path) -> None:
    prog = CONFINED + '''
import os, signal, time
fd = int(os.environ["AGENTIX_FD"])
signal.signal(signal.SIGTERM, lambda *a: (os.write(fd, b'{"got":"TERM"}\\n'), os._exit(7)))
os.write(fd, b'{"ready":1}\\n')
while True:
    os.write(fd, b"t")
    time.sleep(0.02)
'''
    async def go():
        parent, child = socket.socketpair()
        spec = _spec(tmp_path, prog, "stats", child=child, limits=Limits(memory="64M", cpu=0.25, pids=8))
        h = await _sub().spawn(spec)
        _SPAWNED.append(h)
        child.close()
        assert (await _line(parent))["ready"] == 1
        st = h.stats()
        assert st["memory_current"] > 0 and st["pids_current"] >= 3 and st["cpu_usage_ns"] > 0
        assert st["oom_kills"] == 0
        assert h.freeze(True)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.2)
        while True:  # drain what was written before the freeze took hold
            try:
                parent.recv(65536)
            except BlockingIOError:
                break
        await asyncio.sleep(0.3)
        with pytest.raises(BlockingIOError):
            parent.recv(65536)
        assert h.freeze(False)
        await asyncio.wait_for(loop.sock_recv(parent, 1), 5)
        h.signal(signal.SIGTERM)
        info = await asyncio.wait_for(h.wait(), 10)
        assert info.code == 7
        await h.cleanup()
        assert _cg_dirs_exist(spec.agent_id) == []
    asyncio.run(go())


def test_seccomp_program_compiles_and_lists_the_documented_calls() -> None:
    bpf = seccomp.bpf_program(False)
    assert len(bpf) % 8 == 0 and len(bpf) > 100
    with_net = seccomp.bpf_program(True)
    assert len(with_net) % 8 == 0 and with_net != bpf
    for name in ("ptrace", "mount", "bpf", "keyctl", "unshare", "setns", "personality", "io_uring_setup"):
        assert name in seccomp.DENY and name in seccomp.__doc__


def test_landlock_denies_outside_paths_in_a_real_process(tmp_path: Path) -> None:
    if landlock.abi_version() < 1:
        pytest.skip("no Landlock")
    (tmp_path / "rw").mkdir()
    (tmp_path / "secret").write_text("s")
    code = f'''
import os, sys
from agentix.sandbox import landlock
import ctypes; ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
landlock.restrict([sys.base_prefix, sys.prefix, "/usr", "{Path(landlock.__file__).parents[2]}"], ["{tmp_path}/rw"])
open("{tmp_path}/rw/ok", "w").write("x")
for p in ("{tmp_path}/secret", "/etc/hostname"):
    try:
        open(p).read(); print("READ", p)
    except PermissionError:
        print("DENIED", p)
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["DENIED", f"{tmp_path}/secret", "DENIED", "/etc/hostname"]
    assert (tmp_path / "rw" / "ok").read_text() == "x"


def test_doctor_reports_every_layer() -> None:
    rows = report()
    assert [r["layer"] for r in rows][: len(ALL_LAYERS)] == list(ALL_LAYERS)
    assert all(isinstance(r["ok"], bool) and isinstance(r["why"], str) for r in rows)
    bad = report(bwrap="bwrap-not-installed")
    assert bad[0]["ok"] is False and "not found" in bad[0]["why"]


@needs_host
def test_modules_planted_in_the_workspace_are_not_imported_before_confinement(tmp_path: Path) -> None:
    async def go():
        parent, child = socket.socketpair()
        spec = _spec(tmp_path, INSPECT, "planted", child=child,
                     argv=[sys.executable, "-m", "agentix.sandbox.confine", "--run", "prog.py"])
        pkg = spec.workspace / "agentix"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("open('/workspace/PWNED', 'w').write('x')\nraise SystemExit(99)\n")
        h = await _sub().spawn(spec)
        _SPAWNED.append(h)
        child.close()
        info = await _line(parent)
        assert (await h.wait()).code == 0
        assert info["seccomp"] == "2" and "landlock" in h.layers
        assert not (spec.workspace / "PWNED").exists()
    asyncio.run(go())


@needs_host
def test_pre_started_launchers_give_the_same_sandbox_and_leave_nothing(tmp_path: Path) -> None:
    async def go():
        name = f"agentix-test-{uuid.uuid4().hex[:8]}"  # a subtree of its own: other kernels run too
        sub = BwrapSubstrate(pool=2, cgroup_name=name)
        await sub.warm()
        assert sub.statistics()["pool_ready"] == 2
        seen = []
        for i in range(3):
            parent, child = socket.socketpair()
            spec = _spec(tmp_path, INSPECT, f"pooled{i}", child=child)
            h = await sub.spawn(spec)
            _SPAWNED.append(h)
            child.close()
            info = await _line(parent)
            assert (await h.wait()).code == 0
            assert sorted(h.layers) == sorted(ALL_LAYERS) and h.missing_layers == []
            assert info["uid"] == [65534, 65534, 65534] and info["seccomp"] == "2"
            assert len(info["fds"]) == 5 and spec.env["AGENTIX_FD"] in info["fds"]
            assert [d.name for d in h._cg.dirs.values()] == [spec.agent_id] * len(h._cg.dirs)
            assert all(d.parent.name == name for d in h._cg.dirs.values())
            await h.cleanup()
            assert _cg_dirs_exist(spec.agent_id, name) == []
            seen.append(spec.agent_id)
            await asyncio.sleep(0.3)  # let the pool refill
        assert sub.statistics()["pooled"] >= 2
        await sub.close()
        h = cgroups.detect(name)
        assert [p for b in h.bases.values() for p in b.glob("slot-*")] == []
        for b in h.bases.values():
            b.rmdir()
    asyncio.run(go())
