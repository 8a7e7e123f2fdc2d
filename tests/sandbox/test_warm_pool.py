"""Warm agents (sandbox/warm.py) on a real kernel, real bwrap workers, real cgroups.

A warm spawn must be indistinguishable from a cold one from inside (descriptors,
environment, identity, limits, workspace, refusals); a worker holds nothing before it is
assigned, is verified from outside before it gets a program (and killed, audited, never
used when that fails), is used once, and never outlives its kernel. The escape catalogue
runs against warm agents too (tests/security/escapes/test_escape_catalogue_kernel.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.manifest import Limits, parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.sandbox import cgroups
from agentix.sandbox.base import LaunchSpec
from agentix.sandbox.bwrap import DEFAULT_LIMITS, probe
from agentix.sandbox.warm import BOOT_ARGV, MIN_MEMORY, MIN_PIDS, WORKER_ENV, WarmBwrapSubstrate, cold_reason

HOST_OK = all(s.ok for s in probe().values())
needs_host = pytest.mark.skipif(not HOST_OK, reason="this host cannot provide every isolation layer")

PROBE = r'''
import json, os, resource, socket, sys
st = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in open("/proc/self/status") if ":" in l}
fds = sorted(int(x) for x in os.listdir("/proc/self/fd"))
kinds = {}
for fd in fds:
    try:
        kinds[fd] = os.readlink(f"/proc/self/fd/{fd}").split(":")[0]
    except OSError:
        pass
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("1.1.1.1", 80))
    net = "open"
except OSError as err:
    net = type(err).__name__
from agentix.sdk import agent
k = agent.connect()
try:
    k.tools.call("file_read", {"path": "/etc/passwd"})
    refused = None
except Exception as err:
    refused = getattr(err, "code", type(err).__name__)
k.exit({
    "uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(),
    "fd_kinds": sorted(v for f, v in kinds.items() if f != int(os.environ["AGENTIX_FD"])),
    "identity_fd_is_socket": kinds.get(int(os.environ["AGENTIX_FD"])) == "socket",
    "env": {n: os.environ[n] for n in sorted(os.environ) if n not in ("AGENTIX_AGENT_ID", "AGENTIX_AGENT_NAME", "AGENTIX_FD")},
    "agent_id": os.environ["AGENTIX_AGENT_ID"],
    "status": {x: st[x] for x in ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "CapAmb")},
    "rlimits": {n: resource.getrlimit(getattr(resource, "RLIMIT_" + n)) for n in ("NOFILE", "FSIZE", "CORE")},
    "host": os.uname().nodename, "cwd": os.getcwd(), "argv": sys.argv, "pid": os.getpid(),
    "workspace": sorted((e.name, e.stat(follow_symlinks=False).st_uid) for e in os.scandir("/workspace")),
    "ws_owner": os.stat("/workspace").st_uid, "tmp": sorted(os.listdir("/tmp")),
    "net": net, "refused": refused,
})
'''
SLEEPER = "import time\ntime.sleep(120)\n"


async def _kernel(tmp: Path, warm: int = 2, **cfg: Any) -> KernelRoot:
    home = Home(tmp / "h")
    home.create()
    k = KernelRoot(home, KernelConfig(stop_grace=1.0, warm_pool=warm, **cfg))
    await k.start()
    return k


async def _ready(k: KernelRoot, n: int, timeout: float = 60) -> list[Any]:
    sub = k.substrate
    assert isinstance(sub, WarmBwrapSubstrate)
    deadline = time.monotonic() + timeout
    while len(sub._workers) < n:
        assert time.monotonic() < deadline, f"the pool never held {n} workers: {sub.pool_statistics()}"
        await asyncio.sleep(0.05)
    return list(sub._workers)


async def _run(k: KernelRoot, prog: Path, **manifest: Any) -> Any:
    rec = await k.spawn(parse_manifest({"name": "probe", "program": str(prog), **manifest}))
    await k.wait(rec, 60)
    return rec


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _events(k: KernelRoot, kind: str) -> list[dict[str, Any]]:
    return [e for e in k.audit.sink.tail(kind=kind, limit=1000)]


# ------------------------------------------------------------------ shape (pure)
BOOT = [*BOOT_ARGV, "prog.py"]


@settings(max_examples=400, deadline=None)
@given(network=st.booleans(), extra=st.booleans(), within=st.booleans(),
       argv=st.sampled_from(["boot", "boot-bare", "shell", "other-python"]),
       disk=st.sampled_from([DEFAULT_LIMITS.disk, 8 * 1024**2, 2 * DEFAULT_LIMITS.disk]),
       nofile=st.integers(16, 4096), memory=st.integers(16 * 1024**2, 2 * 1024**3),
       pids=st.integers(8, 512), home=st.sampled_from(["/workspace", "/root", None]),
       warm_fd=st.booleans(), path=st.sampled_from([WORKER_ENV["PATH"], "/tmp/evil:/usr/bin"]),
       inner=st.dictionaries(st.sampled_from(["LOG_LEVEL", "MODE", "X1"]), st.text(max_size=5), max_size=3))
def test_every_spawn_outside_the_pool_shape_goes_cold(network, extra, within, argv, disk, nofile, memory,
                                                       pids, home, warm_fd, path, inner) -> None:
    argvs = {"boot": BOOT, "boot-bare": list(BOOT_ARGV), "shell": ["/bin/sh", "-c", "true"],
             "other-python": ["/usr/bin/python3", *BOOT[1:]]}
    env = {**inner, "PATH": path, "LANG": "C.UTF-8", "AGENTIX_FD": "9", "AGENTIX_AGENT_ID": "ag-1",
           "AGENTIX_AGENT_NAME": "a"}
    if home is not None:
        env["HOME"] = home
    if warm_fd:
        env["AGENTIX_WARM_FD"] = "5"
    spec = LaunchSpec(agent_id="ag-1", name="a", argv=argvs[argv], workspace=Path("/nonexistent"), env=env,
                      channel_fd=9, log_path=Path("/nonexistent.log"), limits=Limits(), network=network,
                      extra_ro_paths=(Path("/opt"),) if extra else (),
                      within=object() if within else None)  # type: ignore[arg-type]
    limits = Limits(memory=memory, pids=pids, nofile=nofile, disk=disk).merged_over(DEFAULT_LIMITS)
    # the reference model: the shape written out once more, field by field
    fits = (not network and not extra and not within and argv == "boot" and disk == DEFAULT_LIMITS.disk
            and nofile <= DEFAULT_LIMITS.nofile and memory >= MIN_MEMORY and pids >= MIN_PIDS
            and home == "/workspace" and not warm_fd and path == WORKER_ENV["PATH"])
    reason = cold_reason(spec, limits, DEFAULT_LIMITS)
    assert (reason is None) == fits, (reason, fits)


# ------------------------------------------------------------------ warm == cold
@needs_host
def test_a_warm_agent_is_indistinguishable_from_a_cold_one(tmp_path: Path) -> None:
    async def body() -> None:
        prog = tmp_path / "probe.py"
        prog.write_text(PROBE)
        seen = {}
        for mode, n in (("warm", 1), ("cold", 0)):
            k = await _kernel(tmp_path / mode, warm=n)
            try:
                if n:
                    await _ready(k, 1)
                rec = await _run(k, prog, capabilities=["file_read: /data/*"], env={"LOG_LEVEL": "debug"},
                                 limits={"nofile": 128})
                assert rec.exit.reason == "completed", rec.log_path.read_text()
                assert rec.isolation["start"] == mode
                spawned = [e for e in _events(k, "agent.spawned") if e["agent"] == rec.agent_id]
                assert spawned[0]["data"]["isolation"]["start"] == mode
                res = dict(rec.result)
                assert res.pop("agent_id") == rec.agent_id  # the identity is the one given at spawn
                seen[mode] = (res, rec.isolation["layers"], rec.isolation["missing_layers"])
            finally:
                await k.shutdown(grace=1.0)
        (warm, wl, wm), (cold, cl, cm) = seen["warm"], seen["cold"]
        assert wl == cl and wm == cm == []
        warm.pop("pid"), cold.pop("pid")
        assert warm == cold
        assert warm["refused"] == "capability_denied" and warm["net"] != "open"
        assert warm["rlimits"]["NOFILE"] == [128, 128] and warm["host"] == "agentix"
        assert warm["env"]["LOG_LEVEL"] == "debug" and "AGENTIX_WARM_FD" not in warm["env"]
        # the private /tmp is empty but for the mount points of the runtime's read-only binds
        # (a venv or checkout that lives under /tmp on the host, as in a fresh CI clone)
        import agentix

        runtime = {sys.prefix, sys.base_prefix, str(Path(agentix.__file__).resolve().parents[1])}
        expected = sorted({Path(p).relative_to("/tmp").parts[0] for p in runtime if p.startswith("/tmp/")})
        assert warm["workspace"] == [["probe.py", 65534]] and warm["tmp"] == expected

    asyncio.run(body())


# ------------------------------------------------------------------ a worker holds nothing
def _pidfd_getfd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd (same number on x86_64 and arm64)
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return got
    finally:
        os.close(pidfd)


@needs_host
def test_an_idle_worker_holds_no_identity_and_poking_its_socket_gets_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            (w,) = await _ready(k, 1)
            pid = w.handle.agent_pid()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            names = {e.split(b"=", 1)[0].decode() for e in environ if e}
            assert not names & {"AGENTIX_FD", "AGENTIX_AGENT_ID", "AGENTIX_AGENT_NAME"}  # the policy only
            links = {int(f): os.readlink(f"/proc/{pid}/fd/{f}") for f in os.listdir(f"/proc/{pid}/fd")}
            sockets = [f for f, t in links.items() if t.startswith("socket:")]
            assert len(sockets) == 1, links  # the control socket only
            assert list(w.placeholder.iterdir()) == []
            assert len(k.table) == 0 and k.caps.tokens_of(w.wid) == []
            calls, audit_before = k.pipeline.calls, len(k.audit.sink.tail(limit=10_000))
            # as the worker: speak JSON-RPC on its only socket (what a hijacked worker could do)
            stolen = socket.socket(fileno=_pidfd_getfd(pid, sockets[0]))
            req = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sys.info", "params": {}}).encode()
            stolen.send(len(req).to_bytes(4, "big") + req)
            stolen.send(req + b"\n")
            await asyncio.sleep(0.5)
            stolen.setblocking(False)
            with pytest.raises(BlockingIOError):
                stolen.recv(100)  # no answer: nothing serves system calls on a worker's socket
            stolen.close()
            assert k.pipeline.calls == calls
            kinds = [e["kind"] for e in k.audit.sink.tail(limit=10_000)[audit_before:]]
            assert not [x for x in kinds if x.startswith(("tool.", "capability."))], kinds
            # the worker that spoke out of turn is rejected at assignment, the spawn is not harmed
            prog = tmp_path / "p.py"
            prog.write_text("import os\nfrom agentix.sdk import agent\nagent.connect().exit(os.getpid())\n")
            rec = await _run(k, prog)
            assert rec.exit.reason == "completed" and rec.isolation["start"] == "cold"
            rej = _events(k, "worker.rejected")
            assert rej and rej[-1]["data"]["worker"] == w.wid
            assert rej[-1]["data"]["mismatches"][-1]["layer"] == "control"
            assert await _gone([pid]) and not w.placeholder.exists()
            assert not [d for d in w.cg.dirs.values() if d.exists()]
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_a_worker_that_fails_verification_is_killed_audited_and_never_used(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            (w,) = await _ready(k, 1)
            pid = w.handle.agent_pid()
            # its confinement changes after it reported ready (moved out of its limited group
            # into a limit-less one): the outside check at assignment must see it
            decoy = cgroups.CgroupSet.create(k.substrate._hierarchy, "decoy", cgroups.CgroupSpec())
            for f in decoy.procs_files:
                Path(f).write_text(str(pid))
            prog = tmp_path / "p.py"
            prog.write_text("import os\nfrom agentix.sdk import agent\n"
                            "agent.connect().exit(sorted(os.listdir('/workspace')))\n")
            rec = await _run(k, prog)
            assert rec.exit.reason == "completed" and rec.result == ["p.py"]
            assert rec.isolation["start"] == "cold" and rec.handle.agent_pid() != pid
            rej = _events(k, "worker.rejected")
            assert len(rej) == 1 and rej[0]["data"]["worker"] == w.wid and rej[0]["data"]["when"] == "assignment"
            assert rej[0]["data"]["mismatches"][0]["layer"] == "cgroups"
            assert await _gone([pid])
            assert decoy.pids() == []
            decoy.remove()
            assert not w.placeholder.exists() and not [d for d in w.cg.dirs.values() if d.exists()]
            assert k.substrate.pool_statistics()["rejected"] == 1
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_a_worker_that_fails_verification_when_ready_never_joins_the_pool(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The outside check at ready time is BwrapSubstrate's (sandbox/verify.py); here it is made
    to report a mismatch (a host whose check fails cannot be built on demand), and every worker
    it judged is killed, audited and never handed a spawn."""
    from agentix.sandbox import verify

    real = verify.check
    judged: list[int] = []

    def failing(pid: int, **kw: Any) -> list[dict[str, str]]:
        judged.append(pid)
        return [{"layer": "seccomp", "why": "Seccomp is '0', expected 2 (test)"}]

    monkeypatch.setattr(verify, "check", failing)

    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            deadline = time.monotonic() + 60
            while len(_events(k, "worker.rejected")) < 1:
                assert time.monotonic() < deadline, k.substrate.pool_statistics()
                await asyncio.sleep(0.05)
            assert k.substrate._workers == []
            rej = _events(k, "worker.rejected")[0]["data"]
            assert rej["when"] == "ready" and rej["mismatches"][0]["layer"] == "seccomp"
            assert judged and await _gone(judged)
            monkeypatch.setattr(verify, "check", real)
            prog = tmp_path / "s.py"
            prog.write_text(SLEEPER)
            rec = await k.spawn(parse_manifest({"name": "s", "program": str(prog)}))
            # cold, or a worker started after the check was restored: never one it failed
            pid = rec.handle.agent_pid()
            assert rec.live and pid is not None and pid not in judged
            await k.kill(rec)
            assert not list(k.substrate.warm_root.glob("warm-*.log"))
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


