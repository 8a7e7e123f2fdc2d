"""Issue 11 (part A): the spawn path is a trust boundary. Attacks from the issue's problem
list, each through a real in-process ``Kernel`` on the bwrap backend (real sandboxes, real
cgroups, real processes), asserting the refusal AND that the host did not move: no file
created or chowned outside the workspace, no record left in ``spawning``, no workspace,
cgroup or process left behind, the kernel still answering ``kernel.info``.

The whole module needs root and bubblewrap (the backend the attacks target); it is skipped
on a host without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import AgentixError, InvalidRequest, IsolationUnavailable, LimitExceeded
from agentix.core.manifest import parse_manifest
from agentix.kernel import spawn as spawn_mod
from agentix.sandbox import cgroups

from _world import World as SharedWorld  # noqa: E402  (same directory)
from _world import run as shared_run  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None or shutil.which("setpriv") is None,
    reason="the bwrap backend needs root, bubblewrap and setpriv")

ENV_PROBE = '''
import os, sys
from agentix.sdk import agent
k = agent.connect()
with open("/proc/self/environ", "rb") as f:
    initial = f.read()
info = {"value": os.environ.get("GREETING"), "in_initial_env": b"GREETING=" in initial,
        "isolated": sys.flags.isolated, "marker": os.path.exists("/workspace/pwned")}
k.recv(timeout=60)
k.exit(info)
'''

EXITER = "from agentix.sdk import agent\nagent.connect().exit('ok')\n"
SLEEPER = "import time\ntime.sleep(3600)\n"


# ---------------------------------------------------------------------------- harness
class World(SharedWorld):
    """The shared harness on bwrap, strict, with host files outside every workspace to aim at."""

    backend = "bwrap"
    isolation = "strict"
    programs = {"env_probe.py": ENV_PROBE, "exiter.py": EXITER, "sleeper.py": SLEEPER}

    def __init__(self, tmp: Path, config_toml: str | None = None, **config: Any) -> None:
        config.setdefault("launcher_pool", 0)
        config.setdefault("warm_pool", 0)
        super().__init__(tmp, config_toml, **config)
        # a host directory outside every workspace, root-owned, that attacks aim at
        self.host = tmp / "host"
        self.host.mkdir()
        (self.host / "secret").write_text("root only\n")
        os.chmod(self.host / "secret", 0o600)
        (self.host / "dir").mkdir()
        (self.host / "dir" / "file").write_text("x")

    async def spawn(self, prog: str = "exiter.py", name: str = "agent", **extra: Any):  # type: ignore[override]
        return await super().spawn(name=name, program=prog, **extra)

    def host_view(self) -> dict[str, tuple[int, int, int]]:
        """(uid, gid, mode) of everything under the host directory, without following links."""
        out = {}
        for p in sorted(self.host.rglob("*")):
            st = os.lstat(p)
            out[str(p.relative_to(self.host))] = (st.st_uid, st.st_gid, st.st_mode)
        return out

    def assert_nothing_left(self, live_before: int = 0) -> None:
        """No spawning record; no workspace, log or cgroup of a failed spawn or dead agent."""
        assert [r.agent_id for r in self.k.table if r.state == "spawning"] == []
        live = {r.agent_id for r in self.k.table if r.live}
        assert len(live) == live_before
        kept = {r.agent_id for r in self.k.table if r.exit is not None and r.exit.reason not in (
            "spawn_failed", "isolation_failed")}
        failed = {e["data"]["agent_id"] for e in self.events("agent.spawn_failed")}
        failed |= {r.agent_id for r in self.k.table if r.exit is not None and r.exit.reason == "isolation_failed"}
        for ws in self.home.workspaces.iterdir():
            assert ws.name in live | kept, f"stray workspace {ws}"
        for aid in failed:
            assert not (self.home.logs / f"{aid}.log").exists(), f"log of failed {aid} left"
        hier = cgroups.detect(getattr(self.k.substrate, "cgroup_name", "agentix"))
        for base in hier.bases.values():
            for d in base.glob("ag-*") if base.is_dir() else []:
                assert d.name not in failed | kept, f"cgroup {d} outlived its agent"
            for aid in live:  # (the check looks where this kernel's groups really are)
                assert (base / aid).is_dir(), f"live agent {aid} has no cgroup under {base}"


def run(tmp: Path, body, **config: Any) -> Any:
    return shared_run(tmp, body, world=World, **config)


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def answers(w: World) -> None:
    """The kernel answers kernel.info (a generous bound: no timing asserted, only liveness)."""
    info = await asyncio.wait_for(w.op("kernel.info"), 10)
    assert info["pid"] == os.getpid()


# ---------------------------------------------------------------------------- env
DANGEROUS_ENV = ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_DEBUG_OUTPUT", "LD_AUDIT", "PYTHONPATH",
                 "PYTHONSTARTUP", "PYTHONHOME", "PYTHONINSPECT", "BASH_ENV", "ENV", "PATH", "HOME",
                 "IFS", "GCONV_PATH", "LOCALDOMAIN", "HOSTALIASES", "MALLOC_CHECK_", "GLIBC_TUNABLES",
                 "NLSPATH", "LOCPATH", "AGENTIX_FD", "ld_preload", "Path", "1X", "A-B", "A B", ""]


@pytest.mark.parametrize("name", DANGEROUS_ENV)
def test_dangerous_env_names_are_refused_naming_the_variable(tmp_path, name):
    async def body(w):
        before = w.host_view()
        with pytest.raises(InvalidRequest) as ei:
            await w.spawn(env={name: str(w.host / "created-by-loader")})
        await answers(w)
        w.assert_nothing_left()
        assert w.host_view() == before
        return ei.value

    err = run(tmp_path, body)
    assert err.data["field"] == f"env.{name}" if name else err.data["field"].startswith("env")
    assert "env." in err.message


def test_child_manifest_ld_preload_from_a_parent_is_refused_and_runs_nothing(tmp_path):
    """The issue's root exploit: a child's env naming a .so in the parent's workspace."""
    async def body(w):
        parent = await w.spawn("probe.py", name="parent", capabilities=["spawn_child: kid"])
        (parent.workspace / "evil.so").write_bytes(b"\x7fELF not really")
        kid = {"name": "kid", "program": "probe.py"}
        res = await w.calls(parent, [
            ["agent.spawn_child", {"manifest": {**kid, "env": {"LD_PRELOAD": "/workspace/evil.so"}}}],
            ["agent.spawn_child", {"manifest": {**kid, "env": {"LD_DEBUG": "all",
                                                               "LD_DEBUG_OUTPUT": str(w.host / "x")}}}],
            ["agent.spawn_child", {"manifest": {**kid, "env": {"PYTHONPATH": "/workspace"}}}],
            # (a 1 MB value is over the channel's frame limit: that refusal is the rpc layer's)
            ["agent.spawn_child", {"manifest": {**kid, "env": {"V": "x" * 100_000}}}],
        ])
        await answers(w)
        return parent, res

    parent, res = run(tmp_path, body)
    assert [r.get("error") for r in res] == ["invalid_request"] * 4, res
    assert [r["data"]["field"] for r in res] == ["env.LD_PRELOAD", "env.LD_DEBUG",
                                                 "env.PYTHONPATH", "env.V"]
    assert "env.LD_DEBUG_OUTPUT" in res[1]["message"]  # every bad variable is named
    assert parent.children == []
    assert not (tmp_path / "host" / "x").exists()  # the loader never wrote a root-owned file


