"""The audit log wired into the real kernel daemon: RPC, CLI, tampering, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentix.sdk import Kernel

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*AGENTIX, "--home", str(home), *args], capture_output=True, text=True,
                       timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"agentix {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def start(home: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home),
                             "--isolation", "degraded"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with Kernel(home, connect_timeout=0.5) as k:
                k.info()
            return proc
        except Exception:
            if proc.poll() is not None:
                raise AssertionError("kernel exited at start") from None
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("kernel did not start")


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def test_rpc_cli_and_offline_verification(home, tmp_path):
    proc = start(home)
    try:
        with Kernel(home) as k:
            entries = k.audit_tail(0, limit=50)
            assert entries[0]["kind"] == "kernel.started" and entries[0]["seq"] == 1
            assert k.audit_verify()["ok"]
            head = k.audit_head()
            assert head["size"] >= 1 and len(head["signature"]) == 128
            k.invoke("echo", {"text": "hi"})  # a recorded operator tool call
            kinds = [e["kind"] for e in k.audit_tail(0, limit=50)]
            assert "tool.result" in kinds or "tool.invoked" in kinds
            assert [e["kind"] for e in k.audit_tail(0, kind="kernel")] == ["kernel.started"]
        r = cli(home, "audit", "tail", "--json")
        assert json.loads(r.stdout.splitlines()[0])["kind"] == "kernel.started"
        proof_file = tmp_path / "proof.json"
        cli(home, "audit", "prove", "1", "-o", str(proof_file))
        # offline: only the proof and the public key
        pub = (home / "keys" / "audit_ed25519.pub").read_text().strip()
        r = cli(tmp_path / "elsewhere", "audit", "check-proof", str(proof_file), "--key", pub)
        assert "valid: entry 1" in r.stdout
        forged = json.loads(proof_file.read_text())
        forged["entry"]["data"]["pid"] = 1
        (tmp_path / "forged.json").write_text(json.dumps(forged))
        r = cli(tmp_path, "audit", "check-proof", str(tmp_path / "forged.json"), "--key", pub,
                check=False)
        assert r.returncode == 1 and "INVALID" in r.stderr
        assert cli(home, "audit", "verify").returncode == 0
    finally:
        with Kernel(home) as k:
            k.conn.call("kernel.shutdown")
        proc.wait(timeout=30)
    # the stop was recorded and the chain is intact, offline
    r = cli(home, "audit", "export")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[-1]["kind"] == "kernel.stopped"
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    assert cli(home, "audit", "verify", "--offline").returncode == 0
    # tamper with one entry: verify names it and exits 1
    c = sqlite3.connect(home / "agentix.db", isolation_level=None)
    body = c.execute("SELECT body FROM audit_entries WHERE seq=2").fetchone()[0]
    c.execute("UPDATE audit_entries SET body=? WHERE seq=2", (body.replace(b"}", b" }", 1),))
    c.close()
    r = cli(home, "audit", "verify", "--offline", "--json", check=False)
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert (rep["first_bad_seq"], rep["reason"]) == (2, "edited")


def test_kill9_of_the_kernel_is_recovered(home):
    proc = start(home)
    with Kernel(home) as k:
        for i in range(20):
            k.invoke("echo", {"text": str(i)})
        acked = k.audit_tail(0, limit=1000)[-1]["seq"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc = start(home)
    try:
        with Kernel(home) as k:
            entries = k.audit_tail(0, limit=10_000)
            seqs = [e["seq"] for e in entries]
            assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] > acked
            rec = [e for e in entries if e["kind"] == "kernel.recovered"]
            assert len(rec) == 1 and rec[0]["data"]["clean_shutdown"] is False
            assert rec[0]["data"]["chain_ok"] is True
            assert k.audit_verify()["ok"]
    finally:
        with Kernel(home) as k:
            k.conn.call("kernel.shutdown")
        proc.wait(timeout=30)


def test_kill9_running_agents_are_recorded_kernel_restart_and_none_survives(home, tmp_path):
    prog = tmp_path / "sleeper.py"
    prog.write_text("import time\nfrom agentix.sdk import agent\nk = agent.connect()\n"
                    "k.info()\nwhile True:\n    time.sleep(1)\n")
    proc = start(home)
    with Kernel(home) as k:
        a = k.spawn(program=str(prog), name="sleeper")
        deadline = time.monotonic() + 20
        while k.status(a.agent_id).raw["syscalls"] < 1:
            assert time.monotonic() < deadline, "the agent never made its first call"
            time.sleep(0.05)
        pid = k.status(a.agent_id).pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc = start(home)
    try:
        with Kernel(home) as k:
            rec = [e for e in k.audit_tail(0, limit=10_000) if e["kind"] == "kernel.recovered"]
            assert len(rec) == 1
            assert a.agent_id in json.dumps(rec[0]["data"])  # it names the agent it found running
        row = sqlite3.connect(str(home / "agentix.db")).execute(
            "SELECT state, exit_reason FROM agents WHERE id=?", (a.agent_id,)).fetchone()
        assert row == ("exited", "kernel_restart")
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), "an agent process outlived its kernel"
    finally:
        with Kernel(home) as k:
            k.conn.call("kernel.shutdown")
        proc.wait(timeout=30)
