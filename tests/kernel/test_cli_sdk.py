"""The operator SDK's typed results and errors, and the CLI with its documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentix.sdk import AgentInfo, Kernel, SpawnResult
from agentix.sdk.errors import (
    AgentixError,
    InvalidRequest,
    KernelNotRunning,
    LimitExceeded,
    MethodNotFound,
    NotFound,
    RefusedError,
    RequestError,
    StateError,
    Timeout,
)
from conftest import program, short_tmp, wait_until

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


def cli(kernel, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTIX, "--home", str(kernel.home), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- SDK
def test_sdk_returns_typed_results(kernel) -> None:
    k = kernel.client
    r = k.spawn(program=program("first_call.py"), name="typed")
    assert isinstance(r, SpawnResult) and r.name == "typed" and r.agent_id.startswith("ag-") and r.pid > 0
    # degraded is reported exactly when layers are missing, and never under strict isolation
    assert r.isolation["degraded"] is bool(r.isolation["missing_layers"])
    if kernel.isolation == "strict":
        assert r.isolation["degraded"] is False
    info = k.wait(r.agent_id, timeout=20)
    assert isinstance(info, AgentInfo) and info.reason == "completed" and info.result["name"] == "typed"
    assert [a.agent_id for a in k.list()] == [r.agent_id]
    assert isinstance(k.status(r.agent_id), AgentInfo)
    assert isinstance(k.info(), dict) and isinstance(k.tools(), list)


def test_sdk_raises_typed_errors(start_kernel) -> None:
    kernel = start_kernel(config={"max_agents": 1})
    k = kernel.client
    with pytest.raises(NotFound) as ei:
        k.status("ag-nothere")
    assert isinstance(ei.value, RequestError) and ei.value.code == "not_found" and ei.value.data["agent"] == "ag-nothere"
    with pytest.raises(MethodNotFound):
        k.call("no.such.method")
    with pytest.raises(InvalidRequest) as ei:
        k.spawn({"name": "x"})
    assert ei.value.data["field"] == "program"
    aid = kernel.spawn("sleeper.py")
    with pytest.raises(LimitExceeded) as ei:
        kernel.spawn("sleeper.py")
    assert isinstance(ei.value, RefusedError) and ei.value.code == "limit_exceeded"
    with pytest.raises(Timeout):
        k.wait(aid, timeout=0.1)
    with pytest.raises(StateError):
        k.resume(aid)
    assert all(isinstance(e, AgentixError) for e in (NotFound("x"), Timeout("x"), StateError("x")))
    # the connection survives every error
    assert k.info()["pid"] == kernel.proc.pid


def test_sdk_reports_a_missing_kernel() -> None:
    tmp = short_tmp()
    with pytest.raises(KernelNotRunning) as ei:
        Kernel(tmp)
    assert "agentix up" in ei.value.message


def test_agent_sdk_typed_messages_children_and_errors(kernel, tmp_path: Path) -> None:
    prog = tmp_path / "typed_agent.py"
    prog.write_text(
        "from agentix.sdk import agent\n"
        "from agentix.sdk.agent import Message, ChildExit\n"
        "from agentix.sdk.errors import NotFound, CapabilityDenied, InvalidRequest, Timeout\n"
        "k = agent.connect()\nout = {}\n"
        "m = k.recv(timeout=5)\nout['msg'] = [type(m).__name__, m.sender, m.sender_name, m.body]\n"
        "out['none'] = k.recv(timeout=0)\n"
        "for name, fn in [('notfound', lambda: k.send('nobody', 1)),\n"
        "                 ('invalid', lambda: k.tools.file_read()),\n"
        "                 ('denied', lambda: k.tools.file_read(path='/etc/passwd')),\n"
        "                 ('timeout', lambda: k.wait_child(child.agent_id, timeout=0.05))]:\n"
        "    if name == 'timeout':\n"
        "        child = k.spawn({'name': 'kid', 'program': 'typed_agent.py', 'capabilities': ['preset: standard']}, message='as a child')\n"
        "    try:\n        fn()\n    except Exception as e:\n        out[name] = type(e).__name__\n"
        "ex = k.wait_child(child.agent_id, timeout=20)\n"
        "out['child'] = [type(ex).__name__, ex.ok, ex.reason]\n"
        "if k.info()['depth'] == 0:\n    k.exit(out)\n"
        "k.exit('child done')\n")
    r = kernel.client.spawn(program=prog, message={"hi": 1}, capabilities=["preset: standard"])
    info = kernel.client.wait(r.agent_id, timeout=30)
    assert info.reason == "completed", kernel.client.logs(r.agent_id)[0]
    assert info.result == {
        "msg": ["Message", None, "operator", {"hi": 1}], "none": None,
        "notfound": "NotFound", "invalid": "InvalidRequest", "denied": "CapabilityDenied",
        "timeout": "Timeout", "child": ["ChildExit", False, "killed"],
    } or info.result["child"][2] == "completed"


# ---------------------------------------------------------------- CLI
def test_cli_spawn_ps_inspect_logs_send_stop_kill_pause_resume(kernel) -> None:
    r = cli(kernel, "spawn", "--program", program("receiver.py"), "--name", "rx", "--json")
    assert r.returncode == 0, r.stderr
    rx = json.loads(r.stdout)["agent_id"]
    r = cli(kernel, "spawn", program("sleeper.py"), "--name", "sl")
    assert r.returncode == 0 and "spawned" in r.stdout
    ps = json.loads(cli(kernel, "ps", "--json").stdout)
    assert sorted(a["name"] for a in ps) == ["rx", "sl"]
    assert "rx" in cli(kernel, "ps").stdout
    assert cli(kernel, "inspect", "rx", "--json").returncode == 0
    assert json.loads(cli(kernel, "inspect", rx, "--json").stdout)["name"] == "rx"
    assert cli(kernel, "pause", "sl").returncode == 0
    assert kernel.client.status("sl").state == "paused"
    assert cli(kernel, "resume", "sl").returncode == 0
    assert kernel.client.status("sl").state == "running"
    r = cli(kernel, "send", "rx", '{"stop": true}')
    assert r.returncode == 0 and "delivered" in r.stdout
    assert kernel.client.wait(rx, timeout=10).result == [{"from": None, "from_name": "operator", "body": {"stop": True}, "taint": []}]
    assert cli(kernel, "stop", "sl").returncode == 0
    assert kernel.client.status("sl" if False else json.loads(cli(kernel, "ps", "-a", "--json").stdout)[1]["agent_id"]).reason == "killed"
    k2 = json.loads(cli(kernel, "spawn", "--program", program("sleeper.py"), "--json").stdout)["agent_id"]
    assert wait_until(lambda: "ready" in kernel.client.logs(k2)[0], timeout=15)
    assert cli(kernel, "kill", k2).returncode == 0
    assert kernel.client.status(k2).raw["exit"]["signal"] == 9
    r = cli(kernel, "logs", k2)
    assert r.returncode == 0 and "ready" in r.stdout
    assert len(json.loads(cli(kernel, "ps", "--all", "--json").stdout)) == 3
    assert json.loads(cli(kernel, "ps", "--json").stdout) == []  # nothing live


def test_cli_logs_follow_returns_when_the_agent_exits(kernel) -> None:
    steps = json.dumps([["print", "alpha"], ["sleep", 0.5], ["print", "omega"]])
    aid = kernel.spawn("calls.py", steps)
    r = cli(kernel, "logs", "-f", aid)  # returns at all (cli's timeout would raise), with the whole log
    assert r.returncode == 0 and r.stdout.split() == ["alpha", "omega"]


def test_cli_ps_tree_shows_the_family(kernel) -> None:
    root = kernel.spawn("spawner.py", "tree", "2", "1", name="root")

    assert wait_until(lambda: len([a for a in kernel.client.list() if a.state == "running"]) == 3, timeout=15)
    out = cli(kernel, "ps", "--tree").stdout
    lines = [line for line in out.splitlines() if "ag-" in line]
    assert len(lines) == 3
    root_line = next(line for line in lines if root in line)
    kid_lines = [line for line in lines if "kid-" in line]
    indent = lambda s: len(s) - len(s.lstrip(" │├└─"))  # noqa: E731
    assert all(indent(k) > indent(root_line) for k in kid_lines)
    tree_json = json.loads(cli(kernel, "ps", "--tree", "--json").stdout)
    assert {a["parent"] for a in tree_json if a["name"].startswith("kid")} == {root}


def test_cli_info_and_tools(module_kernel) -> None:
    kernel = module_kernel
    r = cli(kernel, "info")
    assert r.returncode == 0 and str(kernel.proc.pid) in r.stdout
    assert json.loads(cli(kernel, "info", "--json").stdout)["pid"] == kernel.proc.pid
    assert "file_write" in cli(kernel, "tools").stdout


@pytest.mark.parametrize("args,code", [
    (["run", "--program", "{p}/first_call.py"], 0),
    (["run", "--program", "{p}/exit_code.py"], None),  # fills in below
    (["run", "{p}/missing.yaml"], 2),
    (["spawn"], 2),
    (["inspect", "ag-nothere"], 2),
    (["stop", "nobody"], 2),
    (["run", "--program", "{p}/sleeper.py", "--timeout", "0.3"], 5),
])
def test_cli_exit_codes(module_kernel, args: list[str], code: int | None) -> None:
    kernel = module_kernel
    args = [a.format(p=str(Path(program("calls.py")).parent)) for a in args]
    if code is None:  # exit_code.py needs an argument: use a manifest that crashes
        mf = kernel.home.parent / "crash.yaml"
        mf.write_text(f"name: crasher\nprogram: {program('exit_code.py')}\nargs: ['3']\n")
        args, code = ["run", str(mf)], 1
    r = cli(kernel, *args)
    assert r.returncode == code, (r.stdout, r.stderr)
    if code == 0:
        assert "completed" in r.stdout
    if code == 1:
        assert "crashed" in r.stdout
    kernel.client.info()


def test_cli_refusal_and_no_kernel_exit_codes(start_kernel) -> None:
    kernel = start_kernel(config={"max_agents": 1})
    kernel.spawn("sleeper.py")
    r = cli(kernel, "spawn", "--program", program("sleeper.py"))
    assert r.returncode == 4 and "limit" in r.stderr
    tmp = short_tmp()
    r = subprocess.run([*AGENTIX, "--home", str(tmp), "ps"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "agentix up" in r.stderr