def test_llm_loop_spawn_agent_goes_through_the_same_validation(tmp_path):
    """agents/loop.py's run_child (the LLM's spawn_agent tool) passes the model's manifest to
    agent.spawn_child; the kernel validates it the same way."""
    loop_parent = '''
from agentix.sdk import agent
from agentix.agents.loop import LoopConfig, run_child
k = agent.connect()
try:
    run_child(k, {"manifest": {"name": "kid", "program": "probe.py",
                               "env": {"LD_PRELOAD": "/workspace/evil.so"}}, "message": "hi"},
              LoopConfig())
    k.exit({"spawned": True})
except Exception as e:
    k.exit({"error": getattr(e, "code", repr(e)), "data": getattr(e, "data", None)})
'''

    async def body(w):
        (w.progs / "loop_parent.py").write_text(loop_parent)
        rec = await w.spawn("loop_parent.py", name="llm", capabilities=["spawn_child: kid"])
        await w.k.wait(rec, 60)
        return rec

    rec = run(tmp_path, body)
    assert rec.result == {"error": "invalid_request", "data": {"field": "env.LD_PRELOAD"}}, rec.result
    assert rec.children == []


@pytest.mark.parametrize("pool,warm", [(0, 0), (2, 0), (0, 1)], ids=["direct", "pre-started launcher", "warm"])
def test_allowed_env_is_set_only_inside_the_sandbox_after_confinement(tmp_path, pool, warm):
    async def body(w):
        if pool:
            await asyncio.sleep(0.5)  # let the pool fill
        while warm and w.k.substrate.statistics().get("warm_ready", 0) < 1:
            await asyncio.sleep(0.05)  # a worker is ready (its confinement checked)
        rec = await w.spawn("env_probe.py", env={"GREETING": "hello"})
        # the host-side processes of this agent (bwrap outside, bwrap init, the program as it
        # was exec'd) never had GREETING in their environment
        environs = {}
        for pid in rec.handle.pids():
            with contextlib.suppress(OSError):
                environs[pid] = Path(f"/proc/{pid}/environ").read_bytes()
        await w.k.deliver(None, rec, "go")
        await w.k.wait(rec, 60)
        assert w.k.substrate.statistics()["pooled"] == (1 if pool else 0)
        assert rec.isolation["start"] == ("warm" if warm else "cold")
        return rec, environs

    rec, environs = run(tmp_path, body, launcher_pool=pool, warm_pool=warm)
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    assert rec.result == {"value": "hello", "in_initial_env": False, "isolated": 1, "marker": False}
    assert environs and all(b"AGENTIX_CONFINE=" in e for e in environs.values()), environs
    assert not any(b"GREETING" in e or b"hello" in e for e in environs.values())
    assert not any(b"LD_" in e or b"PYTHONPATH" in e for e in environs.values())


