"""System calls from agent processes: identity, sys.*, tools in the workspace, IPC, children."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentix.sdk.errors import LimitExceeded
from conftest import program, wait_until


def run_calls(kernel, calls: list, name: str = "caller", **kw: Any) -> list[dict]:
    info = kernel.run("calls.py", json.dumps(calls), name=name, **kw)
    assert info.reason == "completed", kernel.client.logs(info.agent_id)[0]
    return info.result


def wait_running(kernel, aid: str) -> None:
    assert wait_until(lambda: kernel.client.logs(aid)[0].strip() != "" or False, timeout=10)


# ---------------------------------------------------------------- identity (scenario 1)
def test_an_agent_cannot_act_as_another_by_sending_its_id(module_kernel) -> None:
    kernel = module_kernel
    victim = kernel.spawn("sleeper.py", name="victim")
    vws = Path(kernel.client.status(victim).raw["workspace"])
    kernel.client.send(victim, {"secret": "for the victim only"})
    forged = {"agent_id": victim, "caller": victim, "from": victim, "agent": victim, "subject": victim}
    res = run_calls(kernel, [
        ["sys.info", {**forged, "name": "victim"}],
        ["tool.call", {"name": "file_write", "args": {"path": "owned.txt", "content": "x"}, **forged}],
        ["ipc.recv", {"timeout": 0, **forged}],
        ["sys.exit", {"result": "forged", **forged}],
        # operator methods are not system calls, whatever the agent claims
        ["agent.stop", {"agent_id": victim}],
        ["agent.kill", {"agent_id": victim}],
        ["tool.invoke", {"name": "file_write", "args": {"path": "owned.txt", "content": "x"}, "agent_id": victim}],
        ["kernel.shutdown", {}],
        ["agent.wait_child", {"agent_id": victim}],
    ], name="attacker")
    info, write, recv, _exit, stop, kill, invoke, shutdown, wait_child = res
    attacker = info["ok"]["agent_id"]
    assert attacker != victim and info["ok"]["name"] == "attacker"
    assert write["ok"]["path"] == "/workspace/owned.txt"  # paths are shown in the agent's view
    assert not (vws / "owned.txt").exists()  # it landed in the attacker's own workspace
    assert (Path(kernel.client.status(attacker).raw["workspace"]) / "owned.txt").exists()
    assert recv == {"ok": {"message": None}}  # the attacker's own (empty) mailbox
    for r in (stop, kill, invoke, shutdown):
        assert r["error"] == "method_not_found"
    assert wait_child["error"] == "capability_denied"
    st = kernel.client.status(victim)
    assert st.state == "running" and st.result is None  # untouched
    assert st.raw["mailbox"]["queued"] == 1
    # sys.exit set the attacker's own result (calls.py then replaced it with its report)
    assert isinstance(kernel.client.status(attacker).result, list)
    kernel.client.kill(victim)  # the module's kernel is shared: leave no sleeper behind


def test_sys_info_and_sys_exit_result(module_kernel) -> None:
    kernel = module_kernel
    res = run_calls(kernel, [["sys.info", {}], ["sys.exit", {"result": {"answer": 42}}]])
    info = res[0]["ok"]
    assert info["workspace"] == "/workspace" and info["depth"] == 0 and info["parent"] is None
    assert set(info["tools"]) >= {"echo", "file_read", "file_write", "file_list"}
    # calls.py exits via sys.exit with its list of outcomes, which replaces the first result
    info2 = kernel.run("first_call.py")
    assert info2.result["agent_id"] == info2.agent_id and info2.reason == "completed"


# ---------------------------------------------------------------- tools
def test_echo_and_files_in_the_workspace(module_kernel) -> None:
    kernel = module_kernel
    res = run_calls(kernel, [
        ["tool.call", {"name": "echo", "args": {"message": {"a": [1, 2]}}}],
        ["tool.call", {"name": "file_write", "args": {"path": "d/e/f.txt", "content": "hello"}}],
        ["tool.call", {"name": "file_write", "args": {"path": "/workspace/d/e/f.txt", "content": " world", "append": True}}],
        ["tool.call", {"name": "file_read", "args": {"path": "d/e/f.txt"}}],
        ["tool.call", {"name": "file_read", "args": {"path": "d/e/f.txt", "offset": 6, "limit": 3}}],
        ["tool.call", {"name": "file_list", "args": {"path": "d/e"}}],
        ["tool.call", {"name": "file_read", "args": {"path": "nope.txt"}}],
        ["tool.call", {"name": "no_such_tool", "args": {}}],
        ["tool.call", {"name": "file_write", "args": {"path": "x"}}],
        ["tool.call", {"name": "file_write", "args": {"path": 3, "content": "x"}}],
        ["tool.list", {}],
    ])
    assert res[0] == {"ok": {"echo": {"a": [1, 2]}}}
    assert res[3]["ok"]["content"] == "hello world"
    assert res[4]["ok"]["content"] == "wor" and res[4]["ok"]["truncated"] is True
    assert res[5]["ok"]["entries"] == [{"name": "f.txt", "type": "file", "size": 11}]
    assert res[6]["error"] == "not_found"
    assert res[7]["error"] == "not_found" and res[7]["data"]["tool"] == "no_such_tool"
    assert res[8]["error"] == "invalid_request" and res[8]["data"]["field"] == "content"
    assert res[9]["error"] == "invalid_request" and res[9]["data"]["field"] == "path"
    assert {t["name"] for t in res[10]["ok"]["tools"]} >= {"echo", "file_read", "file_write", "file_list"}


def _snapshot(root: Path) -> dict[str, Any]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p) if p.is_symlink() else "dir"
    return out


ESCAPES = [
    ("dotdot", "../escape.txt"),
    ("dotdot_deep", "a/../../escape.txt"),
    ("workspace_dotdot", "/workspace/../escape.txt"),
    ("absolute", "{outside}/escape.txt"),
    ("etc", "/etc/agentix-test-escape"),
    ("symlink_file", "link_file"),
    ("symlink_dir", "link_dir/escape.txt"),
    ("symlink_dir_nested", "sub/link_dir/escape.txt"),
]


@pytest.mark.parametrize("case,path", ESCAPES, ids=[c for c, _ in ESCAPES])
def test_file_tools_are_confined_to_the_workspace(module_kernel, tmp_path: Path, case: str, path: str) -> None:
    kernel = module_kernel
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious")
    path = path.format(outside=outside)
    # the agent plants symlinks pointing out of its workspace, then tries to use them
    setup = ("import os; os.makedirs('sub', exist_ok=True);"
             f"os.symlink({str(outside / 'victim.txt')!r}, 'link_file');"
             f"os.symlink({str(outside)!r}, 'link_dir'); os.symlink({str(outside)!r}, 'sub/link_dir')")
    before_outside = _snapshot(outside)
    before_etc = os.path.exists("/etc/agentix-test-escape")
    prog = tmp_path / "attack.py"
    prog.write_text(
        f"{setup}\nimport json\nfrom agentix.sdk import agent\nfrom agentix.sdk.errors import AgentixError\n"
        "k = agent.connect()\nout = []\n"
        "for name, args in [('file_write', {'path': P, 'content': 'pwned'}),\n"
        "                   ('file_write', {'path': P, 'content': 'pwned', 'append': True}),\n"
        "                   ('file_read', {'path': P}), ('file_list', {'path': P})]:\n"
        "    try:\n        out.append(['ok', k.tools.call(name, args)])\n"
        "    except AgentixError as e:\n        out.append([e.code, e.data.get('reason')])\n"
        "k.exit(out)\n".replace("P", repr(path)))
    r = kernel.client.spawn(program=prog, name="attacker")
    info = kernel.client.wait(r.agent_id, timeout=20)
    assert info.reason == "completed", kernel.client.logs(r.agent_id)[0]
    ws = Path(info.raw["workspace"])
    for outcome in info.result:
        assert outcome[0] in ("capability_denied",), (case, info.result)
    # the world did not change: outside untouched, nothing created in the workspace either
    assert _snapshot(outside) == before_outside
    assert os.path.exists("/etc/agentix-test-escape") == before_etc
    assert sorted(_snapshot(ws)) == sorted(["attack.py", "sub", "link_file", "link_dir", "sub/link_dir"])
    assert os.path.islink(ws / "link_file")  # the planted link was not replaced either


def test_a_refused_write_over_a_directory_leaves_nothing(module_kernel) -> None:
    kernel = module_kernel
    res = run_calls(kernel, [
        ["tool.call", {"name": "file_write", "args": {"path": "d/x", "content": "1"}}],
        ["tool.call", {"name": "file_write", "args": {"path": "d", "content": "clobber"}}],
        ["tool.call", {"name": "file_write", "args": {"path": "d/x/y", "content": "under a file"}}],
        ["tool.call", {"name": "file_list", "args": {"path": "d"}}],
        ["tool.call", {"name": "file_list", "args": {}}],
    ])
    assert "ok" in res[0]
    assert "error" in res[1] and "error" in res[2]
    assert [e["name"] for e in res[3]["ok"]["entries"]] == ["x"]
    assert [e["name"] for e in res[4]["ok"]["entries"]] == ["calls.py", "d"]


def test_operator_tool_invoke_acts_in_the_named_agents_workspace(kernel) -> None:
    k = kernel.client
    assert k.invoke("echo", {"message": "hi"}) == {"echo": "hi"}
    with pytest.raises(Exception) as ei:
        k.invoke("file_write", {"path": "x", "content": "y"})
    assert ei.value.code == "invalid_request" and ei.value.data["field"] == "agent_id"
    aid = kernel.spawn("sleeper.py")
    k.invoke("file_write", {"path": "note.txt", "content": "from the operator"}, agent=aid)
    ws = Path(k.status(aid).raw["workspace"])
    assert (ws / "note.txt").read_text() == "from the operator"
    assert k.invoke("file_read", {"path": "note.txt"}, agent=aid)["content"] == "from the operator"
    assert {t["name"] for t in k.tools()} >= {"echo", "file_read", "file_write", "file_list"}
    kinds = [e["kind"] for e in k.events(kind="tool")]
    assert kinds.count("tool.invoked") == kinds.count("tool.result") >= 4


# ---------------------------------------------------------------- IPC
def test_ipc_send_recv_fifo_with_sender_identity_and_timeout(kernel) -> None:
    kid_calls = [["ipc.recv", {"timeout": 5}] for _ in range(6)] + [["ipc.recv", {"timeout": 0.3}]]
    res = run_calls(kernel, [
        ["agent.spawn_child", {"manifest": {"name": "rx", "program": "calls.py", "args": [json.dumps(kid_calls)]}}],
    ] + [
        ["ipc.send", {"to": "rx", "message": i}] for i in range(5)
    ] + [
        ["ipc.send", {"to": "rx", "message": {"last": True}}],
        ["ipc.send", {"to": "nobody", "message": 1}],
        ["ipc.send", {"to": "rx"}],
        ["ipc.recv", {"timeout": 0.3}],
        ["agent.wait_child", {"agent_id": "$0", "timeout": 10}],
    ], name="tx")
    kid = res[0]["ok"]["agent_id"]
    assert all("ok" in r for r in res[1:7]), res
    assert res[7]["error"] == "not_found"
    assert res[8]["error"] == "invalid_request" and res[8]["data"]["field"] == "message"
    assert res[9] == {"ok": {"message": None}}  # recv with a timeout returns None when nothing comes
    st = kernel.client.wait(kid, timeout=10)
    got = [r["ok"]["message"] for r in st.result]
    assert got[-1] is None
    assert [m["message"] for m in got[:-1]] == [0, 1, 2, 3, 4, {"last": True}]
    tx = kernel.client.list()[0]
    assert {m["from"] for m in got[:-1]} == {tx.agent_id}
    assert {m["from_name"] for m in got[:-1]} == {"tx"}
    assert all("agent_message" in m["taint"] for m in got[:-1])


def test_operator_send_reaches_an_agent_as_from_the_operator(kernel) -> None:
    rx = kernel.spawn("receiver.py", "5", name="rx")
    kernel.client.send("rx", "hello")
    kernel.client.send(rx, {"stop": True})
    got = kernel.client.wait(rx, timeout=10).result
    assert got == [{"from": None, "from_name": "operator", "body": "hello", "taint": []},
                   {"from": None, "from_name": "operator", "body": {"stop": True}, "taint": []}]


def test_ipc_broadcast_reaches_the_tree_but_not_other_trees(kernel) -> None:
    stranger = kernel.spawn("receiver.py", "1", name="stranger")
    kid = [["ipc.recv", {"timeout": 10}]]
    parent_prog = json.dumps([
        ["agent.spawn_child", {"manifest": {"name": "kid-a", "program": "calls.py", "args": [json.dumps(kid)]}}],
        ["agent.spawn_child", {"manifest": {"name": "kid-b", "program": "calls.py", "args": [json.dumps(kid)]}}],
        ["ipc.broadcast", {"message": "hello tree"}],
        ["ipc.send", {"to": "stranger", "message": "x"}],
        ["agent.wait_child", {"agent_id": "$0", "timeout": 10}],
        ["agent.wait_child", {"agent_id": "$1", "timeout": 10}],
    ])
    # the parent may message its two children by name and nobody else
    info = kernel.run("calls.py", parent_prog, name="parent",
                      capabilities=["spawn_child: *", "message_send: [kid-a, kid-b]"])
    a, b, bc, cross, wa, wb = info.result
    assert wa["ok"]["result"][0]["ok"]["message"]["message"] == "hello tree", wa
    assert wb["ok"]["result"][0]["ok"]["message"]["message"] == "hello tree", wb
    ids = sorted([a["ok"]["agent_id"], b["ok"]["agent_id"]])
    assert sorted(bc["ok"]["delivered"]) == ids and bc["ok"]["failed"] == []
    assert cross["error"] == "capability_denied"  # no message_send grant names the stranger
    assert kernel.client.wait(stranger, timeout=10).result == []
    got = [e for e in kernel.client.events(kind="message.delivered")]
    assert sorted(e["agent"] for e in got) == ids


def test_mailbox_is_bounded_and_overflow_is_an_explicit_error(start_kernel) -> None:
    kernel = start_kernel(config={"mailbox_capacity": 3})
    k = kernel.client
    rx = kernel.spawn("sleeper.py", name="rx")
    for i in range(3):
        assert k.send(rx, i)["queued"] == i + 1
    with pytest.raises(LimitExceeded) as ei:
        k.send(rx, 3)
    assert ei.value.data["capacity"] == 3 and ei.value.data["limit"] == "mailbox"
    st = k.status(rx).raw["mailbox"]
    assert st["queued"] == 3 and st["refused"] == 1
    # an agent's send to a full box gets the same explicit error, and the box is unchanged
    res = run_calls(kernel, [
        ["agent.spawn_child", {"manifest": {"name": "kid", "program": "calls.py", "args": ['[["sleep", 10]]']}}],
    ] + [["ipc.send", {"to": "kid", "message": i}] for i in range(4)])
    assert ["ok" in r for r in res[1:]] == [True, True, True, False]
    assert res[4]["error"] == "limit_exceeded"
    assert k.status(res[0]["ok"]["agent_id"]).raw["mailbox"]["refused"] == 1


def test_names_are_released_when_an_agent_exits(kernel) -> None:
    k = kernel.client
    first = kernel.spawn("sleeper.py", name="solo")
    second = kernel.spawn("sleeper.py", name="solo")
    assert k.status(second).name == "solo-2"  # a live name is never shared
    k.kill(first)
    k.kill(second)
    with pytest.raises(Exception) as ei:
        k.send("solo", "anyone?")
    assert ei.value.code == "not_found"
    third = kernel.spawn("sleeper.py", name="solo")
    assert k.status(third).name == "solo"
    assert k.send("solo", "hi")["to"] == third


# ---------------------------------------------------------------- children
def test_spawn_child_and_wait_child(module_kernel) -> None:
    kernel = module_kernel
    child_calls = json.dumps([["sys.info", {}], ["ipc.recv", {"timeout": 5}]])
    res = run_calls(kernel, [
        ["agent.spawn_child", {"manifest": {"name": "kid", "program": "calls.py", "args": [child_calls]},
                               "message": {"job": 1}}],
        ["agent.children", {}],
        ["agent.spawn_child", {"manifest": {"name": "kid", "program": "../../etc/passwd"}}],
        ["agent.spawn_child", {"manifest": {"name": "kid", "program": program("sleeper.py")}}],
        ["agent.spawn_child", {"manifest": {"name": "BAD"}}],
    ], name="parent")
    kid = res[0]["ok"]
    assert res[1]["ok"]["children"][0]["agent_id"] == kid["agent_id"]
    assert res[2]["error"] == "invalid_request" and res[2]["data"]["field"] == "program"
    assert res[3]["error"] == "invalid_request"  # a host path is not in the parent's workspace
    assert res[4]["error"] == "invalid_request" and res[4]["data"]["field"] == "name"
    # wait_child from the parent (the parent exited already; the child was stopped with it or finished)
    prog = json.dumps([
        ["agent.spawn_child", {"manifest": {"name": "kid", "program": "calls.py", "args": [child_calls]},
                               "message": {"job": 2}}],
    ])
    info = kernel.run("calls.py", prog, name="p2")
    assert "ok" in info.result[0]
    # a proper wait: the parent waits for its child's exit record and result
    waiting = tmp_wait_prog(kernel)
    r = kernel.client.wait(waiting, timeout=30)
    assert r.reason == "completed", kernel.client.logs(waiting)[0]
    child_exit = r.result
    assert child_exit["reason"] == "completed"
    assert child_exit["result"][0]["ok"]["depth"] == 1
    assert child_exit["result"][1]["ok"]["message"]["message"] == {"job": 3}
    assert child_exit["result"][1]["ok"]["message"]["from_name"] == "waiter"


def tmp_wait_prog(kernel) -> str:
    child_calls = json.dumps([["sys.info", {}], ["ipc.recv", {"timeout": 5}]])
    prog = kernel.home.parent / "waiter.py"
    prog.write_text(
        "import json\nfrom agentix.sdk import agent\nk = agent.connect()\n"
        "import shutil\n"
        f"c = k.spawn({{'name': 'kid', 'program': 'calls.py', 'args': [{child_calls!r}]}}, message={{'job': 3}})\n"
        "ex = k.wait_child(c.agent_id, timeout=20)\n"
        "k.exit({'reason': ex.reason, 'code': ex.code, 'result': ex.result})\n")
    # the child program must be in the waiter's workspace: ship both as a package
    pkg = kernel.home.parent / "waiterpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__main__.py").write_text(prog.read_text().replace("'program': 'calls.py'", "'program': 'waiterpkg/calls.py'"))
    (pkg / "calls.py").write_text(Path(program("calls.py")).read_text())
    return kernel.client.spawn(program=pkg, name="waiter", capabilities=["preset: standard"]).agent_id
