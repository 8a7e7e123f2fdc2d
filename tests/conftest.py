"""Shared fixtures: a REAL kernel daemon in a subprocess, and helpers to run agent programs.

``kernel`` starts ``python -m agentix.kernel.daemon --home <tmp> --isolation <mode>``, waits
for its socket, yields a ``Daemon`` (an ``agentix.sdk.Kernel`` client plus the home path),
and at the end shuts it down and checks that no agent process (nor anything left in an
agent's process group) survived.

The isolation mode is ONE fixture, ``isolation_mode``: ``strict`` (the sandbox backend) by
default; ``AGENTIX_TEST_ISOLATION=degraded`` runs the same suite on a host without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentix.kernel.process import proc_start_time
from agentix.sdk import Kernel
from agentix.sdk.errors import KernelNotRunning
from agentix.sdk.kernel import AgentInfo

STANDARD = ("preset: standard",)  # what the kernel tests give their agents

PROGRAMS = Path(__file__).parent / "programs"
ISOLATION = os.environ.get("AGENTIX_TEST_ISOLATION", "strict")


def program(name: str) -> str:
    """Absolute path of a test agent program under tests/programs/."""
    p = PROGRAMS / name
    assert p.exists(), p
    return str(p)


def short_tmp(prefix: str = "ax-") -> Path:
    """A short temporary directory (AF_UNIX socket paths are limited to 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def live_processes() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live process on the host (zombies left out)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] not in ("Z", "X"):
            yield int(entry), int(fields[1]), int(fields[2])


def pids_in_groups(pgids: set[int]) -> list[int]:
    """Live processes whose process group is one of ``pgids`` (an agent's leftovers)."""
    return [pid for pid, _, pgid in live_processes() if pgid in pgids]


def group_survivors(leaders: dict[int, int]) -> list[int]:
    """Live processes in the process group of one of ``leaders`` (pid -> its start time when it
    was ours). A group whose number now has a leader that started at another time is another
    program's (the pid was reused: this host runs other tests and kernels), never counted; a
    group without a leader still holds its number, so its members are ours."""
    return [pid for pid, _, pgid in live_processes()
            if pgid in leaders and proc_start_time(pgid) in (None, leaders[pgid])]


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (by parent pid), whatever namespace or session it is in."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in live_processes():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    stack = [root]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def wait_until(pred: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``pred`` until true or ``timeout`` (monotonic); return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def open_fds() -> dict[int, str]:
    """The test process's open file descriptors and what each is (``/proc/self/fd``)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail a test that leaves file descriptors open in the test process (the suite's one
    process held more than 1024 at once: ``select`` fails past FD_SETSIZE). Put it first in a
    module's fixtures (``pytestmark = pytest.mark.usefixtures("no_fd_leak")``): it is set up
    before the test's own fixtures and checks after their teardown. A descriptor only garbage
    collection would close, or one a thread closes as it ends, is waited for (a settle, not a
    timed check)."""
    import gc

    before = open_fds()

    def leaked() -> dict[int, str]:
        now = open_fds()
        return {fd: what for fd, what in now.items() if before.get(fd) != what}

    yield
    gc.collect()
    if not wait_until(lambda: not leaked(), timeout=10):
        left = leaked()
        assert not left, f"the test left {len(left)} file descriptors open: {sorted(left.items())}"


@contextlib.contextmanager
def cli_face(argv: list[str], port: int, env: dict[str, str] | None = None,
             timeout: float = 20) -> Iterator[subprocess.Popen[bytes]]:
    """``agentix ARGV`` serving on 127.0.0.1:``port``: yields the process once the port accepts
    (its stderr in the failure if it exits first), stops it afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "agentix.cli.main", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=None if env is None else {**os.environ, **env})

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return proc.poll() is not None

    try:
        assert wait_until(up, timeout) and proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_mcp_http(home: Path) -> Iterator[tuple[str, int]]:
    """``agentix mcp --http`` for the kernel at ``home`` on a free loopback port: yields its
    endpoint URL and port, stops it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with cli_face(["--home", str(home), "mcp", "--http", f"127.0.0.1:{port}"], port):
        yield f"http://127.0.0.1:{port}/mcp", port