def test_workspace_site_hooks_do_not_run_before_confinement(tmp_path):
    """sitecustomize/usercustomize/.pth next to the program are never imported at start-up
    (python -I); only the program itself runs, after confine."""
    async def body(w):
        pkg = w.progs / "hooked"
        pkg.mkdir()
        hook = "open('/workspace/pwned', 'w').write('ran before confine')\n"
        (pkg / "sitecustomize.py").write_text(hook)
        (pkg / "usercustomize.py").write_text(hook)
        (pkg / "evil.pth").write_text("import os; " + hook)
        (pkg / "__main__.py").write_text(ENV_PROBE)
        rec = await w.k.spawn(parse_manifest({"name": "hooked", "program": str(pkg)}))
        await w.k.deliver(None, rec, "go")
        await w.k.wait(rec, 60)
        return rec

    rec = run(tmp_path, body)
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    assert rec.result["marker"] is False and rec.result["isolated"] == 1


# ---------------------------------------------------------------------------- verification
def test_kernel_verifies_every_layer_from_outside(tmp_path):
    from agentix.sandbox import verify

    async def body(w):
        rec = await w.spawn("sleeper.py", limits={"nofile": 64, "disk": "8M"})
        pid = rec.handle.agent_pid()
        status = Path(f"/proc/{pid}/status").read_text()
        bad = verify.check(pid, layers=rec.isolation["layers"], uid=65534, gid=65534,
                           rlimits={"nofile": 64, "fsize": 8 * 1024**2},
                           cgroup_dirs=list(rec.handle._cg.dirs.values()))
        looser = verify.check(pid, layers=["rlimits"], rlimits={"nofile": 16})
        w.assert_nothing_left(live_before=1)
        await w.k.kill(rec)
        return rec, status, bad, looser

    rec, status, bad, looser = run(tmp_path, body)
    assert sorted(rec.isolation["layers"]) == sorted(["namespaces", "filesystem", "privileges",
                                                      "no_new_privs", "rlimits", "landlock",
                                                      "seccomp", "cgroups"])
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status
    assert bad == []
    assert looser and looser[0]["layer"] == "rlimits"  # the checker does see a difference


