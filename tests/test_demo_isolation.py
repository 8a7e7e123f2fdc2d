"""`agentix demo --json` end to end: every section holds, and the isolation section's figures
are the ones that prove its rows (throttling, OOM, refusals with errno, a contained crash)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = Path(tmp_path_factory.mktemp("d", numbered=True)) / "h"
    agentix = Path(sys.executable).with_name("agentix")
    r = subprocess.run([str(agentix), "demo", "--json", "--home", str(home)],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip(), r.stderr
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    figures["_rc"] = r.returncode
    return figures


def test_every_section_holds(demo: dict) -> None:
    sections = {k: v for k, v in demo.items() if isinstance(v, dict)}
    assert "isolation" in sections
    assert {k: v["ok"] for k, v in sections.items()} == {k: True for k in sections}
    assert demo["ok"] is True and demo["_rc"] == 0


def test_cpu_hog_is_throttled_and_the_worker_finishes(demo: dict) -> None:
    iso = demo["isolation"]
    hog = iso["cpu_hog"]
    assert hog["nr_throttled"] > 0
    assert 0 < hog["cpu_share"] < 2 * hog["cpu_limit"]
    w = iso["worker"]
    assert w["reason"] == "completed"
    assert w["before"]["n"] == 300 and w["during"]["n"] > 0 and w["after"]["n"] == 100


def test_memory_leak_is_killed_alone(demo: dict) -> None:
    leak = demo["isolation"]["memory_leak"]
    assert leak["reason"] == "oom"
    assert leak["oom_kills"] >= 1
    assert leak["memory_peak"] <= 64 * 2**20 + 2**20  # the last sample, kept after exit
    assert leak["others"] == {"worker": "running", "hog": "running"}


def test_malicious_attempts_are_each_refused_with_an_errno(demo: dict) -> None:
    attempts = {a["attempt"]: a for a in demo["isolation"]["malicious"]["attempts"]}
    expect = {"read /etc/shadow": "ENOENT", "read a sibling's workspace": "ENOENT",
              "open an inet socket": "EPERM", "connect to the operator socket": "ENOENT",
              "fork past the pids limit": "EAGAIN"}
    for name, code in expect.items():
        assert attempts[name]["refused"] is True and attempts[name]["errno"] == code, attempts[name]
    assert attempts["resolve a host name"]["refused"] is True
    assert attempts["system call afterwards"] == {
        "attempt": "system call afterwards", "refused": False, "errno": None, "detail": "still here"}


def test_crash_leaves_the_rest_running(demo: dict) -> None:
    crash = demo["isolation"]["crash"]
    assert crash["reason"] == "crashed" and "SIGSEGV" in crash["detail"]
    assert crash["others"] == {"worker": "running", "hog": "running"}
