"""Warm agents: a pool of pre-confined, single-use interpreters that a spawn hands a program to.
(Over 400 lines: one pool's life (fill, verify, hand over, reject, retire): its verification and
its state read best together.)

A *worker* is started exactly like a cold agent (``BwrapSubstrate._start``: its own cgroup,
bwrap namespaces, seccomp, setpriv, then ``agentix.agents.boot`` applies rlimits,
no_new_privs and Landlock and reports), but with ``AGENTIX_WARM_FD`` instead of a program:
it imports the agent SDK and waits on a SOCK_SEQPACKET control socket. Its confinement is
checked from outside (``sandbox/verify.py``) when it reports ready; a worker that fails is
killed, audited (``worker.rejected``) and never used.

Before assignment a worker holds nothing: no identity socket (its only socket is the
control socket, which the kernel never serves system calls on), no ``AGENTIX_FD`` /
``AGENTIX_AGENT_ID``, no tokens (the kernel mints them for the agent, not the worker), an
empty workspace (``$AGENTIX_HOME/warm/<worker>``, bound at ``/workspace``), the shape's
default limits.

Assignment (``WarmBwrapSubstrate._spawn`` for a spec of the pool's *shape*)::

    verify from outside again (namespaces, uid, caps, NoNewPrivs, Seccomp, rlimits, cgroup)
    cgroup: write the agent's limits, rename worker -> agent id
    workspace: move the entries the kernel installed in workspaces/<agent_id> into the
               worker's placeholder (fd-relative renameat), then rename(2) the placeholder
               over the now-empty workspaces/<agent_id> (a bind mount follows its source
               directory across a rename), re-own it with the safe walker
    send one message: program, args, the agent's env, the identity fd number, the rlimits to
               lower to + SCM_RIGHTS [identity socket, output pipe]
    the worker lowers its rlimits, answers {"ok": true}, closes the control socket, runs
    verify from outside once more, as the cold path does (the lowered /proc/<pid>/limits)

If the pre-assignment check fails the worker is rejected and the next one (or the cold
path) is used, with nothing of the agent's changed. A worker is single use: it runs its
program in-process and exits with it.

*Shape* (``cold_reason``): no network, no extra read-only paths, not an ``exec`` (nested in
an agent's cgroup), the boot program, the default disk limit (the ``/tmp`` tmpfs size is
fixed when bwrap starts), ``nofile`` at most the shape's (rlimits can only be lowered),
memory and pids at least ``MIN_MEMORY``/``MIN_PIDS`` (the worker's interpreter and SDK are
already charged to its group), the kernel's fixed launcher environment. Anything else goes
cold, and so does every spawn while the pool is empty: a spawn never waits for a worker.

The pool refills in the background, one worker at a time; workers live in the kernel's
cgroup subtree; ``close`` retires them (EOF on the control socket, then SIGKILL to the
group). A kernel that dies takes its workers with it (bwrap ``--die-with-parent``), and
the next start sweeps the placeholders and cgroups left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal as _signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentix.core.errors import IsolationUnavailable
from agentix.core.manifest import Limits
from agentix.sandbox import cgroups, safewalk, verify
from agentix.sandbox.base import Handle, LaunchSpec, RecordEvent
from agentix.sandbox.bwrap import (
    DEFAULT_LIMITS,
    BwrapHandle,
    BwrapSubstrate,
    _kill,
    _own_workspace,
    split_env,
)

__all__ = ["BOOT_ARGV", "MIN_MEMORY", "MIN_PIDS", "WORKER_ENV", "WarmBwrapSubstrate", "cold_reason"]

log = logging.getLogger(__name__)

#: the argv prefix of every agent the kernel starts (kernel.BOOT_MODULE); a worker runs it bare
BOOT_ARGV = (sys.executable, "-I", "-B", "-u", "-m", "agentix.agents.boot")
WARM_FD = "AGENTIX_WARM_FD"
#: the host-side environment every worker starts with (and the one a warm spec must ask for)
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/workspace", "LANG": "C.UTF-8"}
_IDENTITY_ENV = ("AGENTIX_FD", "AGENTIX_AGENT_ID", "AGENTIX_AGENT_NAME")
MIN_MEMORY = 64 * 1024**2   # below this the worker's own interpreter + SDK leave too little
MIN_PIDS = 8
FILL_CONCURRENCY = 2        # workers started at once while the pool refills
_MEMORY_HEADROOM = 0.75     # at assignment the worker may use at most this share of the limit


def cold_reason(spec: LaunchSpec, limits: Limits, shape: Limits) -> str | None:
    """Why ``spec`` (with ``limits``, already merged over the defaults) cannot use a worker of
    ``shape``; None when it can. Pure: the same answer for the same inputs."""
    if spec.network or spec.loopback_inet:
        return "network"
    if spec.extra_ro_paths:
        return "extra_ro_paths"
    if spec.within is not None:
        return "exec"
    if tuple(spec.argv[:len(BOOT_ARGV)]) != BOOT_ARGV or len(spec.argv) <= len(BOOT_ARGV):
        return "program"
    if limits.disk != shape.disk:
        return "disk"
    if limits.nofile is None or shape.nofile is None or limits.nofile > shape.nofile:
        return "nofile"
    if limits.memory is None or limits.memory < MIN_MEMORY:
        return "memory"
    if limits.pids is None or limits.pids < MIN_PIDS:
        return "pids"
    host = {k: v for k, v in spec.env.items() if k in WORKER_ENV or k in _IDENTITY_ENV or k == WARM_FD}
    if WARM_FD in host or any(host.get(k) != v for k, v in WORKER_ENV.items()):
        return "env"
    return None


@dataclass(eq=False)
class _Worker:
    wid: str
    handle: BwrapHandle
    ctl: socket.socket
    cg: cgroups.CgroupSet
    placeholder: Path
    log_path: Path
    rlimits: dict[str, int]
    ready_at: float = field(default_factory=time.monotonic)
    watch: asyncio.Task[None] | None = None


class WarmBwrapSubstrate(BwrapSubstrate):
    """The bwrap backend plus a pool of ``warm_pool`` pre-confined workers (see module doc)."""

    def __init__(self, *, warm_root: Path, workspace_root: Path, warm_pool: int = 2,
                 shape: Limits = DEFAULT_LIMITS, record_event: RecordEvent | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.record_event = record_event  # audits a rejected worker (``worker.rejected``)
        self.warm_size = warm_pool
        self.shape = shape.merged_over(DEFAULT_LIMITS)
        # the placeholders: renamed into workspace_root at assignment, so the same filesystem
        self.warm_root = Path(warm_root)
        self.workspace_root = Path(workspace_root)
        self._workers: list[_Worker] = []
        self._fill_task: asyncio.Task[None] | None = None
        self._warm_swept = False
        self._closing = False
        self.counts: dict[str, int] = {"warm": 0, "cold": 0, "started": 0, "rejected": 0, "died_idle": 0}
        # the umask a cold agent inherits, handed to each worker at assignment: a worker started
        # while the kernel briefly narrows its umask (rpc/server.py binding its socket, 0o177)
        # must not keep that one (its agent could not make usable directories)
        self.umask = _own_umask()
        self.cold_reasons: dict[str, int] = {}

    # -- what the pool looks like ---------------------------------------------------------
    def pool_statistics(self) -> dict[str, Any]:
        return {"size": self.warm_size, "ready": len(self._workers), **self.counts,
                "cold_reasons": dict(self.cold_reasons),
                "shape": {"network": False, "extra_ro_paths": [], "disk": self.shape.disk,
                          "max_nofile": self.shape.nofile, "min_memory": MIN_MEMORY,
                          "min_pids": MIN_PIDS}}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "warm_pool": self.pool_statistics()}

    def statistics(self) -> dict[str, int]:
        return {**super().statistics(), "warm_ready": len(self._workers),
                **{f"warm_{k}": v for k, v in self.counts.items()}}

    def _pool_possible(self) -> bool:
        return self.warm_size > 0 and all(s.ok for s in self.status().values())

    def _same_filesystem(self) -> bool:
        self.warm_root.mkdir(mode=0o700, exist_ok=True)
        self.workspace_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.warm_root.stat().st_dev == self.workspace_root.stat().st_dev:
            return True
        log.warning("warm pool disabled: %s and %s are on different filesystems (a worker's "
                    "workspace is renamed into place)", self.warm_root, self.workspace_root)
        self.warm_size = 0
        return False

    # -- the pool's life -----------------------------------------------------------------
    async def warm(self) -> None:
        """The launcher pool and sweep (BwrapSubstrate.warm), then start filling the pool."""
        await super().warm()
        if not self._pool_possible():
            return
        if not self._warm_swept:
            # placeholders of an earlier run of this home (its workers died with it)
            await asyncio.to_thread(shutil.rmtree, self.warm_root, True)
            self._warm_swept = True
            if not self._same_filesystem():
                return
        self._schedule_fill()

    def _schedule_fill(self) -> None:
        if (self._closing or not self._warm_swept or not self._pool_possible()
                or len(self._workers) >= self.warm_size):
            return  # not before warm() swept the placeholders of an earlier run
        if self._fill_task is not None and not self._fill_task.done():
            return
        self._fill_task = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        """Start workers until the pool is full, ``FILL_CONCURRENCY`` at a time (a start waits
        mostly on cgroup migration and exec, not CPU); stop after 3 rounds that all failed."""
        failures = 0
        while not self._closing and len(self._workers) < self.warm_size and failures < 3:
            n = min(FILL_CONCURRENCY, self.warm_size - len(self._workers))
            if any(await asyncio.gather(*(self._start_one() for _ in range(n)))):
                failures = 0
            else:
                failures += 1
                await asyncio.sleep(0.5 * failures)

    async def _start_one(self) -> bool:
        """Start one worker and put it in the pool as soon as it is verified; False if it failed."""
        try:
            w = await self._start_worker()
        except (OSError, cgroups.CgroupError, asyncio.TimeoutError) as err:
            log.warning("cannot start a warm worker: %s", err)
            return False
        if w is None:
            return False
        if self._closing or len(self._workers) >= self.warm_size:
            await self._discard(w)
        else:
            self._workers.append(w)
            w.watch = asyncio.get_running_loop().create_task(self._watch(w))
        return True

    async def _start_worker(self) -> _Worker | None:
        """One worker, started as a cold agent would be and verified from outside; None if
        it failed (killed, cleaned up and audited)."""
        assert self._hierarchy is not None
        wid = "warm-" + uuid.uuid4().hex[:12]
        self.warm_root.mkdir(mode=0o700, exist_ok=True)
        placeholder = self.warm_root / wid
        placeholder.mkdir(mode=0o700)
        log_path = self.warm_root / f"{wid}.log"
        shape = self.shape
        try:
            cg = await asyncio.to_thread(cgroups.CgroupSet.create, self._hierarchy, wid, cgroups.CgroupSpec(
                memory=shape.memory, cpu=shape.cpu, pids=shape.pids))
        except BaseException:
            shutil.rmtree(placeholder, ignore_errors=True)
            raise
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(theirs.fileno(), True)
        spec = LaunchSpec(agent_id=wid, name=wid, argv=list(BOOT_ARGV), workspace=placeholder,
                          env={**WORKER_ENV, WARM_FD: str(theirs.fileno())},
                          channel_fd=theirs.fileno(), log_path=log_path, limits=shape)
        self.counts["started"] += 1
        try:
            handle = await self._start(spec, shape, cg, {}, None)
        except IsolationUnavailable as err:
            ours.close()
            await asyncio.to_thread(self._remove_files, cg, placeholder, log_path)
            await self._audit_rejected(wid, "ready", [{"layer": str(err.data.get("layer")),
                                                        "why": str(err.data.get("why") or err.message)}])
            return None
        except BaseException:
            ours.close()
            await asyncio.to_thread(self._remove_files, cg, placeholder, log_path)
            raise
        finally:
            theirs.close()
        assert isinstance(handle, BwrapHandle)
        ours.setblocking(False)
        rlimits = self._policy(spec, shape, {}, True).rlimits
        w = _Worker(wid, handle, ours, cg, placeholder, log_path, rlimits)
        if handle.missing_layers:  # strict by construction; a worker never runs degraded
            await self._reject(w, "ready", [{"layer": x, "why": "missing"} for x in handle.missing_layers])
            return None
        return w

    async def _watch(self, w: _Worker) -> None:
        """A worker that dies while idle is removed and replaced (never assigned)."""
        await w.handle._proc.wait()
        if w in self._workers:
            self._workers.remove(w)
            self.counts["died_idle"] += 1
            log.warning("warm worker %s exited while idle (status %s)", w.wid, w.handle._proc.returncode)
            await self._discard(w)
            self._schedule_fill()

    async def _discard(self, w: _Worker) -> None:
        """Kill a worker that will not be used and remove its group and placeholder."""
        if w.watch is not None and w.watch is not asyncio.current_task():
            w.watch.cancel()
        w.ctl.close()
        w.cg.kill_all()
        _kill(w.handle.pid, _signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(w.handle._proc.wait()), 10)
        except asyncio.TimeoutError:
            log.error("warm worker %s did not die after SIGKILL", w.wid)
        await asyncio.to_thread(self._remove_files, w.cg, w.placeholder, w.log_path)

    @staticmethod
    def _remove_files(cg: cgroups.CgroupSet, placeholder: Path, log_path: Path) -> None:
        cg.remove()
        shutil.rmtree(placeholder, ignore_errors=True)
        log_path.unlink(missing_ok=True)

    async def _reject(self, w: _Worker, when: str, bad: list[dict[str, str]]) -> None:
        await self._discard(w)
        await self._audit_rejected(w.wid, when, bad)

    async def _audit_rejected(self, wid: str, when: str, bad: list[dict[str, str]]) -> None:
        self.counts["rejected"] += 1
        why = "; ".join(f"{b['layer']}: {b['why']}" for b in bad)
        log.warning("warm worker %s failed verification at %s and was killed: %s", wid, when, why)
        if self.record_event is not None:
            try:
                await self.record_event("worker.rejected", None,
                                        {"worker": wid, "when": when, "mismatches": bad})
            except Exception:  # noqa: BLE001 - auditing must not break the pool
                log.exception("could not audit the rejected warm worker %s", wid)

    async def close(self) -> None:
        """Retire every idle worker (EOF, then SIGKILL), remove their groups, then the rest."""
        self._closing = True
        if self._fill_task is not None:
            self._fill_task.cancel()
            try:
                await self._fill_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        workers, self._workers = self._workers, []
        for w in workers:
            await self._discard(w)
        await asyncio.to_thread(shutil.rmtree, self.warm_root, True)
        await super().close()

    # -- spawn ---------------------------------------------------------------------------
    async def _spawn(self, spec: LaunchSpec) -> Handle:
        """A worker when ``spec`` fits the shape and one is ready, else the cold path
        (``Substrate.spawn`` wraps this: only the agentix error family leaves)."""
        reason: str | None = "pool_disabled"
        try:
            if self._pool_possible():
                limits = spec.limits.merged_over(DEFAULT_LIMITS)
                reason = cold_reason(spec, limits, self.shape)
                if reason is None:
                    handle = await self._spawn_warm(spec, limits)
                    if handle is not None:
                        self.counts["warm"] += 1
                        return handle
                    reason = "pool_empty"
            self.counts["cold"] += 1
            self.cold_reasons[reason] = self.cold_reasons.get(reason, 0) + 1
            return await super()._spawn(spec)
        finally:
            self._schedule_fill()

    def _take(self) -> _Worker | None:
        while self._workers:
            w = self._workers.pop(0)
            if w.watch is not None:
                w.watch.cancel()
                w.watch = None
            if w.handle._proc.returncode is None:
                return w
            asyncio.get_running_loop().create_task(self._discard(w))
        return None

    async def _spawn_warm(self, spec: LaunchSpec, limits: Limits) -> Handle | None:
        """Assign a verified idle worker to ``spec``; None when there is none (go cold)."""
        while True:
            w = self._take()
            if w is None:
                return None
            pid = w.handle.agent_pid()
            bad = [{"layer": "namespaces", "why": "the worker has no running program"}] if pid is None else \
                verify.check(pid, layers=w.handle.layers, uid=self.uid, gid=self.gid, rlimits=w.rlimits,
                             cgroup_dirs=list(w.cg.dirs.values()), network=False)
            try:
                early: bytes | None = w.ctl.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                early = None
            if early is not None:  # it spoke (or hung up) before it was asked: not what boot does
                bad = [*bad, {"layer": "control", "why": "the worker wrote on or closed its control "
                              "socket before assignment"}]
            if bad:
                await self._reject(w, "assignment", bad)
                continue
            used = w.cg.stats().get("memory_current")
            if isinstance(used, int) and limits.memory is not None and used > limits.memory * _MEMORY_HEADROOM:
                # the agent's memory limit is too tight for an interpreter already running: keep
                # the worker for the next spawn, start this one cold
                self._workers.insert(0, w)
                w.watch = asyncio.get_running_loop().create_task(self._watch(w))
                return None
            return await self._assign(w, spec, limits)

    async def _assign(self, w: _Worker, spec: LaunchSpec, limits: Limits) -> Handle:
        host_env, inner_env = split_env(spec.env)
        policy = self._policy(spec, limits, {}, True, inner_env)
        handle = w.handle
        out_fd = os.dup(spec.output_fd) if spec.output_fd is not None else os.open(
            spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            w.cg.set_limits(cgroups.CgroupSpec(memory=limits.memory, cpu=limits.cpu, pids=limits.pids))
            w.cg.rename(spec.agent_id)
            await asyncio.to_thread(_move_workspace, spec.workspace, w.placeholder, self.uid, self.gid)
            n = len(BOOT_ARGV)
            msg = {"target": spec.argv[n], "args": list(spec.argv[n + 1:]), "fd": spec.channel_fd,
                   "env": {**{k: host_env[k] for k in _IDENTITY_ENV if k in host_env}, **inner_env},
                   "rlimits": policy.rlimits, "umask": self.umask}
            loop = asyncio.get_running_loop()
            w.ctl.setblocking(True)  # one small datagram into an empty buffer: never blocks
            socket.send_fds(w.ctl, [json.dumps(msg).encode()], [spec.channel_fd, out_fd])
            w.ctl.setblocking(False)
            reply = await asyncio.wait_for(loop.sock_recv(w.ctl, 4096), self.confine_timeout)
            ok = json.loads(reply or b"{}") if reply else {}
            if ok.get("ok") is not True:
                why = str(ok.get("why") or "the worker exited before it took the program")
                raise IsolationUnavailable(f"cannot start agent {spec.name} in a warm worker: {why}",
                                           layer="rlimits" if "rlimits" in why else "confine", why=why)
        except BaseException as err:
            handle.signal(_signal.SIGKILL)
            await asyncio.shield(handle.wait())
            await handle.cleanup()
            await asyncio.to_thread(shutil.rmtree, w.placeholder, True)
            if isinstance(err, (OSError, ValueError, asyncio.TimeoutError, safewalk.WalkError)):
                raise IsolationUnavailable(f"cannot start agent {spec.name} in a warm worker: {err}",
                                           layer="filesystem", why=str(err)) from None
            raise
        finally:
            os.close(out_fd)
            w.ctl.close()
            w.log_path.unlink(missing_ok=True)
        handle.warm = True
        await self._verify(spec, handle, policy, handle.layers)
        return handle


def _move_workspace(workspace: Path, placeholder: Path, uid: int, gid: int) -> None:
    """Put what the kernel installed in ``workspace`` into ``placeholder`` and the placeholder
    at ``workspace`` (fd-relative renames; the final rename replaces the empty directory),
    then hand it to the sandbox uid as the cold path does (``bwrap._own_workspace``)."""
    src = safewalk.open_dir(workspace, follow=False)
    try:
        dst = safewalk.open_dir(placeholder, follow=False)
        try:
            if os.listdir(dst):
                raise safewalk.WalkError(str(placeholder), "a warm worker's workspace is not empty")
            for name in os.listdir(src):
                os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.rename(placeholder, workspace)
    _own_workspace(workspace, uid, gid)


def _own_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` would, briefly)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