def test_a_confine_report_that_lies_is_isolation_failed(tmp_path):
    """A program that writes an 'all layers applied' report without applying them (what
    PYTHONPATH code could do before this issue) is caught from outside and killed."""
    from agentix.sandbox.base import LaunchSpec
    from agentix.sandbox.bwrap import BwrapSubstrate
    import socket
    import sys

    liar = ('import os\nfd = int(os.environ["AGENTIX_CONFINE_FD"])\n'
            'os.write(fd, b\'{"ok": true, "applied": ["rlimits", "no_new_privs", "privileges", '
            '"landlock", "seccomp"], "missing": []}\\n\')\nos.close(fd)\nimport time\ntime.sleep(60)\n')

    async def body():
        # a subtree of its own: the shared default is created and swept by other runs on the host
        sub = BwrapSubstrate(cgroup_name=cgroups.subtree_name(tmp_path))
        ws = tmp_path / "ws"
        ws.mkdir()
        parent, child = socket.socketpair()
        from agentix.core.manifest import Limits
        spec = LaunchSpec(agent_id="ag-liar0001", name="liar", argv=[sys.executable, "-I", "-c", liar],
                          workspace=ws, env={"AGENTIX_FD": str(child.fileno())},
                          channel_fd=child.fileno(), log_path=tmp_path / "liar.log",
                          limits=Limits(nofile=64))
        try:
            with pytest.raises(IsolationUnavailable) as ei:
                await sub.spawn(spec)
        finally:
            child.close()
            parent.close()
            await sub.close()
        return ei.value, sub

    err, sub = asyncio.run(body())
    assert err.data["reason"] == "isolation_failed"
    assert err.data["layer"] == "rlimits", err.data
    hier = cgroups.detect(sub.cgroup_name)
    assert hier.bases and not [d for b in hier.bases.values() for d in b.glob("ag-liar0001")]
    cgroups.remove_subtree(hier)


def test_kernel_records_isolation_failed_kills_and_leaves_nothing(tmp_path, monkeypatch):
    from agentix.sandbox import verify

    def mismatch(pid, **kw):
        return [{"layer": "seccomp", "why": "Seccomp is '0', expected 2 (injected)"}]

    monkeypatch.setattr(verify, "check", mismatch)

    async def body(w):
        with pytest.raises(IsolationUnavailable) as ei:
            await w.spawn("sleeper.py", name="liar")
        await answers(w)
        recs = list(w.k.table)
        w.assert_nothing_left()
        return ei.value, recs, w.events("agent.spawn_failed")

    err, recs, failed = run(tmp_path, body)
    assert err.data["reason"] == "isolation_failed"
    assert len(recs) == 1 and recs[0].state == "exited" and recs[0].exit.reason == "isolation_failed"
    assert not Path(f"/proc/{recs[0].handle.pid if recs[0].handle else 0}").exists() or recs[0].handle is None
    assert failed and failed[-1]["data"]["reason"] == "isolation_failed"


# ---------------------------------------------------------------------------- root path walks
def test_exec_never_chowns_through_a_workspace_symlink(tmp_path):
    """Before each exec the workspace is re-owned for the sandbox uid; links to host files and
    directories that the agent planted are not followed."""
    async def body(w):
        rec = await w.spawn("probe.py", name="runner", capabilities=["exec: true"])
        before = w.host_view()
        os.symlink(w.host / "secret", rec.workspace / "link")
        os.symlink(w.host / "dir", rec.workspace / "dirlink")
        (rec.workspace / "sub").mkdir()
        os.symlink(w.host, rec.workspace / "sub" / "up")
        res = await w.calls(rec, [["tool.call", {"name": "exec", "args": {"argv": ["true"]}}]])
        return res, before, w.host_view(), os.lstat(rec.workspace / "sub").st_uid

    res, before, after, sub_uid = run(tmp_path, body)
    assert res[0].get("ok", {}).get("exit_code") == 0, res
    assert after == before  # nothing outside the workspace changed owner
    assert sub_uid == 65534  # the real directory inside was handed to the sandbox uid