# ------------------------------------------------------------------ pool empty, single use, refill
@needs_host
def test_an_empty_pool_never_delays_a_spawn_it_goes_cold(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            await _ready(k, 1)
            prog = tmp_path / "s.py"
            prog.write_text(SLEEPER)
            a, b = await asyncio.gather(*(k.spawn(parse_manifest({"name": f"s{i}", "program": str(prog)}))
                                          for i in range(2)))
            assert sorted([a.isolation["start"], b.isolation["start"]]) == ["cold", "warm"]
            assert a.live and b.live
            stats = k.substrate.pool_statistics()
            assert stats["warm"] == 1 and stats["cold_reasons"].get("pool_empty") == 1
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_a_worker_is_used_once_and_the_pool_refills(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            prog = tmp_path / "p.py"
            prog.write_text("import os\nfrom agentix.sdk import agent\nagent.connect().exit(1)\n")
            used: list[int] = []
            for _ in range(3):
                (w,) = await _ready(k, 1)
                wpid = w.handle.pid
                assert wpid not in used  # a fresh worker every time
                rec = await _run(k, prog)
                assert rec.isolation["start"] == "warm" and rec.handle.pid == wpid
                used.append(wpid)
                assert await _gone([wpid])  # it ended with its program; nothing returned it to the pool
                assert not [d for d in rec.handle._cg.dirs.values() if d.exists()]
            stats = k.substrate.pool_statistics()
            assert stats["warm"] == 3 and stats["started"] >= 4
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_a_worker_that_dies_idle_is_replaced_and_never_assigned(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            (w,) = await _ready(k, 1)
            os.kill(w.handle.agent_pid(), signal.SIGKILL)
            deadline = time.monotonic() + 60
            while w in k.substrate._workers or not k.substrate._workers:
                assert time.monotonic() < deadline, k.substrate.pool_statistics()
                await asyncio.sleep(0.05)
            assert k.substrate.pool_statistics()["died_idle"] == 1
            assert not w.placeholder.exists() and not [d for d in w.cg.dirs.values() if d.exists()]
            prog = tmp_path / "p.py"
            prog.write_text("from agentix.sdk import agent\nagent.connect().exit(1)\n")
            rec = await _run(k, prog)
            assert rec.exit.reason == "completed" and rec.handle.pid != w.handle.pid
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_an_identity_socket_numbered_above_the_workers_open_files_limit_still_works(tmp_path: Path) -> None:
    """A busy kernel's descriptor numbers exceed a worker's nofile (256): the worker keeps the
    socket at the number it arrived at and says so in AGENTIX_FD."""
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        ballast = [os.open("/dev/null", os.O_RDONLY) for _ in range(400)]
        try:
            await _ready(k, 1)
            prog = tmp_path / "p.py"
            prog.write_text("import os\nfrom agentix.sdk import agent\nk = agent.connect()\n"
                            "k.exit({'fd': int(os.environ['AGENTIX_FD']), 'v': k.info()['agent_id']})\n")
            rec = await _run(k, prog)
            assert rec.exit.reason == "completed", rec.log_path.read_text()
            assert rec.isolation["start"] == "warm" and rec.result["v"] == rec.agent_id
            assert rec.result["fd"] < 256
        finally:
            for fd in ballast:
                os.close(fd)
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_a_worker_started_while_the_kernel_narrowed_its_umask_gets_the_kernels_own(tmp_path: Path) -> None:
    """rpc/server.py narrows the kernel's umask to 0o177 while it binds a socket; a worker
    started in that window must not hand its agent directories it cannot use."""
    async def body() -> None:
        home = Home(tmp_path / "h")
        home.create()
        k = KernelRoot(home, KernelConfig(stop_grace=1.0, warm_pool=1))
        old = os.umask(0o177)
        try:
            await k.start()
            await _ready(k, 1)
        finally:
            os.umask(old)
        try:
            prog = tmp_path / "p.py"
            prog.write_text("import os\nos.makedirs('sub')\nos.symlink('/tmp/x', 'sub/link')\n"
                            "m = os.umask(0)\nfrom agentix.sdk import agent\nagent.connect().exit(m)\n")
            rec = await _run(k, prog)
            assert rec.exit.reason == "completed", rec.log_path.read_text()
            assert rec.isolation["start"] == "warm" and rec.result == old
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_shapes_outside_the_pool_go_cold_and_still_work(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=1)
        try:
            await _ready(k, 1)
            prog = tmp_path / "p.py"
            prog.write_text("import os\nfrom agentix.sdk import agent\nagent.connect().exit(1)\n")
            for limits in ({"disk": "8M"}, {"memory": "32M"}, {"nofile": 512}):
                rec = await _run(k, prog, limits=limits)
                assert rec.exit.reason == "completed" and rec.isolation["start"] == "cold", limits
            assert k.substrate.pool_statistics()["cold_reasons"] == {"disk": 1, "memory": 1, "nofile": 1}
            assert len(k.substrate._workers) == 1  # untouched, still ready
        finally:
            await k.shutdown(grace=1.0)

    asyncio.run(body())


@needs_host
def test_shutdown_leaves_no_worker_group_or_placeholder(tmp_path: Path) -> None:
    async def body() -> None:
        k = await _kernel(tmp_path, warm=2)
        workers = await _ready(k, 2)
        pids = [p for w in workers for p in w.handle.pids()]
        assert len(pids) >= 6  # bwrap, its init and the interpreter, per worker
        await k.shutdown(grace=1.0)
        assert await _gone(pids)
        for w in workers:
            assert not w.placeholder.exists() and not [d for d in w.cg.dirs.values() if d.exists()]
        assert not k.substrate.warm_root.exists()

    asyncio.run(body())


# ------------------------------------------------------------------ the daemon: crash, info
def _worker_pids(home: Path) -> list[int]:
    from agentix.sandbox.cgroups import subtree_name

    mark = f"/{subtree_name(home)}/warm-"
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if mark in Path(f"/proc/{d}/cgroup").read_text():
                    out.append(int(d))
            except OSError:
                pass
    return out


def _wait_ready(home: Path, proc: subprocess.Popen[bytes], log: Path, n: int = 2) -> None:
    """Until the daemon's pool holds ``n`` verified workers (as `agentix info` reports it)."""
    from agentix.sdk import Kernel as Client
    from agentix.sdk.errors import KernelNotRunning

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            with Client(home) as c:
                if c.info()["isolation"]["warm_pool"]["ready"] >= n:
                    return
        except KernelNotRunning:
            pass
        time.sleep(0.1)


@needs_host
def test_a_kernel_killed_with_sigkill_leaves_no_orphan_worker(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text("[kernel]\nwarm_pool = 2\n")
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ready(home, proc, tmp_path / "daemon.log")
        r = subprocess.run([str(Path(sys.executable).parent / "agentix"), "--home", str(home), "info"],
                           capture_output=True, text=True, timeout=60)
        assert "warm pool" in r.stdout and "2/2 ready" in r.stdout, r.stdout + r.stderr
        pids = _worker_pids(home)
        placeholders = sorted((home / "warm").iterdir())
        assert placeholders
        proc.kill()
        proc.wait()
        assert asyncio.run(_gone(pids)), [p for p in pids if _alive(p)]
        # the next kernel of this home sweeps what the dead one left
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        _wait_ready(home, proc, tmp_path / "daemon.log")
        assert not set(placeholders) & set((home / "warm").iterdir())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    assert asyncio.run(_gone(_worker_pids(home)))