async def until(pred: Any, timeout: float = 10.0) -> None:
    """In a coroutine: wait for ``pred()`` to hold (the condition, not a guessed delay); fail
    after ``timeout`` seconds naming it."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"never held: {getattr(pred, '__name__', pred)}"
        await asyncio.sleep(0.002)


class Daemon:
    """A kernel daemon running in a subprocess, with an SDK client connected to it."""

    def __init__(self, home: Path, isolation: str, config: dict[str, Any] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.isolation = isolation
        home.mkdir(parents=True, exist_ok=True)
        if config:
            lines = ["[kernel]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
            (home / "config.toml").write_text("\n".join(lines) + "\n")
        self.log = open(home.parent / f"{home.name}-daemon.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home),
             "--isolation", isolation, *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.socket = home / "agentixd.sock"
        # up when its socket answers, failed when its process ends: no guessed deadline (a
        # loaded 2-core host once took over 15 s to start one); a kernel that never comes up
        # is stopped by the test's own timeout (pytest-timeout), and killed here on the way out
        try:
            while not self.socket.exists() and self.proc.poll() is None:
                time.sleep(0.01)
            # the socket file appears at bind(), a moment before listen(): connect until it answers
            self.client = self._try_connect()
            while self.client is None and self.proc.poll() is None:
                time.sleep(0.01)
                self.client = self._try_connect()
        except BaseException:
            self._abandon()
            raise
        if self.client is None:
            self._abandon()
            raise RuntimeError(f"kernel did not start: {self.daemon_log()}")
        #: every agent process this test saw, pid -> its start time then (a pid's identity: a
        #: reused pid, another program's process, has another start time)
        self.seen: dict[int, int] = {}

    def _abandon(self) -> None:
        # a kernel that did not come up is not left running (it is this test's own child:
        # killed by its Popen handle, never by a pid looked up again)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def _try_connect(self) -> Kernel | None:
        try:
            return Kernel(self.home)
        except KernelNotRunning:
            return None

    def daemon_log(self) -> str:
        self.log.flush()
        return (self.home.parent / f"{self.home.name}-daemon.log").read_text(errors="replace")

    def see(self, pid: int | None) -> None:
        """Remember ``pid`` as one of this kernel's processes (while it is one: call it when the
        pid was just reported live)."""
        t = proc_start_time(pid) if pid else None
        if pid and t is not None:
            self.seen.setdefault(pid, t)

    def connect(self) -> Kernel:
        return Kernel(self.home)

    # -- helpers for tests
    def spawn(self, prog: str, *args: str, name: str | None = None, message: Any = None,
              **fields: Any) -> str:
        # kernel-mechanics tests run agents with the standard preset (agents hold nothing by
        # default); capability refusals are tested in tests/security/test_scenarios_12_36.py
        fields.setdefault("capabilities", list(STANDARD))
        manifest = {"name": name or Path(prog).stem.replace("_", "-"), "program": program(prog),
                    "args": list(args), **fields}
        r = self.client.spawn(manifest, message=message)
        self.see(r.pid)
        return r.agent_id

    def run(self, prog: str, *args: str, timeout: float = 30, **kw: Any) -> AgentInfo:
        aid = self.spawn(prog, *args, **kw)
        return self.client.wait(aid, timeout=timeout)

    def known(self) -> dict[int, int]:
        """This kernel's processes: those seen, and every live agent's now (an exited agent's
        pid is not looked at again: another program may have it by now)."""
        try:
            for a in self.client.list():
                if a.state in ("running", "paused"):
                    self.see(a.pid)
        except Exception:
            pass
        return dict(self.seen)

    def survivors(self, known: dict[int, int]) -> list[int]:
        """Those of ``known`` still alive as the same process, and their groups' members."""
        same = [p for p, t in known.items() if pid_alive(p) and proc_start_time(p) == t]
        return sorted(set(same) | set(group_survivors(known)))

    def stop(self) -> None:
        """Shut the kernel down; fail if it or any agent process survives."""
        known = self.known()
        if self.proc.poll() is None:
            for p in descendants(self.proc.pid):  # agents and everything they started
                self.see(p)
            known = dict(self.seen)
            try:
                self.client.shutdown()
            except Exception:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the kernel did not stop within 30 s")
        self.client.close()
        self.log.close()
        # sandboxed processes die with their namespace a moment after its leader: allow 2 s
        wait_until(lambda: not self.survivors(known), timeout=2)
        leftovers = self.survivors(known)
        for p in leftovers:  # clean up before failing so later tests are not hurt
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leftovers, f"agent processes survived the kernel: {sorted(set(leftovers))}"
        assert self.proc.returncode == 0, f"kernel exited {self.proc.returncode}: {self.daemon_log()[-2000:]}"


@pytest.fixture(scope="session")
def isolation_mode() -> str:
    """The isolation mode every test kernel runs with (one switch for the whole suite)."""
    return ISOLATION


@pytest.fixture
def start_kernel(isolation_mode: str) -> Iterator[Any]:
    """Factory: ``start_kernel(config={...})`` starts a fresh daemon; all are stopped at the end.
    ``prepare(home)`` runs on the new home before the daemon starts (a config.toml of its own,
    files the test plants)."""
    started: list[tuple[Daemon, Path]] = []

    def start(config: dict[str, Any] | None = None, isolation: str | None = None,
              prepare: Any = None) -> Daemon:
        tmp = short_tmp()
        if prepare is not None:
            (tmp / "h").mkdir(parents=True)
            prepare(tmp / "h")
        d = Daemon(tmp / "h", isolation or isolation_mode, config)
        started.append((d, tmp))
        return d

    yield start
    errors = []
    for d, tmp in started:
        try:
            d.stop()
        except AssertionError as err:
            errors.append(str(err))
        shutil.rmtree(tmp, ignore_errors=True)
    assert not errors, errors


@pytest.fixture
def kernel(start_kernel: Any) -> Daemon:
    """A fresh kernel daemon with the default configuration."""
    return start_kernel()


def shared_daemon(isolation_mode: str) -> Iterator[Daemon]:
    """A kernel in a short temporary home, stopped and removed afterwards (the body of the
    module-scoped kernel fixtures)."""
    tmp = short_tmp()
    d = Daemon(tmp / "h", isolation_mode)
    yield d
    try:
        d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def module_kernel(isolation_mode: str) -> Iterator[Daemon]:
    """One kernel shared by a module's tests that do not depend on a fresh kernel's state."""
    yield from shared_daemon(isolation_mode)