# ---------------------------------------------------------------------------- special files
def test_program_fifos_are_refused_without_blocking_the_kernel(tmp_path):
    """Eight FIFO programs at once used to stall every thread-based call kernel-wide."""
    async def body(w):
        fifos = []
        for i in range(8):
            f = w.progs / f"fifo{i}.py"
            os.mkfifo(f)
            fifos.append(f)
        results = await asyncio.wait_for(asyncio.gather(
            *(w.k.spawn(parse_manifest({"name": f"f{i}", "program": str(f)}))
              for i, f in enumerate(fifos)), return_exceptions=True), 30)
        await answers(w)
        ok = await w.spawn()  # thread-based work still runs
        await w.k.wait(ok, 30)
        w.assert_nothing_left()
        return results, ok

    results, ok = run(tmp_path, body)
    assert all(isinstance(r, InvalidRequest) and r.data["field"] == "program" for r in results), results
    assert all("FIFO" in r.message for r in results)
    assert ok.exit.reason == "completed"


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/shadow", "host/secret", "host/dir"])
def test_program_symlinked_to_a_host_file_is_refused_never_copied(tmp_path, target):
    async def body(w):
        real = target if target.startswith("/") else str(tmp_path / target)
        link = w.progs / "linked.py"
        os.symlink(real, link)
        before = w.host_view()
        rss0 = rss()
        with pytest.raises(InvalidRequest) as ei:
            await w.k.spawn(parse_manifest({"name": "linked", "program": str(link)}))
        await answers(w)
        w.assert_nothing_left()
        assert w.host_view() == before
        assert rss() - rss0 < 64 * 1024**2
        assert list(w.home.workspaces.iterdir()) == []
        return ei.value

    err = run(tmp_path, body)
    assert err.data["field"] == "program" and "symbolic link" in err.message


def test_package_with_a_link_or_fifo_inside_is_refused(tmp_path):
    async def body(w):
        pkg = w.progs / "pkg"
        pkg.mkdir()
        (pkg / "__main__.py").write_text(EXITER)
        os.symlink("/etc/shadow", pkg / "shadow.txt")
        with pytest.raises(InvalidRequest) as e1:
            await w.k.spawn(parse_manifest({"name": "pkg", "program": str(pkg)}))
        os.unlink(pkg / "shadow.txt")
        os.mkfifo(pkg / "pipe")
        with pytest.raises(InvalidRequest) as e2:
            await w.k.spawn(parse_manifest({"name": "pkg", "program": str(pkg)}))
        w.assert_nothing_left()
        return e1.value, e2.value

    e1, e2 = run(tmp_path, body)
    assert "pkg/shadow.txt" in e1.message and "symbolic link" in e1.message
    assert "pkg/pipe" in e2.message and "FIFO" in e2.message


def test_child_program_that_is_a_link_or_fifo_in_the_parent_workspace_is_refused(tmp_path):
    async def body(w):
        parent = await w.spawn("probe.py", name="parent", capabilities=["spawn_child: kid"])
        os.symlink("/etc/shadow", parent.workspace / "evil.py")
        os.mkfifo(parent.workspace / "fifo.py")
        (parent.workspace / "d").mkdir()
        os.symlink(w.host, parent.workspace / "d" / "up")
        kid = {"name": "kid"}
        res = await asyncio.wait_for(w.calls(parent, [
            ["agent.spawn_child", {"manifest": {**kid, "program": "evil.py"}}],
            ["agent.spawn_child", {"manifest": {**kid, "program": "/workspace/fifo.py"}}],
            ["agent.spawn_child", {"manifest": {**kid, "program": "d/up/secret"}}],
            ["agent.spawn_child", {"manifest": {**kid, "program": "../../../etc/shadow"}}],
            ["agent.spawn_child", {"manifest": {**kid, "program": "/etc/shadow"}}],
        ]), 60)
        await answers(w)
        return parent, res

    parent, res = run(tmp_path, body)
    assert [r.get("error") for r in res] == ["invalid_request"] * 5, res
    assert all(r["data"]["field"] == "program" for r in res)
    assert "root only" not in json.dumps(res)
    assert parent.children == []


def _mkfifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "link_to_dev_zero"])
def test_manifest_path_that_is_not_a_regular_file_is_refused_quickly(tmp_path, kind):
    async def body(w):
        if kind == "fifo":
            path = str(_mkfifo(tmp_path / "m.yaml"))
        elif kind == "dev_zero":
            path = "/dev/zero"
        elif kind == "directory":
            path = str(tmp_path)
        else:
            os.symlink("/dev/zero", tmp_path / "z.yaml")
            path = str(tmp_path / "z.yaml")
        rss0 = rss()
        with pytest.raises(InvalidRequest) as ei:
            await asyncio.wait_for(w.op("agent.spawn", manifest_path=path), 10)
        await answers(w)
        assert rss() - rss0 < 64 * 1024**2  # /dev/zero is never read to the end
        w.assert_nothing_left()
        return ei.value

    err = run(tmp_path, body)
    assert err.data["field"] == "manifest_path"


