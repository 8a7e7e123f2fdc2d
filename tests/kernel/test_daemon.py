"""The daemon: `agentix up` / `up --foreground` / `down`, pidfile, log file, socket security."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentix.sdk import Kernel
from conftest import pid_alive, program, short_tmp, wait_until

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTIX, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def tmp_home():
    tmp = short_tmp()
    home = tmp / "h"
    yield home
    # never leave a daemon behind
    try:
        pid = int((home / "agentixd.pid").read_text())
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    shutil.rmtree(tmp, ignore_errors=True)


def test_up_runs_in_background_with_pidfile_log_and_private_socket(tmp_home: Path, isolation_mode: str) -> None:
    r = cli(tmp_home, "up", "--isolation", isolation_mode)
    assert r.returncode == 0, r.stderr
    pid = int((tmp_home / "agentixd.pid").read_text())
    assert pid_alive(pid)
    assert (tmp_home / "agentixd.log").is_file()
    assert "listening on" in (tmp_home / "agentixd.log").read_text()
    st = os.stat(tmp_home / "agentixd.sock")
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    # the daemon is detached from us: its own session
    assert os.getsid(pid) == pid
    info = json.loads(cli(tmp_home, "info", "--json").stdout)
    assert info["pid"] == pid and info["home"] == str(tmp_home)
    # $AGENTIX_HOME is honoured by the CLI as well as --home
    r = subprocess.run([*AGENTIX, "info", "--json"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "AGENTIX_HOME": str(tmp_home)})
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == pid
    # a second `up` refuses (exit 3) and does not disturb the first
    r2 = cli(tmp_home, "up", "--isolation", isolation_mode)
    assert r2.returncode == 3
    assert int((tmp_home / "agentixd.pid").read_text()) == pid and pid_alive(pid)

    # `down` stops the agents first, then the kernel; nothing is left behind
    r = cli(tmp_home, "spawn", "--program", program("sleeper.py"), "--json")
    assert r.returncode == 0, r.stderr
    agent_pid = json.loads(r.stdout)["pid"]
    assert pid_alive(agent_pid)
    r = cli(tmp_home, "down")
    assert r.returncode == 0, r.stderr
    assert not pid_alive(pid) and not pid_alive(agent_pid)
    assert not (tmp_home / "agentixd.sock").exists()
    assert not (tmp_home / "agentixd.pid").exists()
    kinds = [json.loads(line)["kind"] for line in (tmp_home / "events.jsonl").read_text().splitlines()]
    assert kinds.index("agent.exited") < kinds.index("kernel.stopped")
    assert cli(tmp_home, "info").returncode == 3  # no kernel now


def test_up_foreground_stays_attached_and_stops_cleanly_on_sigterm(tmp_home: Path, isolation_mode: str) -> None:
    proc = subprocess.Popen([*AGENTIX, "--home", str(tmp_home), "up", "--foreground", "--isolation", isolation_mode],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: (tmp_home / "agentixd.sock").exists(), timeout=15)
        assert int((tmp_home / "agentixd.pid").read_text()) == proc.pid  # runs in this very process
        with Kernel(tmp_home) as k:
            a = k.spawn(program=program("sleeper.py"))
            assert k.info()["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not pid_alive(a.pid)
        out = proc.stdout.read().decode()
        assert "listening on" in out and "stopped" in out  # logs go to the terminal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_daemon_on_the_same_home_is_refused(kernel) -> None:
    r = subprocess.run([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(kernel.home),
                        "--isolation", kernel.isolation], capture_output=True, text=True, timeout=30)
    assert r.returncode == 3, r.stderr
    assert "already running" in r.stderr
    assert kernel.client.info()["pid"] == kernel.proc.pid  # the first one is untouched


def test_bad_config_stops_the_daemon_naming_the_key(tmp_home: Path) -> None:
    tmp_home.mkdir(parents=True)
    (tmp_home / "config.toml").write_text("[kernel]\nmax_depth = -3\n")
    r = subprocess.run([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(tmp_home)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "kernel.max_depth" in r.stderr
    assert not (tmp_home / "agentixd.sock").exists()


def _connect_as_nobody(path: str, request: bytes) -> dict:
    """Fork a child that drops to uid 65534, connects to ``path`` and sends ``request``."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(rfd)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(path)
            except OSError as err:
                os.write(wfd, json.dumps({"connect_error": err.errno}).encode())
                os._exit(0)
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            os.write(wfd, json.dumps({"reply": data.decode(errors="replace"), "closed": True}).encode())
        except BaseException as err:  # noqa: BLE001
            os.write(wfd, json.dumps({"child_error": repr(err)}).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_socket_refuses_other_users_by_mode_and_by_peer_credentials(kernel) -> None:
    import errno

    sock = kernel.socket
    # let uid 65534 reach the socket's directory, so only the socket itself protects it
    opened = [sock.parent.parent, sock.parent]
    old_modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in opened}
    for p in opened:
        os.chmod(p, 0o711)
    spawn = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "agent.spawn",
                        "params": {"manifest": {"name": "intruder", "program": program("sleeper.py")}}}).encode() + b"\n"
    try:
        # 1. the 0600 mode stops the connection
        r = _connect_as_nobody(str(sock), spawn)
        assert r == {"connect_error": errno.EACCES}
        # 2. with the mode opened, SO_PEERCRED still refuses the foreign uid
        os.chmod(sock, 0o666)
        try:
            r = _connect_as_nobody(str(sock), spawn)
        finally:
            os.chmod(sock, 0o600)
        assert r.get("closed") is True, r
        reply = json.loads(r["reply"].splitlines()[0])
        assert "error" in reply and "permission denied" in reply["error"]["message"]
        assert reply["error"]["data"]["uid"] == 65534
    finally:
        for p, m in old_modes.items():
            os.chmod(p, m)
    # nothing was done for the intruder, and the kernel still serves its owner
    assert kernel.client.list() == []
    assert kernel.client.info()["agents"]["total"] == 0


def test_up_recovers_from_a_stale_pidfile_and_socket_and_down_without_a_kernel_fails(tmp_home: Path, isolation_mode: str) -> None:
    tmp_home.mkdir(parents=True)
    # a crashed kernel left its pidfile (a pid that is gone) and its socket file behind
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_home / "agentixd.pid").write_text(f"{dead.pid}\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_home / "agentixd.sock"))
    stale.close()
    assert cli(tmp_home, "down").returncode == 3  # nothing answers: "no kernel"
    r = cli(tmp_home, "up", "--isolation", isolation_mode)
    assert r.returncode == 0, r.stderr
    pid = int((tmp_home / "agentixd.pid").read_text())
    assert pid != dead.pid and pid_alive(pid)
    assert cli(tmp_home, "down").returncode == 0
    assert not pid_alive(pid)
