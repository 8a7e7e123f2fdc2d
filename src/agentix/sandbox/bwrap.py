"""The bwrap backend: every agent in its own namespaces, cgroup, Landlock domain and seccomp filter.
(Over 400 lines: one backend's start-up, argv, launcher pool and handle: the confinement it
builds is reviewed as one sequence.)

How one agent starts (host side, then inside the sandbox)::

    /bin/sh -c 'echo $$ > <cgroup>/cgroup.procs ...; exec "$@"'     joins its cgroups first,
      bwrap --unshare-pid/net/uts/ipc/cgroup --die-with-parent ...     so nothing forks outside
        --seccomp <fd>                                                  filter loaded before exec
        setpriv --reuid U --regid G --clear-groups --bounding-set -all  drop root, caps, bounding set
          python -I -B -u -m agentix.agents.boot ...                    spec.argv, cwd /workspace;
            agentix.sandbox.confine.apply_from_env()                    rlimits, no_new_privs,
                                                                        Landlock, seccomp check,
                                                                        then the agent's env

The spawn does not return until the confine step has reported on a pipe which layers it
applied; if a required layer failed, the process has already exited (status 125) and
``spawn`` raises ``IsolationUnavailable`` naming the layer. With ``spec.degraded_ok`` the
missing layers are listed on the handle instead (``Handle.missing_layers``), and layers
that the host lacks (no bwrap, no cgroups ...) are skipped rather than refused.

The report is the agent process's word, so before ``spawn`` returns every claimed layer
that the host can see is checked from outside (``sandbox/verify.py``: ``/proc/<pid>/status``,
``/proc/<pid>/limits``, namespaces, cgroup membership); a mismatch kills the agent and
raises ``IsolationUnavailable`` with ``reason: isolation_failed``.

Environment (the trust boundary): the host-side launchers get a fixed environment plus the
kernel's own ``HOST_ENV`` variables; every other variable of ``spec.env`` (the manifest's
``env``, validated by ``check_env_name`` when the manifest was parsed) travels inside the
policy and is set in the agent process only after confinement. The workspace is re-owned by the safe walker, fd-relative.

Mount view: ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links), a few files of
``/etc`` (never ``/etc/shadow``, ``passwd`` or ``group``), the Python runtime
(``sys.base_prefix``), the virtual environment (``sys.prefix``), the agentix source
directory and ``spec.extra_ro_paths`` read-only; the workspace read-write at
``/workspace``; a private ``/tmp`` (tmpfs, mode 1777, ``limits.disk`` in size); a fresh ``/proc`` of
the PID namespace; a minimal ``/dev`` (null, zero, full, random, urandom, tty).
"""

from __future__ import annotations

import asyncio
import json
import logging
import marshal
import os
import shutil
import signal as _signal
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import agentix
from agentix.core.errors import InvalidRequest, IsolationUnavailable
from agentix.core.manifest import Limits
from agentix.sandbox import cgroups, landlock, safewalk, seccomp, verify
from agentix.sandbox.base import ExitInfo, Handle, LaunchSpec, Substrate
from agentix.sandbox.confine import ENV_FD, ENV_POLICY, Policy

__all__ = ["ALL_LAYERS", "DEFAULT_LIMITS", "BwrapSubstrate", "LayerStatus", "probe"]

log = logging.getLogger(__name__)

ALL_LAYERS = ("namespaces", "filesystem", "privileges", "no_new_privs", "rlimits",
              "landlock", "seccomp", "cgroups")
# limits applied when neither the manifest nor the kernel configuration sets one
DEFAULT_LIMITS = Limits(memory="256M", cpu=0.5, pids=64, wall_clock="10m", nofile=256, disk="100M")

_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
              "/etc/alternatives", "/etc/nsswitch.conf", "/etc/host.conf")
_DEV_FILES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]
_JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 124; shift; n=$((n-1)); done; exec "$@"'
_CONFINE_TIMEOUT = 10.0
HOSTNAME = "agentix"  # every agent's hostname (docs/isolation.md, "Warm agents")
#: the only variables of ``LaunchSpec.env`` the host-side launchers (/bin/sh, bwrap, setpriv)
#: see; the kernel sets them. Every other one is applied inside the sandbox after confinement.
HOST_ENV = frozenset({"PATH", "HOME", "LANG", "AGENTIX_FD", "AGENTIX_AGENT_ID", "AGENTIX_AGENT_NAME",
                      "AGENTIX_WARM_FD"})