def test_manifest_path_errors_never_echo_the_file(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("api_token: hunter2-very-secret\nroot: $6$saltsalt$hash\nname: 7\n"
                      "limits: {memory: hunter3}\n")
    os.chmod(secret, 0o600)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("root:x:0:0:hunter4:/root:/bin/bash\nfoo: [unclosed hunter5\n")

    async def body(w):
        errs = []
        for p in (secret, bad_yaml):
            with pytest.raises(InvalidRequest) as ei:
                await w.op("agent.spawn", manifest_path=str(p))
            errs.append(ei.value)
        return errs

    errs = run(tmp_path, body)
    for e in errs:
        text = e.message + json.dumps(e.data)
        for leak in ("hunter", "api_token", "$6$", "root", "/bin/bash"):
            assert leak not in text, text
    assert errs[0].data["field"] == "name" and "2 unknown field(s)" in errs[0].message
    assert "limits.memory" in errs[0].message
    assert errs[1].data["field"] == "(manifest)" and "line" in errs[1].message


# ---------------------------------------------------------------------------- one manifest never wedges
def _nofile_above_hard() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1_048_576 if hard == resource.RLIM_INFINITY or hard >= 1_048_576 else hard + 1


WEDGES = [
    ({"memory": 10**30}, "limits.memory"),
    ({"memory": 1e30}, "limits.memory"),
    ({"memory": "1e30"}, "limits.memory"),
    ({"memory": "99999999999999999999T"}, "limits.memory"),
    ({"memory": 0}, "limits.memory"),
    ({"disk": 0}, "limits.disk"),
    ({"pids": 0}, "limits.pids"),
    ({"pids": 2}, "limits.pids"),
    ({"cpu": 0}, "limits.cpu"),
    ({"cpu": float("nan")}, "limits.cpu"),
    ({"wall_clock": 0}, "limits.wall_clock"),
    ({"wall_clock": "0s"}, "limits.wall_clock"),
    ({"wall_clock": float("inf")}, "limits.wall_clock"),
    ({"nofile": 1_048_577}, "limits.nofile"),
    ({"nofile": "many"}, "limits.nofile"),
]


@pytest.mark.parametrize("limits,field", WEDGES)
def test_out_of_range_limits_are_field_errors_and_wedge_nothing(tmp_path, limits, field):
    async def body(w):
        with pytest.raises(InvalidRequest) as ei:
            await w.spawn(limits=limits)
        # the kernel still spawns, stops and (in run()) shuts down within bounds
        rec = await w.spawn("sleeper.py", name="after")
        await asyncio.wait_for(w.k.stop(rec, grace=1.0), 15)
        w.assert_nothing_left()
        return ei.value

    err = run(tmp_path, body)
    assert err.data["field"] == field, err.message


def test_nofile_above_the_kernels_hard_limit_is_a_field_error(tmp_path):
    n = _nofile_above_hard()
    if n > 1_048_576:
        pytest.skip("this kernel's hard limit is above every nofile a manifest may ask")

    async def body(w):
        with pytest.raises(InvalidRequest) as ei:
            await w.spawn(limits={"nofile": n})
        w.assert_nothing_left()
        return ei.value

    err = run(tmp_path, body)
    assert err.data["field"] == "limits.nofile"


def test_huge_env_value_and_nul_are_field_errors(tmp_path):
    async def body(w):
        errs = []
        for env in ({"BIG": "x" * (1024 * 1024)}, {"NUL": "a\x00b"},
                    {f"V{i}": "x" * 4000 for i in range(20)}):
            with pytest.raises(InvalidRequest) as ei:
                await w.spawn(env=env)
            errs.append(ei.value.data["field"])
        w.assert_nothing_left()
        return errs

    assert run(tmp_path, body) == ["env.BIG", "env.NUL", "env"]


STEPS = ["install_program", "substrate_spawn", "verify", "persist", "record_spawned", "record_granted"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_spawn_step_leaves_nothing(tmp_path, monkeypatch, step):
    from agentix.core.errors import InternalError
    from agentix.sandbox import verify

    async def body(w):
        k = w.k
        boom = InternalError(f"injected failure at {step}")
        if step == "install_program":
            monkeypatch.setattr(spawn_mod, "install_program", lambda *a: (_ for _ in ()).throw(boom))
        elif step == "substrate_spawn":
            async def fail(spec):
                raise boom
            monkeypatch.setattr(k.substrate, "spawn", fail)
        elif step == "verify":
            monkeypatch.setattr(verify, "check", lambda pid, **kw: (_ for _ in ()).throw(boom))
        elif step == "persist":
            async def fail(rec):
                raise boom
            monkeypatch.setattr(k.rows, "persist_spawn", fail)
        else:
            kind = "agent.spawned" if step == "record_spawned" else "capability.granted"
            raw = k.events.record

            async def record(kind_, *a, **kw):
                if kind_ == kind:
                    raise boom
                return await raw(kind_, *a, **kw)
            monkeypatch.setattr(k.events, "record", record)
        children_before = _children()
        with pytest.raises(AgentixError):
            await w.spawn("sleeper.py", name="victim", capabilities=["tool: echo"])
        await answers(w)
        w.assert_nothing_left()
        assert [r for r in w.k.table if r.name == "victim" and r.live] == []
        assert k.caps.held == {} or all(not v for v in k.caps.held.values())
        assert wait_for(lambda: _children() <= children_before), (_children(), children_before)
        monkeypatch.undo()
        # the name is free again and a spawn succeeds
        rec = await w.spawn("exiter.py", name="victim")
        await w.k.wait(rec, 30)
        return rec

    rec = run(tmp_path, body)
    assert rec.name == "victim" and rec.exit.reason == "completed"


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for e in os.listdir("/proc"):
        if e.isdigit():
            with contextlib.suppress(OSError):
                st = Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()
                if int(st[1]) == me and st[0] not in "ZX":
                    out.add(int(e))
    return out


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_stop_kill_and_shutdown_finish_while_a_spawn_is_mid_way(tmp_path, monkeypatch):
    async def body(w):
        k = w.k
        gate = threading.Event()
        real = spawn_mod.install_program

        def slow(*a):
            gate.wait(3)
            return real(*a)

        monkeypatch.setattr(spawn_mod, "install_program", slow)
        task = asyncio.create_task(w.spawn("sleeper.py", name="slow"))
        await asyncio.sleep(0.1)
        rec = next(r for r in k.table if r.name == "slow")
        assert rec.state == "spawning"
        listed = await w.op("agent.list")
        assert [a["state"] for a in listed["agents"]] == ["spawning"]
        stopper = asyncio.create_task(k.kill(rec))
        gate.set()
        await asyncio.wait_for(stopper, 20)
        spawned = await asyncio.wait_for(task, 20)
        assert spawned is rec and rec.state == "exited" and rec.exit.reason == "killed"
        # and a shutdown with a spawn in flight also finishes
        gate.clear()
        task2 = asyncio.create_task(w.spawn("sleeper.py", name="slow2"))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(asyncio.gather(k.shutdown(), return_exceptions=True), 30)
        gate.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task2, 20)
        assert all(not r.live for r in k.table)
        return rec

    async def go():
        w = World(tmp_path)
        await w.k.start()
        return await body(w)

    asyncio.run(go())


# ---------------------------------------------------------------------------- admission
def test_ten_concurrent_spawns_named_dup_get_ten_distinct_names(tmp_path):
    async def body(w):
        recs = await asyncio.gather(*(w.spawn("sleeper.py", name="dup") for _ in range(10)))
        names = sorted(r.name for r in recs)
        live_named = sorted(r.name for r in w.k.table if r.live)
        for r in recs:
            await w.k.kill(r)
        return names, live_named

    names, live_named = run(tmp_path, body)
    assert len(set(names)) == 10 and names == live_named
    assert set(names) == {"dup", *(f"dup-{i}" for i in range(2, 11))}


def test_max_agents_holds_under_one_hundred_concurrent_spawns(tmp_path):
    async def body(w):
        live = [await w.spawn("sleeper.py", name=f"s{i}") for i in range(9)]
        results = await asyncio.gather(*(w.spawn("sleeper.py", name="rush") for _ in range(100)),
                                       return_exceptions=True)
        count = w.k.table.live_count()
        for r in [*live, *(x for x in results if not isinstance(x, BaseException))]:
            await w.k.kill(r)
        return results, count

    results, count = run(tmp_path, body, max_agents=10)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(ok) == 1 and len(refused) == 99 and count == 10
    assert all(r.data["limit"] == "max_agents" for r in refused)


# ---------------------------------------------------------------------------- copy out
def test_copy_output_skips_links_and_fifos_and_never_blocks(tmp_path):
    from agentix.kernel.goals import copy_output

    ws = tmp_path / "ws"
    out = ws / "output"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("A")
    (out / "sub" / "b.txt").write_text("B")
    os.symlink("/etc/shadow", out / "shadow.txt")
    os.symlink("/etc", out / "etc")
    os.mkfifo(out / "pipe")
    dest = tmp_path / "dest"
    files = _in_thread(copy_output, out, dest)
    assert files == ["a.txt", "sub/b.txt"]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["a.txt", "sub", "sub/b.txt"]
    # output/ itself a link to a host directory: nothing is copied
    shutil.rmtree(out)
    os.symlink(tmp_path / "dest", out)
    assert _in_thread(copy_output, out, tmp_path / "dest2") == []


def _in_thread(fn, *args, timeout: float = 10.0):
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn(*args)), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn.__name__} blocked"
    return box[0]


