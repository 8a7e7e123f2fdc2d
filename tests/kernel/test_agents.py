"""Agents are processes: spawn, states, exit records, reaping, stop/kill, trees, limits, logs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from agentix.sdk.errors import InvalidRequest, LimitExceeded, NotFound, StateError, Timeout
from conftest import PROGRAMS, descendants, pid_alive, program, wait_until


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_log(kernel, aid: str, text: str, timeout: float = 10) -> str:
    def has() -> str | None:
        data, _, _ = kernel.client.logs(aid)
        return data if text in data else None

    data = wait_until(has, timeout=timeout)
    assert data, f"{text!r} never appeared in {aid}'s log"
    return data


# ---------------------------------------------------------------- spawn
def test_spawn_from_manifest_manifest_path_and_program(module_kernel, tmp_path: Path) -> None:
    kernel = module_kernel
    k = kernel.client
    a = k.spawn({"name": "inline", "program": program("first_call.py")})
    mf = tmp_path / "agent.yaml"
    mf.write_text(f"name: from-file\nprogram: {program('first_call.py')}\n")
    b = k.spawn(manifest_path=mf)
    # a relative program in a manifest file is relative to the manifest's directory
    (tmp_path / "prog.py").write_text((PROGRAMS / "first_call.py").read_text())
    (tmp_path / "rel.yaml").write_text("name: relative\nprogram: prog.py\n")
    c = k.spawn(manifest_path=tmp_path / "rel.yaml")
    d = k.spawn(program=program("first_call.py"), name="by-program")
    for r, name in [(a, "inline"), (b, "from-file"), (c, "relative"), (d, "by-program")]:
        info = k.wait(r.agent_id, timeout=20)
        assert info.reason == "completed", info.raw
        assert info.name == name and info.result["name"] == name
        assert info.result["agent_id"] == r.agent_id  # the agent learns its identity from the kernel


def test_program_file_and_package_are_copied_into_the_workspace(module_kernel, tmp_path: Path) -> None:
    kernel = module_kernel
    k = kernel.client
    prog = tmp_path / "self_read.py"
    prog.write_text("from agentix.sdk import agent\nk = agent.connect()\n"
                    "k.exit(k.tools.file_list(path='.')['entries'])\n")
    r = k.spawn(program=prog, capabilities=["file_read: {workspace}/*"])
    prog.write_text("raise SystemExit(9)\n")  # editing the original after spawn changes nothing
    info = k.wait(r.agent_id, timeout=20)
    assert info.reason == "completed"
    assert [e["name"] for e in info.result] == ["self_read.py"]
    ws = Path(info.raw["workspace"])
    assert (ws / "self_read.py").read_text().startswith("from agentix.sdk import agent")

    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "helper.py").write_text("VALUE = 42\n")
    (pkg / "__main__.py").write_text(
        "import sys, os\nsys.path.insert(0, os.path.dirname(__file__))\nimport helper\n"
        "from agentix.sdk import agent\nagent.connect().exit({'value': helper.VALUE})\n")
    r = k.spawn(program=pkg, capabilities=["file_read: {workspace}/*"])
    info = k.wait(r.agent_id, timeout=20)
    assert info.reason == "completed", kernel.client.logs(r.agent_id)[0]
    assert info.result == {"value": 42}
    assert (Path(info.raw["workspace"]) / "mypkg" / "helper.py").is_file()


@pytest.mark.parametrize("manifest,field", [
    ({"name": "Bad Name!", "program": "/x.py"}, "name"),
    ({"name": "ok", "program": "/x.py", "limits": {"memory": "lots"}}, "limits.memory"),
    ({"name": "ok", "program": "/x.py", "colour": "red"}, "colour"),
    ({"name": "ok", "program": "/x.py", "priority": -1}, "priority"),
    ({"program": "/x.py"}, "name"),
    ({"name": "ok"}, "program"),
    ({"name": "ok", "program": "/does/not/exist.py"}, "program"),
    ({"name": "ok", "program": "/etc/passwd"}, "program"),
    ({"name": "ok", "program": "module:os"}, "program"),
    ({"name": "ok", "program": "/x.py", "env": {"AGENTIX_FD": "0"}}, "env.AGENTIX_FD"),
])
def test_bad_manifest_names_the_field(module_kernel, manifest: dict, field: str) -> None:
    kernel = module_kernel
    agents_before = len(kernel.client.list())
    workspaces_before = set((kernel.home / "workspaces").iterdir())
    with pytest.raises(InvalidRequest) as ei:
        kernel.client.call("agent.spawn", manifest=manifest)
    assert ei.value.data["field"] == field, ei.value
    assert len(kernel.client.list()) == agents_before  # nothing was started
    assert set((kernel.home / "workspaces").iterdir()) == workspaces_before


def test_bad_manifest_file_names_the_field(module_kernel, tmp_path: Path) -> None:
    kernel = module_kernel
    agents = len(kernel.client.list())
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InvalidRequest) as ei:
        kernel.client.spawn(manifest_path=tmp_path / "bad.yaml")
    assert ei.value.data["field"] == "(manifest)"
    with pytest.raises(InvalidRequest) as ei:
        kernel.client.spawn(manifest_path=tmp_path / "missing.yaml")
    assert ei.value.data["field"] == "manifest_path"
    assert len(kernel.client.list()) == agents  # nothing was started


# ---------------------------------------------------------------- exit records
@pytest.mark.parametrize("arg,code,reason", [("0", 0, "completed"), ("3", 3, "crashed"), ("raise", 1, "crashed")])
def test_exit_record_is_kept_after_exit(module_kernel, arg: str, code: int, reason: str) -> None:
    kernel = module_kernel
    info = kernel.run("exit_code.py", arg)
    assert info.state == "exited"
    assert info.exit["code"] == code and info.exit["signal"] is None and info.exit["reason"] == reason
    time.sleep(0.2)
    again = kernel.client.status(info.agent_id)  # still queryable later, by id
    assert again.exit == info.exit
    assert not pid_alive(info.pid)


def test_a_process_killed_outside_the_kernel_is_reaped_and_recorded(module_kernel) -> None:
    """Scenario 2: a process that dies outside the kernel's control gets its exit record from
    the reaper (how soon: bench/lifecycle.py, goal under one second)."""
    kernel = module_kernel
    aid = kernel.spawn("sleeper.py")
    wait_log(kernel, aid, "ready")
    pid = kernel.client.status(aid).pid
    os.kill(pid, signal.SIGKILL)  # it dies outside the kernel's control
    info = kernel.client.wait(aid, timeout=30)
    assert info.exit["signal"] == signal.SIGKILL and info.exit["code"] is None
    assert info.exit["reason"] == "crashed"
    assert "SIGKILL" in info.exit["detail"]
    assert not pid_alive(pid)  # reaped, not a zombie


# ---------------------------------------------------------------- stop / kill
def test_stop_escalates_to_sigkill_for_an_agent_that_ignores_sigterm(kernel) -> None:
    aid = kernel.spawn("ignore_term.py")
    wait_log(kernel, aid, "ignoring SIGTERM")
    pid = kernel.client.status(aid).pid
    family = descendants(pid) | {pid}
    t0 = time.monotonic()
    info = kernel.client.stop(aid, grace=0.5)
    elapsed = time.monotonic() - t0
    assert info.state == "exited"
    assert info.exit["reason"] == "killed" and info.exit["signal"] == signal.SIGKILL
    assert elapsed >= 0.5  # it was given its grace period
    # a sandbox's inner processes die with its namespace a moment after the leader is reaped
    assert wait_until(lambda: not any(pid_alive(p) for p in family), timeout=2), \
        f"survived: {[p for p in family if pid_alive(p)]}"


def test_stop_kills_grandchild_processes(kernel) -> None:
    aid = kernel.spawn("forker.py")
    log = wait_log(kernel, aid, "grandchildren")
    assert len(log.split("grandchildren")[1].split()[:2]) == 2
    pid = kernel.client.status(aid).pid
    family = descendants(pid) | {pid}
    # the agent's process (and any sandbox wrapper) plus its two grandchildren, seen from the host
    assert len(family) >= 3, family
    info = kernel.client.stop(aid, grace=0.5)
    assert info.exit["reason"] == "killed"
    assert wait_until(lambda: not any(pid_alive(p) for p in family), timeout=2), \
        f"survived: {[p for p in family if pid_alive(p)]}"


def test_kill_is_immediate_and_sigterm_stop_is_graceful(start_kernel) -> None:
    # a stop grace far past the test's timeout: a kill that waited it would never return
    kernel = start_kernel(config={"stop_grace": 600})
    a = kernel.spawn("sleeper.py")
    b = kernel.spawn("ignore_term.py")
    wait_log(kernel, a, "ready")
    wait_log(kernel, b, "ignoring")
    info = kernel.client.stop(a)  # sleeper dies of SIGTERM at once
    assert info.exit["reason"] == "killed" and info.exit["signal"] == signal.SIGTERM
    info = kernel.client.kill(b)  # it ignores SIGTERM: only a SIGKILL at once ends it
    assert info.exit["reason"] == "killed" and info.exit["signal"] == signal.SIGKILL
    # stopping an exited agent is harmless and changes nothing
    assert kernel.client.stop(a).exit == kernel.client.status(a).exit


def test_stopping_a_parent_stops_its_whole_subtree(kernel) -> None:
    root = kernel.spawn("spawner.py", "tree", "2", "2", name="root")
    # root -> 2 children -> 2 grandchildren each = 7 agents
    assert wait_until(lambda: len([a for a in kernel.client.list() if a.state == "running"]) == 7, timeout=20)
    agents = kernel.client.list()
    by_id = {a.agent_id: a for a in agents}
    assert by_id[root].parent is None and len(by_id[root].raw["children"]) == 2
    for c in by_id[root].raw["children"]:
        assert by_id[c].parent == root and len(by_id[c].raw["children"]) == 2
        for g in by_id[c].raw["children"]:
            assert by_id[g].parent == c and by_id[g].raw["depth"] == 2
    pids = {a.pid for a in agents}
    for a in list(pids):
        pids |= descendants(a)
    kernel.client.stop(root, grace=1)
    after = kernel.client.list()
    assert all(a.state == "exited" and a.reason == "killed" for a in after), [(a.name, a.state, a.reason) for a in after]
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=2), [p for p in pids if pid_alive(p)]


def test_a_parent_that_exits_takes_its_subtree_with_it(kernel) -> None:
    root = kernel.spawn("spawner.py", "tree", "2", "1", "exit", name="root")
    info = kernel.client.wait(root, timeout=20)
    assert info.reason == "completed"
    kids = info.result["children"]
    for kid in kids:
        k = kernel.client.wait(kid, timeout=5)
        assert k.state == "exited" and k.reason == "killed"
        assert "parent" in k.exit["detail"]
        assert not pid_alive(k.pid)


# ---------------------------------------------------------------- pause / resume, states
def test_pause_and_resume_freeze_the_process_and_follow_the_state_table(kernel) -> None:
    aid = kernel.spawn("ticker.py")
    wait_log(kernel, aid, "3")
    k = kernel.client

    def ticks() -> int:
        return len(k.logs(aid)[0].split())

    assert k.pause(aid).state == "paused"
    time.sleep(0.3)
    frozen_at = ticks()
    time.sleep(0.6)
    assert ticks() == frozen_at, "a paused agent kept running"
    with pytest.raises(StateError):
        k.pause(aid)  # paused -> paused is not a transition
    assert k.resume(aid).state == "running"
    assert wait_until(lambda: ticks() > frozen_at + 2, timeout=5), "a resumed agent did not run"
    with pytest.raises(StateError):
        k.resume(aid)  # running -> running is not either
    k.pause(aid)
    info = k.stop(aid, grace=1)  # a paused agent can be stopped
    assert info.state == "exited" and info.reason == "killed"
    with pytest.raises(StateError):
        k.pause(aid)
    with pytest.raises(StateError):
        k.resume(aid)
    kinds = [e["kind"] for e in k.events(agent=aid) if not e["kind"].startswith("capability.")]
    assert kinds == ["agent.spawned", "isolation.degraded", "agent.paused", "agent.resumed", "agent.paused",
                     "agent.exited"] or kinds == ["agent.spawned", "agent.paused", "agent.resumed",
                                                  "agent.paused", "agent.exited"], kinds


# ---------------------------------------------------------------- wait, logs
def test_wait_times_out_with_a_typed_error_and_the_agent_keeps_running(kernel) -> None:
    aid = kernel.spawn("sleeper.py")
    t0 = time.monotonic()
    with pytest.raises(Timeout):
        kernel.client.wait(aid, timeout=0.3)
    assert time.monotonic() - t0 >= 0.3  # it waited its timeout (how little more: bench/lifecycle.py)
    assert kernel.client.status(aid).state == "running"


def test_stdout_and_stderr_go_to_the_per_agent_log_file_and_logs_follow(kernel) -> None:
    info = kernel.run("exit_code.py", "0")
    data, offset, live = kernel.client.logs(info.agent_id)
    assert "to stdout" in data and "to stderr" in data and not live
    assert Path(info.raw["log"]).read_text() == data
    assert Path(info.raw["log"]).parent == kernel.home / "logs"
    assert kernel.client.logs(info.agent_id, offset) == ("", offset, False)

    steps = [["print", "one"], ["sleep", 0.4], ["stderr", "two"], ["sleep", 0.4], ["print", "three"]]
    aid = kernel.spawn("calls.py", json.dumps(steps))
    seen, offset, t0 = "", 0, time.monotonic()
    while time.monotonic() - t0 < 10:
        data, offset, live = kernel.client.logs(aid, offset, wait=1.0)
        seen += data
        if not live and not data:
            break
    assert seen.split() == ["one", "two", "three"]


def test_unknown_agents_are_not_found(module_kernel) -> None:
    kernel = module_kernel
    k = kernel.client
    for fn in (k.status, k.stop, k.kill, k.pause, k.resume, k.wait):
        with pytest.raises(NotFound):
            fn("ag-00000000")
    with pytest.raises(NotFound):
        k.send("nobody", "hi")


# ---------------------------------------------------------------- limits
def test_spawn_depth_limit_default_is_five(module_kernel) -> None:
    kernel = module_kernel
    info = kernel.run("spawner.py", "chain", name="link", timeout=60)
    assert info.result["depth"] == 5 and info.result["error"] == "limit_exceeded"
    assert info.result["data"]["limit"] == "max_depth"
    assert kernel.client.info()["limits"]["max_depth"] == 5


def test_spawn_depth_and_count_limits_are_configurable(start_kernel) -> None:
    kernel = start_kernel(config={"max_depth": 1, "max_agents": 3})
    info = kernel.run("spawner.py", "chain", name="link", timeout=60)
    assert info.result["depth"] == 1 and info.result["error"] == "limit_exceeded"
    assert len(kernel.client.list()) == 2  # the refused spawn left no record

    ids = [kernel.spawn("sleeper.py") for _ in range(3)]
    with pytest.raises(LimitExceeded) as ei:
        kernel.spawn("sleeper.py")
    assert ei.value.data["limit"] == "max_agents"
    assert len(kernel.client.list()) == 5
    kernel.client.kill(ids[0])
    kernel.spawn("sleeper.py")  # a slot is free again once an agent exited


def test_agent_count_limit_default_is_a_hundred(module_kernel) -> None:
    kernel = module_kernel
    assert kernel.client.info()["limits"]["max_agents"] == 100


def test_wall_clock_limit_stops_the_agent_with_reason_timeout(kernel) -> None:
    aid = kernel.spawn("sleeper.py", limits={"wall_clock": "1s"})
    info = kernel.client.wait(aid, timeout=30)
    assert info.exit["reason"] == "timeout" and "wall-clock" in info.exit["detail"]
    assert info.raw["runtime_s"] >= 1.0  # not before its limit (how soon after: bench/lifecycle.py)
    assert not pid_alive(info.pid)


def test_an_agent_is_stopping_during_its_grace_period(kernel) -> None:
    import threading

    aid = kernel.spawn("ignore_term.py")
    wait_log(kernel, aid, "ignoring SIGTERM")
    done: list = []
    t = threading.Thread(target=lambda: done.append(kernel.connect().stop(aid, grace=1.5)))
    t.start()
    try:
        assert wait_until(lambda: kernel.client.status(aid).state == "stopping", timeout=5)
        with pytest.raises(StateError):
            kernel.client.pause(aid)  # stopping -> paused is not a transition
    finally:
        t.join(timeout=20)
    assert done and done[0].state == "exited" and done[0].reason == "killed"