#: fixed values for the launchers and the interpreter's start (nothing an agent chose)
_FIXED_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONSAFEPATH": "1",
              "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class LayerStatus:
    layer: str
    ok: bool
    why: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "ok": self.ok, "why": self.why}


def _src_root() -> Path:
    """The directory that holds the ``agentix`` package (an editable install's src/)."""
    return Path(agentix.__file__).resolve().parent.parent


def probe(bwrap: str = "bwrap", setpriv: str = "setpriv") -> dict[str, LayerStatus]:
    """Which isolation layers this host can provide, and why not."""
    out: dict[str, LayerStatus] = {}
    bw = shutil.which(bwrap)
    if bw is None:
        why = f"{bwrap} not found on PATH (apt-get install bubblewrap)"
        out["namespaces"] = LayerStatus("namespaces", False, why)
        out["filesystem"] = LayerStatus("filesystem", False, why)
    else:
        import subprocess

        r = subprocess.run(
            [bw, "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-ipc",
             "--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
             "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
             "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/usr/bin/true"],
            capture_output=True, text=True, timeout=10)
        ok = r.returncode == 0
        why = "" if ok else f"bwrap failed: {r.stderr.strip()[:200]}"
        out["namespaces"] = LayerStatus("namespaces", ok, why)
        out["filesystem"] = LayerStatus("filesystem", ok, why)
    sp = shutil.which(setpriv)
    if os.geteuid() != 0:
        out["privileges"] = LayerStatus("privileges", False,
                                        "the kernel is not root: bwrap cannot mount without a user namespace "
                                        "and this backend drops to an unprivileged uid with setpriv")
    elif sp is None:
        out["privileges"] = LayerStatus("privileges", False, "setpriv not found (util-linux)")
    else:
        out["privileges"] = LayerStatus("privileges", True)
    out["no_new_privs"] = LayerStatus("no_new_privs", True)
    out["rlimits"] = LayerStatus("rlimits", True)
    abi = landlock.abi_version()
    out["landlock"] = LayerStatus("landlock", abi >= 1,
                                  f"ABI {abi}" if abi else "Landlock not enabled in this kernel (lsm=)")
    try:
        seccomp.bpf_program(False)
        out["seccomp"] = LayerStatus("seccomp", True, "libseccomp filter, EPERM on denied calls")
    except OSError as err:
        out["seccomp"] = LayerStatus("seccomp", False, str(err))
    h = cgroups.detect()
    out["cgroups"] = LayerStatus("cgroups", not h.missing,
                                 h.why or f"v{h.version}: " + ", ".join(sorted(h.bases)))
    return out