def test_chown_tree_never_follows_a_directory_swapped_for_a_link(tmp_path):
    """Swap a directory for a symlink to a host directory as fast as possible while the
    walker re-owns the tree: the host directory's files never change owner."""
    from agentix.sandbox import safewalk

    host = tmp_path / "host"
    host.mkdir()
    for i in range(50):
        (host / f"f{i}").write_text("x")
    ws = tmp_path / "ws"
    ws.mkdir()
    for i in range(30):
        d = ws / f"d{i}"
        d.mkdir()
        for j in range(20):
            (d / f"f{j}").write_text("y")
    stop = threading.Event()

    def swapper():
        i = 0
        while not stop.is_set():
            d = ws / f"d{i % 30}"
            tmp = ws / f"t{i % 30}"
            with contextlib.suppress(OSError):
                os.rename(d, tmp)
                os.symlink(host, d)
                os.unlink(d)
                os.rename(tmp, d)
            i += 1

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    try:
        fd = safewalk.open_dir(ws, follow=False)
        try:
            for _ in range(30):
                safewalk.chown_tree(fd, 4242, 4242)
        finally:
            os.close(fd)
    finally:
        stop.set()
        t.join()
    assert {os.lstat(p).st_uid for p in host.iterdir()} == {0}
    assert os.lstat(host).st_uid == 0


