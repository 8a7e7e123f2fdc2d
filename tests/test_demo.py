"""`agentix demo --json` end to end, run once for the module: it starts its own kernel,
every section holds, the figures are the ones that prove each row (a team with a contained
crash; throttling, OOM, refusals with errno, a contained crash; ten agents sharing one model
by weight), and it stops the kernel it started and every agent with it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentix.demo.llm import simulate_model
from agentix.sdk.audit import export_file
from conftest import pids_in_groups, short_tmp

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


@pytest.fixture(scope="module")
def run() -> tuple[dict, Path]:
    tmp = short_tmp()
    home = tmp / "h"
    agentix = Path(sys.executable).with_name("agentix")
    # the scripted provider, not the local model: thousands of equal requests rather than a
    # few dozen slow ones competing with the agents for two cores, so the shares the demo
    # measures are the scheduler's, not the host's load (the exact property is checked in
    # virtual time, tests/inference/test_scheduler.py)
    simulate_model(home)
    try:
        r = subprocess.run([str(agentix), "demo", "--json", "--home", str(home)],
                           capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert r.stdout.strip(), r.stderr
        figures = json.loads(r.stdout.strip().splitlines()[-1])
        figures["_rc"] = r.returncode
        buf = io.BytesIO()
        export_file(home / "agentix.db", buf)
        audit = [json.loads(line) for line in buf.getvalue().splitlines()]
        gone = not (home / "agentixd.sock").exists() and not (home / "agentixd.pid").exists()
        yield figures, {"audit": audit, "gone": gone}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def demo(run: tuple[dict, dict]) -> dict:
    return run[0]


def test_every_section_holds(demo: dict) -> None:
    sections = {k: v for k, v in demo.items() if isinstance(v, dict) and k != "_rc"}
    assert set(sections) == {"team", "isolation", "llm"}
    assert {k: v["ok"] for k, v in sections.items()} == {k: True for k in sections}
    assert demo["ok"] is True and demo["_rc"] == 0


def test_isolation_is_what_the_host_probe_found(demo: dict) -> None:
    # the demo asks for strict isolation only when `agentix doctor` finds every layer
    doctor = subprocess.run([str(Path(sys.executable).with_name("agentix")), "doctor", "--json"],
                            capture_output=True, text=True, timeout=60)
    missing = [r["layer"] for r in json.loads(doctor.stdout) if not r["ok"]]
    assert (demo["missing_layers"] == []) == (missing == [])


def test_the_team_finishes_around_a_crashed_worker_and_leaves_nothing_behind(run) -> None:
    demo, world = run
    assert demo["team"]["coordinator"] == "completed"
    assert demo["team"]["workers"] == ["completed", "completed", "crashed"]
    assert world["gone"]  # it stopped the kernel it started ...
    spawned = [e["data"] for e in world["audit"] if e["kind"] == "agent.spawned"]
    team = {d["pid"] for d in spawned
            if d["name"] in ("coordinator", "worker", "worker-1", "worker-2", "worker-3")}
    assert len(team) == 4
    assert not pids_in_groups({d["pid"] for d in spawned})  # ... and every agent with it


def test_ten_agents_share_the_model_by_weight(demo: dict) -> None:
    llm = demo["llm"]
    assert llm["ok"] is True and llm["fairness"] >= 0.9 and llm["min_served"] >= 3
    shares = llm["shares"]
    assert len(shares) == 10
    assert shares["llm-9"] > shares["llm-4"] > shares["llm-0"]  # weights 8 > 2 > 1
    assert llm["scripted"] is True and llm["provider"] == "simulated"  # and labelled so


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