class BwrapHandle(Handle):
    def __init__(self, proc: asyncio.subprocess.Process, cg: cgroups.CgroupSet | None,
                 layers: list[str], missing: list[str], details: list[dict[str, str]]) -> None:
        super().__init__(pid=proc.pid, backend="bwrap", missing_layers=missing, layers=layers)
        self.missing_details = details
        self._proc = proc
        self._cg = cg
        self._exit: ExitInfo | None = None

    def pids(self) -> list[int]:
        """Host pids of every process of this agent (bwrap's two and the agent's)."""
        return self._cg.pids() if self._cg else [self.pid]

    def agent_pid(self) -> int | None:
        """Host pid of the agent program (below bwrap's outer and init processes)."""
        pid = self.pid
        for _ in range(2):
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                return None
            if not kids:
                return None
            pid = int(kids[0])
        return pid

    async def wait(self) -> ExitInfo:
        if self._exit is not None:
            return self._exit
        rc = await self._proc.wait()
        oom = bool(self._cg and self._cg.oom_kills() > 0)
        if rc < 0:
            info = ExitInfo(code=None, signal=-rc, oom=oom)
        elif 128 < rc <= 128 + 64:
            # bwrap's init reports a child killed by signal N as exit status 128+N
            info = ExitInfo(code=None, signal=rc - 128, oom=oom)
        else:
            info = ExitInfo(code=rc, signal=None, oom=oom)
        self._exit = info
        return info

    def signal(self, sig: int) -> None:
        if sig == _signal.SIGKILL:
            if self._cg is not None:
                self._cg.kill_all()
            _kill(self.pid, sig)
            return
        target = self.agent_pid()
        if target is None:
            _kill(self.pid, sig)
            return
        # bwrap --new-session makes its PID-1 process the session and group leader; the
        # program and whatever it forked share that group. The group is signalled only if
        # its leader is one of this agent's processes (never the kernel's own group). bwrap's
        # init has no SIGTERM handler, so as a PID-namespace init it ignores the signal and
        # exits when the program does.
        try:
            pgid = os.getpgid(target)
        except ProcessLookupError:
            return
        if pgid != os.getpgrp() and pgid in self.pids():
            try:
                os.killpg(pgid, sig)
                return
            except (ProcessLookupError, PermissionError):
                pass
        _kill(target, sig)

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = self._cg.stats() if self._cg else {}
        return out

    def freeze(self, frozen: bool) -> bool:
        return self._cg.freeze(frozen) if self._cg else False

    async def cleanup(self) -> None:
        if self._cg is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cg.remove)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class BwrapSubstrate(Substrate):
    """Namespaces (bubblewrap), setpriv, Landlock, seccomp, rlimits and cgroups."""

    name = "bwrap"

    def __init__(self, *, uid: int = 65534, gid: int = 65534, bwrap: str = "bwrap",
                 setpriv: str = "setpriv", confine_timeout: float = _CONFINE_TIMEOUT,
                 extra_ro_paths: tuple[Path, ...] = (), pool: int = 0,
                 cgroup_name: str = "agentix", sweep: bool = False) -> None:
        self.uid, self.gid = uid, gid
        self.cgroup_name = cgroup_name  # this kernel's subtree (cgroups.subtree_name(home))
        # kill and remove whatever is in that subtree at the first warm(): only for a subtree
        # that is this substrate's alone (a kernel's, named by its home), never the shared default
        self.sweep = sweep and cgroup_name != "agentix"
        self.pool_size = pool
        self._pool: list[_Slot] = []
        self._refill_task: asyncio.Task[None] | None = None
        self._swept = False
        self._spawns = 0
        self._pooled = 0
        self._bwrap_name, self._setpriv_name = bwrap, setpriv
        self.confine_timeout = confine_timeout
        self.extra_ro_paths = tuple(extra_ro_paths)
        self._status: dict[str, LayerStatus] | None = None
        self._hierarchy: cgroups.Hierarchy | None = None

    # -- host capabilities ------------------------------------------------------------
    def status(self) -> dict[str, LayerStatus]:
        if self._status is None:
            self._status = probe(self._bwrap_name, self._setpriv_name)
            self._hierarchy = cgroups.detect(self.cgroup_name)
        return self._status

    def statistics(self) -> dict[str, int]:
        """Counters: spawns attempted, how many used a pre-started launcher, launchers ready."""
        return {"spawns": self._spawns, "pooled": self._pooled, "pool_ready": len(self._pool)}

    def describe(self) -> dict[str, object]:
        st = self.status()
        return {"backend": self.name,
                "layers": [s.layer for s in st.values() if s.ok],
                "missing_layers": [s.to_dict() for s in st.values() if not s.ok]}

    # -- spawn --------------------------------------------------------------------------
    async def _spawn(self, spec: LaunchSpec) -> Handle:
        st = self.status()
        unavailable = [s for s in st.values() if not s.ok]
        if unavailable and not spec.degraded_ok:
            first = unavailable[0]
            raise IsolationUnavailable(
                f"cannot isolate agent {spec.name}: layer {first.layer} unavailable: {first.why}",
                layer=first.layer, why=first.why,
                missing=[s.layer for s in unavailable])
        host_missing = {s.layer: s.why for s in unavailable}
        limits = spec.limits.merged_over(DEFAULT_LIMITS)

        cg: cgroups.CgroupSet | None = None
        slot: _Slot | None = None
        cg_spec = cgroups.CgroupSpec(memory=limits.memory, cpu=limits.cpu, pids=limits.pids)
        parent_cg = spec.within._cg if isinstance(spec.within, BwrapHandle) else None
        if "cgroups" not in host_missing and parent_cg is not None:
            # an exec: nested in the agent's own group, whose limits bound both together
            try:
                cg = parent_cg.create_child(spec.agent_id, cg_spec)
            except (cgroups.CgroupError, OSError) as err:
                if not spec.degraded_ok:
                    raise IsolationUnavailable(f"cannot isolate {spec.name}: cgroups: {err}",
                                               layer="cgroups", why=str(err)) from None
                host_missing["cgroups"] = str(err)
                cg = None
        elif "cgroups" not in host_missing:
            try:
                assert self._hierarchy is not None
                slot = self._take_slot()
                self._spawns += 1
                if slot is not None:
                    self._pooled += 1
                    cg = slot.cg
                    cg.set_limits(cg_spec)  # before anything runs in it: the launcher only waits
                    cg.rename(spec.agent_id)
                else:
                    cg = cgroups.CgroupSet.create(self._hierarchy, spec.agent_id, cg_spec)
            except (cgroups.CgroupError, OSError) as err:
                if slot is not None:
                    await slot.retire()
                if not spec.degraded_ok:
                    raise IsolationUnavailable(f"cannot isolate agent {spec.name}: cgroups: {err}",
                                               layer="cgroups", why=str(err)) from None
                host_missing["cgroups"] = str(err)
                cg, slot = None, None
        try:
            return await self._start(spec, limits, cg, host_missing, slot)
        except BaseException:
            if slot is not None:
                slot.close()
            if cg is not None:
                cg.remove()
            raise
        finally:
            self._schedule_refill()

    # -- pre-started launchers ----------------------------------------------------------
    async def warm(self) -> None:
        """Sweep this kernel's cgroup subtree (first call), then fill the launcher pool."""
        st = self.status()
        if st["cgroups"].ok and self.sweep and not self._swept:
            assert self._hierarchy is not None
            # before any agent of this run exists: whatever is there, a previous run left
            n = await asyncio.to_thread(cgroups.sweep_stale, self._hierarchy)
            if n:
                log.warning("removed %d cgroups left by the previous kernel of this home", n)
            self._swept = True
        if not st["cgroups"].ok or not st["namespaces"].ok or self.pool_size <= 0:
            return
        while len(self._pool) < self.pool_size:
            try:
                self._pool.append(await _Slot.start(self._hierarchy))
            except (OSError, cgroups.CgroupError, asyncio.TimeoutError) as err:
                log.warning("cannot pre-start a launcher: %s", err)
                return

    def _take_slot(self) -> _Slot | None:
        while self._pool:
            slot = self._pool.pop(0)
            if slot.proc.returncode is None:
                return slot
            slot.close()
            slot.cg.remove()
        return None

    def _schedule_refill(self) -> None:
        if self.pool_size <= 0 or (self._refill_task is not None and not self._refill_task.done()):
            return
        self._refill_task = asyncio.get_running_loop().create_task(self.warm())

    async def close(self) -> None:
        """Retire the idle launchers and remove their cgroups (and the kernel's own subtree)."""
        if self._refill_task is not None:
            self._refill_task.cancel()
            try:
                await self._refill_task
            except (asyncio.CancelledError, Exception):
                pass
        pool, self._pool = self._pool, []
        for slot in pool:
            await slot.retire()
        if self.sweep and self._hierarchy is not None:
            cgroups.remove_subtree(self._hierarchy)  # only if empty: nothing of a live agent goes

    def _policy(self, spec: LaunchSpec, limits: Limits, host_missing: dict[str, str],
                use_bwrap: bool, inner_env: dict[str, str] | None = None) -> Policy:
        rl: dict[str, int] = {"core": 0}
        if limits.nofile is not None:
            rl["nofile"] = limits.nofile
        if limits.disk is not None:
            rl["fsize"] = limits.disk
        ws = "/workspace" if use_bwrap else str(spec.workspace)
        ro = ["/usr", "/bin", "/sbin", "/lib", "/lib64", *_ETC_FILES, *self._ro_paths(spec), "/proc"]
        required = [layer for layer in ALL_LAYERS if layer not in host_missing]
        return Policy(
            rlimits=rl,
            landlock_ro=ro,
            landlock_rw=[ws, "/tmp"] if use_bwrap else [ws],
            landlock_dev=_DEV_FILES,
            seccomp="preloaded" if (use_bwrap and "seccomp" not in host_missing)
            else ("load" if "seccomp" not in host_missing else "off"),
            # inet sockets; loopback_inet only inside a network namespace of its own (bwrap's)
            network=spec.network or (spec.loopback_inet and use_bwrap),
            required=required,
            degraded_ok=spec.degraded_ok,
            env=inner_env,
        )

    def _ro_paths(self, spec: LaunchSpec) -> list[str]:
        paths = [sys.base_prefix, sys.prefix, str(_src_root())]
        paths += [str(p) for p in (*self.extra_ro_paths, *spec.extra_ro_paths)]
        out: list[str] = []
        for p in paths:
            if p not in out:
                out.append(p)
        return out

    def _bwrap_argv(self, spec: LaunchSpec, limits: Limits, seccomp_fd: int | None) -> list[str]:
        bw = shutil.which(self._bwrap_name) or self._bwrap_name
        a = [bw, "--unshare-pid", "--unshare-uts", "--unshare-ipc", "--unshare-cgroup-try"]
        if not spec.network:
            a.append("--unshare-net")
        # one fixed hostname for every agent, warm or cold: a warm worker's UTS namespace is
        # made before it has a name (and sethostname is denied inside), so none is per-agent
        a += ["--die-with-parent", "--new-session", "--hostname", HOSTNAME]
        a += ["--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
            if os.path.islink(d):
                a += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                a += ["--ro-bind", d, d]
        a += ["--perms", "0755", "--dir", "/etc"]
        for f in _ETC_FILES:
            a += ["--ro-bind-try", f, f]
        # the private /tmp comes before the runtime binds: a venv or checkout that lives under
        # /tmp on the host (a CI clone, say) is bound on top of it rather than hidden by it
        # sticky and world-writable like a host's /tmp, so the unprivileged agent can use it;
        # its size is the agent's disk limit (tmpfs pages are charged to the agent's memory cgroup)
        if limits.disk is not None:
            a += ["--size", str(limits.disk)]
        a += ["--perms", "1777", "--tmpfs", "/tmp"]
        made: set[str] = {"/", "/etc", "/usr", "/tmp"}
        for p in self._ro_paths(spec):
            # bwrap makes missing parents 0700; the unprivileged agent must traverse them
            for parent in reversed(Path(p).parents):
                if str(parent) not in made and not str(parent).startswith("/usr/"):
                    made.add(str(parent))
                    a += ["--perms", "0755", "--dir", str(parent)]
            a += ["--ro-bind", p, p]
        a += ["--bind", str(spec.workspace), "/workspace", "--chdir", "/workspace"]
        a += ["--proc", "/proc", "--dev", "/dev"]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        a += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
              "--cap-add", "CAP_SETPCAP", "--"]
        return a

    def _setpriv_argv(self) -> list[str]:
        sp = shutil.which(self._setpriv_name) or self._setpriv_name
        return [sp, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    async def _start(self, spec: LaunchSpec, limits: Limits, cg: cgroups.CgroupSet | None,
                     host_missing: dict[str, str], slot: _Slot | None = None) -> Handle:
        use_bwrap = "namespaces" not in host_missing
        use_setpriv = "privileges" not in host_missing
        host_env, inner_env = split_env(spec.env)
        try:
            await asyncio.to_thread(_own_workspace, spec.workspace, self.uid if use_setpriv else None,
                                    self.gid)
        except (safewalk.WalkError, OSError) as err:
            raise IsolationUnavailable(f"cannot prepare the workspace of {spec.name}: {err}",
                                       layer="filesystem", why=str(err)) from None
        policy = self._policy(spec, limits, host_missing, use_bwrap, inner_env)

        fds_to_close: list[int] = []
        seccomp_fd = None
        if use_bwrap and policy.seccomp == "preloaded":
            r, w = os.pipe()
            os.write(w, seccomp.bpf_program(policy.network))
            os.close(w)
            seccomp_fd = r
            fds_to_close.append(r)
        status_r, status_w = os.pipe()
        fds_to_close.append(status_w)

        # a fixed, minimal environment: no name an agent chose reaches a host-side launcher
        env = {**_FIXED_ENV, **host_env, ENV_POLICY: policy.to_env(), ENV_FD: str(status_w)}
        argv: list[str] = []
        if cg is not None and slot is None:
            argv += ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", str(len(cg.procs_files)), *cg.procs_files]
        if use_bwrap:
            argv += self._bwrap_argv(spec, limits, seccomp_fd)
        if use_setpriv:
            argv += self._setpriv_argv()
        argv += list(spec.argv)

        pass_fds = [spec.channel_fd, status_w] + ([seccomp_fd] if seccomp_fd is not None else [])
        # stdout and stderr: the kernel's pipe (the agent never holds a kernel file), or a file
        out_fd = os.dup(spec.output_fd) if spec.output_fd is not None else os.open(
            spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        log_f = os.fdopen(out_fd, "wb", buffering=0)
        try:
            if slot is not None:
                proc = slot.proc
                slot.launch(argv, env, str(spec.workspace),
                            [(log_f.fileno(), 1), (log_f.fileno(), 2), *((fd, fd) for fd in pass_fds)])
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=str(spec.workspace), env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_f, stderr=log_f, pass_fds=pass_fds, start_new_session=True)
        except OSError as err:
            os.close(status_r)
            raise IsolationUnavailable(f"cannot start sandbox for {spec.name}: {err}",
                                       layer="namespaces", why=str(err)) from None
        finally:
            log_f.close()
            for fd in fds_to_close:
                os.close(fd)

        report = await _read_report(status_r, self.confine_timeout)
        if report is None or not report.get("ok"):
            _kill(proc.pid, _signal.SIGKILL)
            if cg is not None:
                cg.kill_all()
            rc = await proc.wait()
            if report is None:
                layer = "confine"
                if rc == 124:
                    layer, why = "cgroups", "could not join the agent's cgroup"
                elif rc == -_signal.SIGKILL:
                    why = (f"the program did not call agentix.sandbox.confine.apply_from_env() "
                           f"within {self.confine_timeout:g}s")
                else:
                    why = f"the sandbox exited with status {rc} before confining itself"
                why += f"; log tail: {_tail(spec.log_path)!r}"
            else:
                layer, why = str(report.get("layer")), str(report.get("why"))
            raise IsolationUnavailable(f"cannot isolate agent {spec.name}: layer {layer}: {why}",
                                       layer=layer, why=why)

        applied = [x for x in ("namespaces", "filesystem") if use_bwrap]
        if use_setpriv:
            applied.append("privileges")
        applied += [x for x in report.get("applied", []) if x not in applied]
        if cg is not None:
            applied.append("cgroups")
        details = [{"layer": k, "why": v} for k, v in host_missing.items()]
        details += [d for d in report.get("missing", []) if d.get("layer") not in host_missing]
        missing = [d["layer"] for d in details if d["layer"] not in applied]
        applied = [x for x in applied if x not in missing]
        handle = BwrapHandle(proc, cg, applied, missing, details)
        try:
            await self._verify(spec, handle, policy, applied)
        except BaseException:
            # whatever went wrong, nothing of this agent keeps running
            _kill(proc.pid, _signal.SIGKILL)
            if cg is not None:
                cg.kill_all()
            if proc.returncode is None:
                await asyncio.shield(proc.wait())
            raise
        return handle

    async def _verify(self, spec: LaunchSpec, handle: BwrapHandle, policy: Policy,
                      applied: list[str]) -> None:
        """Check every claimed layer from the host (sandbox/verify.py); kill on a mismatch."""
        pid = handle.agent_pid() if "namespaces" in applied else handle.pid
        if pid is None:
            # the program already ended: bwrap's init exits with its only child and the PID
            # namespace takes everything else with it, so nothing of it runs unconfined
            return
        else:
            bad = verify.check(
                pid, layers=applied, uid=self.uid if "privileges" in applied else None,
                gid=self.gid if "privileges" in applied else None, rlimits=policy.rlimits,
                cgroup_dirs=list(handle._cg.dirs.values()) if handle._cg is not None else (),
                network=spec.network)
        if not bad:
            return
        handle.signal(_signal.SIGKILL)
        await handle.wait()
        await handle.cleanup()
        first = bad[0]
        why = "; ".join(f"{b['layer']}: {b['why']}" for b in bad)
        log.warning("agent %s failed the outside check of its confinement: %s", spec.agent_id, why)
        raise IsolationUnavailable(
            f"agent {spec.name} claimed layers the host does not see (isolation_failed): {why}",
            layer=first["layer"], why=first["why"], reason="isolation_failed", mismatches=bad)


def split_env(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(variables for the host-side launchers, variables applied inside after confinement).

    Only ``HOST_ENV`` names go to the launchers. Every other variable is set in the agent
    process after confinement, so none of them can reach a host-side process or run code
    before the sandbox holds. Which names an agent may choose at all is the manifest's rule
    (``check_env_name``, applied when the manifest is parsed); kernel-side callers may set
    other fixed values (a build step's ``PYTHONHASHSEED``). A name that could not be carried
    safely (empty, ``=``, NUL) is refused."""
    host, inner = {}, {}
    for k, v in env.items():
        if k in HOST_ENV:
            host[k] = v
            continue
        if not k or "=" in k or "\x00" in k or "\x00" in v or not k.isascii() or not k.isprintable():
            raise InvalidRequest(f"env.{k!r}: not a name or value a process environment can hold",
                                 field=f"env.{k}")
        inner[k] = v
    return host, inner


_LAUNCHER = str(Path(__file__).with_name("_launcher.py"))


class _Slot:
    """A pre-started ``_launcher.py`` already inside its own (limit-less) cgroup."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket, cg: cgroups.CgroupSet) -> None:
        self.proc, self.sock, self.cg = proc, sock, cg

    @classmethod
    async def start(cls, hierarchy: cgroups.Hierarchy) -> _Slot:
        cg = cgroups.CgroupSet.create(hierarchy, f"slot-{uuid.uuid4().hex[:12]}", cgroups.CgroupSpec())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", "-I", _LAUNCHER, str(theirs.fileno()), *cg.procs_files,
                env={}, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),), cwd="/")
        except BaseException:
            ours.close()
            cg.remove()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        try:
            ready = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 1), 10)
        except BaseException:
            slot = cls(proc, ours, cg)
            await slot.retire()
            raise
        if ready != b"R":
            slot = cls(proc, ours, cg)
            await slot.retire()
            raise cgroups.CgroupError(f"launcher did not join its cgroup (exit {proc.returncode})")
        return cls(proc, ours, cg)

    def launch(self, argv: list[str], env: dict[str, str], cwd: str,
               fds: list[tuple[int, int]]) -> None:
        """Hand the launcher its argv and descriptors (fd -> number in the child); it execs."""
        payload = marshal.dumps((argv, env, cwd, [dst for _, dst in fds]))
        self.sock.setblocking(True)
        try:
            socket.send_fds(self.sock, [payload], [src for src, _ in fds])
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()

    async def retire(self) -> None:
        self.sock.close()  # EOF: the launcher exits
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            _kill(self.proc.pid, _signal.SIGKILL)
            await self.proc.wait()
        self.cg.remove()