def test_safe_walker_bounds_are_errors_naming_the_bound(tmp_path):
    from agentix.sandbox import safewalk

    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(b"x" * 1000)
    dst = tmp_path / "dst"
    dst.mkdir()
    for bounds, what in ((safewalk.Bounds(max_entries=5), "entries"),
                         (safewalk.Bounds(max_bytes=5000), "bytes")):
        fd = safewalk.open_dir(src)
        out = safewalk.open_dir(dst)
        try:
            with pytest.raises(safewalk.WalkError) as ei:
                safewalk.copy_entry(fd, os.fstat(fd), out, f"c-{what}", bounds=bounds)
        finally:
            os.close(fd)
            os.close(out)
        assert what in ei.value.why
    with pytest.raises(safewalk.WalkError):
        fd = safewalk.open_dir(src)
        try:
            safewalk.open_beneath(fd, "../etc/passwd")
        finally:
            os.close(fd)
    assert stat.S_ISDIR(os.lstat(dst).st_mode)


def test_a_program_over_the_copy_bounds_is_refused_and_leaves_no_workspace(tmp_path, monkeypatch):
    from agentix.kernel import program as program_mod
    from agentix.sandbox import safewalk

    monkeypatch.setattr(program_mod, "PROGRAM_BOUNDS", safewalk.Bounds(max_bytes=1024**2, max_entries=50))

    async def body(w):
        big = w.progs / "big"
        big.mkdir()
        (big / "__main__.py").write_text(EXITER)
        with open(big / "blob.bin", "wb") as f:
            f.truncate(2 * 1024**2)  # sparse: cheap to make, 2 MiB to read
        with pytest.raises(InvalidRequest) as e1:
            await w.k.spawn(parse_manifest({"name": "big", "program": str(big)}))
        os.unlink(big / "blob.bin")
        for i in range(60):
            (big / f"m{i}.py").write_text("")
        with pytest.raises(InvalidRequest) as e2:
            await w.k.spawn(parse_manifest({"name": "many", "program": str(big)}))
        w.assert_nothing_left()
        assert list(w.home.workspaces.iterdir()) == []
        return e1.value, e2.value

    e1, e2 = run(tmp_path, body)
    assert "bytes" in e1.message and "entries" in e2.message