def _own_workspace(ws: Path, uid: int | None, gid: int) -> None:
    """Hand the workspace (and what is in it) to the sandbox uid.

    The top directory is ``uid:root`` mode 0770: the agent owns it, and bwrap (root with
    its capabilities already dropped) can still ``chdir`` into it; nobody else can. Entries
    below it (a program the kernel just copied in, files the kernel's tools wrote) are
    re-owned by the safe walker, fd-relative and never following a link
    (``safewalk.chown_tree``), so an agent that swaps a directory for a symlink mid-walk
    gets nothing outside its tree chowned.
    """
    ws.mkdir(mode=0o700, parents=True, exist_ok=True)
    if uid is None:
        return
    fd = safewalk.open_dir(ws, follow=False)
    try:
        safewalk.chown_tree(fd, uid, gid)
        os.fchown(fd, uid, 0)
        os.fchmod(fd, 0o770)
    finally:
        os.close(fd)


async def _read_report(fd: int, timeout: float) -> dict | None:
    """One JSON line from ``fd`` (None on EOF or timeout); closes ``fd``."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            buf.extend(chunk)
            if b"\n" not in buf:
                return
        if not fut.done():
            fut.set_result(bytes(buf))

    loop.add_reader(fd, readable)
    try:
        data = await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        return None
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    line = data.split(b"\n", 1)[0]
    if not line:
        return None
    try:
        out = json.loads(line)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def _tail(path: Path, n: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""

