"""The CLI tells the truth (issue 14): through a real daemon and the real `agentix` entry point.

Each test is named after the lie it catches, asserts the output and the exit code, and where
something is refused, that nothing happened.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentix.sdk.errors import InvalidRequest
from conftest import program, wait_until

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]
AGENT_ID = re.compile(r"\bag-[0-9a-f]{8}\b")


def cli(kernel, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The real entry point, stdout and stderr piped (so: not a terminal)."""
    return subprocess.run([*AGENTIX, "--home", str(kernel.home), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return str(p)


PRELUDE = "from agentix.sdk import agent\nk = agent.connect()\n"


# ---------------------------------------------------------------- run
def test_run_failure_names_the_agent_the_outcome_and_the_reason(module_kernel, tmp_path) -> None:
    prog = write(tmp_path, "bad.py", 'print("working...")\nraise RuntimeError("the disk is on fire")\n')
    r = cli(module_kernel, "run", "--program", prog)
    assert r.returncode == 1, (r.stdout, r.stderr)
    aid = AGENT_ID.search(r.stdout).group(0)
    assert f"bad {aid} crashed (code 1)" in r.stdout
    assert "reason: RuntimeError: the disk is on fire" in r.stdout
    assert f"agentix logs {aid}" in r.stdout
    assert f"started bad {aid}" in r.stderr  # the id is shown before the wait, and it stays
    j = json.loads(cli(module_kernel, "run", "--program", prog, "--json").stdout)
    assert j["exit"]["reason"] == "crashed" and j["error_line"] == "RuntimeError: the disk is on fire"


def test_run_program_holds_its_workspace_and_nothing_more_unless_granted(module_kernel, tmp_path) -> None:
    hello = write(tmp_path, "hello.py", PRELUDE + 'k.tools.file_write(path="g.txt", content="hi")\n'
                  'k.exit(k.tools.file_read(path="g.txt")["content"])\n')
    r = cli(module_kernel, "run", "--program", hello)
    assert r.returncode == 0 and '"hi"' in r.stdout, (r.stdout, r.stderr)
    echo = write(tmp_path, "echo.py", PRELUDE + 'k.exit(k.tools.echo(message="x"))\n')
    r = cli(module_kernel, "run", "--program", echo)
    assert r.returncode == 1 and "CapabilityDenied" in r.stdout and "echo" in r.stdout
    denied_id = AGENT_ID.search(r.stdout).group(0)
    toks = module_kernel.client.caps(denied_id)
    assert [t["grants"] for t in toks] == [["file_read: /workspace/*", "file_write: /workspace/*"]]
    r = cli(module_kernel, "run", "--program", echo, "--grant", "tool: echo")
    assert r.returncode == 0 and '"echo": "x"' in r.stdout, (r.stdout, r.stderr)
    before = len(module_kernel.client.list())
    r = cli(module_kernel, "run", "--program", echo, "--grant", "echo please")
    assert r.returncode == 2 and "expected 'kind: value'" in r.stderr
    assert len(module_kernel.client.list()) == before  # nothing started
    # a manifest gets exactly what it says: --grant does not widen it
    mf = write(tmp_path, "m.yaml", f"name: m\nprogram: {echo}\n")
    r = cli(module_kernel, "run", mf, "--grant", "tool: echo")
    assert r.returncode == 2 and "--grant applies to --program" in r.stderr


def test_run_timeout_says_the_agent_keeps_running(module_kernel) -> None:
    k = module_kernel.client
    before = {a.agent_id for a in k.list()}
    r = cli(module_kernel, "run", "--program", program("sleeper.py"), "--timeout", "0.5")
    assert r.returncode == 5, (r.stdout, r.stderr)
    aid = AGENT_ID.search(r.stderr).group(0)
    assert aid not in before and "keeps running" in r.stderr and f"agentix stop {aid}" in r.stderr
    assert k.status(aid).state == "running"  # what it said is true
    k.kill(aid)


def test_run_goal_refuses_program_instead_of_ignoring_it(module_kernel) -> None:
    kernel = module_kernel
    agents = len(kernel.client.list())
    r = cli(kernel, "run", "--goal", "anything", "--program", program("first_call.py"))
    assert r.returncode == 2 and "--program cannot be used with --goal" in r.stderr
    assert len(kernel.client.list()) == agents  # nothing was started


def test_unknown_builtin_module_is_refused_at_spawn_not_at_boot(module_kernel, tmp_path) -> None:
    kernel = module_kernel
    agents, workspaces = len(kernel.client.list()), set((kernel.home / "workspaces").iterdir())
    mf = write(tmp_path, "nope.yaml", 'name: nope\nprogram: "module:agentix.agents.nope"\n')
    r = cli(kernel, "run", mf)
    assert r.returncode == 2 and "no built-in program agentix.agents.nope" in r.stderr
    with pytest.raises(InvalidRequest) as ei:
        kernel.client.spawn({"name": "nope", "program": "module:agentix.agents.nope.deeper"})
    assert ei.value.data["field"] == "program"
    assert len(kernel.client.list()) == agents  # nothing started, no workspace made
    assert set((kernel.home / "workspaces").iterdir()) == workspaces
    # a real one still starts
    r = kernel.client.spawn({"name": "ok", "program": "module:agentix.agents.boot"})
    kernel.client.kill(r.agent_id)


@pytest.mark.parametrize("bad", [5, ["x"], {"n": 1}, True])
def test_spawn_name_of_the_wrong_type_is_refused(module_kernel, bad) -> None:
    k = module_kernel.client
    before = len(k.list())
    with pytest.raises(InvalidRequest) as ei:
        k.call("agent.spawn", manifest={"name": "typed", "program": program("first_call.py")}, name=bad)
    assert ei.value.data["field"] == "name" and len(k.list()) == before


def test_an_int_keyed_exit_result_does_not_crash_exit(module_kernel, tmp_path) -> None:
    prog = write(tmp_path, "intkeys.py", PRELUDE + 'k.exit({1: "one", "two": {2: [3]}})\n')
    info = module_kernel.client.wait(module_kernel.client.spawn(program=prog).agent_id, timeout=30)
    assert info.reason == "completed" and info.result == {"1": "one", "two": {"2": [3]}}


def test_an_oversize_frame_is_a_clear_error_and_the_connection_stays_usable(module_kernel, tmp_path) -> None:
    prog = write(tmp_path, "big.py", PRELUDE + (
        "from agentix.sdk.errors import InvalidRequest\n"
        "try:\n"
        "    k.send('nobody', 'x' * (2 << 20))\n"
        "    said = 'sent'\n"
        "except InvalidRequest as err:\n"
        "    said = err.message\n"
        "k.exit({'said': said, 'after': k.info()['name']})\n"))
    k = module_kernel.client
    info = k.wait(k.spawn(program=prog, name="big").agent_id, timeout=30)
    assert info.reason == "completed", k.logs(info.agent_id)
    assert "over the kernel's frame limit of 1048576 bytes; nothing was sent" in info.result["said"]
    assert info.result["after"] == "big"
    # the operator side too
    with pytest.raises(InvalidRequest):
        k.send("nobody", "y" * (2 << 20))
    assert k.info()["pid"] == module_kernel.proc.pid


# ---------------------------------------------------------------- output never cut silently
def test_piped_tables_are_plain_and_hold_full_ids(kernel) -> None:
    aid = kernel.spawn("sleeper.py", name="a-rather-long-agent-name-that-would-not-fit", capabilities=[
        "tool: echo", "file_read: /workspace/*", "file_write: /workspace/*", "network: *.example.org"])
    tok = kernel.client.caps(aid)[0]["id"]
    for args, needles in [(["ps", "-a"], [aid, "a-rather-long-agent-name-that-would-not-fit"]),
                          (["caps", "ls"], [tok, aid, "network: *.example.org"]),
                          (["inspect", aid], [str(kernel.home)])]:
        r = cli(kernel, *args)
        assert r.returncode == 0, r.stderr
        for n in needles:
            assert n in r.stdout, (args, n, r.stdout)
        assert not set("┏━│┃└╭…") & set(r.stdout), r.stdout  # no box drawing, nothing elided
    # the token id as shown is the one revoke takes
    shown = [ln.split()[0] for ln in cli(kernel, "caps", "ls").stdout.splitlines()[1:]]
    assert shown == [tok]
    r = cli(kernel, "caps", "revoke", shown[0])
    assert r.returncode == 0 and f"revoked {tok}" in r.stdout
    kernel.client.kill(aid)


def test_events_are_not_wrapped_and_say_when_older_ones_are_left_out(kernel) -> None:
    kernel.run("first_call.py", name="evt")
    r = cli(kernel, "events")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert all(re.match(r"^\s*\d+ \d\d:\d\d:\d\d \S+ ", ln) for ln in lines), r.stdout  # one per line
    assert max(map(len, lines)) > 80  # long events stay on one line
    assert "older events not shown" not in r.stderr
    r = cli(kernel, "events", "-n", "2")
    assert r.stdout.splitlines() == lines[-2:] and "older events not shown" in r.stderr


def test_logs_shows_the_tail_and_says_what_it_left_out(module_kernel, tmp_path) -> None:
    prog = write(tmp_path, "chatty.py", "for i in range(250):\n    print(f'line {i}')\n"
                 "raise SystemExit('the end')\n")
    k = module_kernel.client
    aid = k.spawn(program=prog).agent_id
    k.wait(aid, timeout=30)
    r = cli(module_kernel, "logs", aid)
    out = r.stdout.splitlines()
    assert r.returncode == 0 and len(out) == 100 and out[-1] == "the end" and out[0] == "line 151"
    # the count when this CLI picked the lines, or "output" when the kernel did (agent.logs tail)
    assert re.search(r"\[(151 earlier lines|earlier output) not shown; `agentix logs -n 0", r.stderr)
    r = cli(module_kernel, "logs", aid, "-n", "3", "--head")
    assert r.stdout.splitlines() == ["line 0", "line 1", "line 2"]
    assert re.search(r"\[(248 later lines|later output) not shown", r.stderr)
    r = cli(module_kernel, "logs", aid, "-n", "0")
    assert len(r.stdout.splitlines()) == 251 and r.stderr == ""
    r = cli(module_kernel, "logs", aid, "-n", "300")  # more than there is: nothing left out
    assert len(r.stdout.splitlines()) == 251 and r.stderr == ""
    j = json.loads(cli(module_kernel, "logs", aid, "-n", "1", "--json").stdout)
    assert j["lines"] == ["the end"] and j["cut"] is True and j["omitted"] in (250, None)


def test_top_piped_prints_one_snapshot(module_kernel) -> None:
    r = cli(module_kernel, "top", timeout=60)
    assert r.returncode == 0 and r.stdout.strip(), (r.stdout, r.stderr)


# ---------------------------------------------------------------- names and ids
def test_inspect_by_name_after_exit_is_the_latest(module_kernel) -> None:
    kernel = module_kernel
    first = kernel.run("first_call.py", name="same")
    second = kernel.run("first_call.py", name="same")
    assert first.agent_id != second.agent_id
    r = cli(kernel, "inspect", "same", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["agent_id"] == second.agent_id
    r = cli(kernel, "inspect", "never-was")
    assert r.returncode == 2 and "never-was" in r.stderr


def test_stop_acts_on_each_target_and_reports_each(module_kernel) -> None:
    kernel = module_kernel
    a1 = kernel.spawn("sleeper.py", name="a1")
    a2 = kernel.spawn("sleeper.py", name="a2")
    r = cli(kernel, "stop", "nosuch", "a1", a2)
    assert r.returncode == 2, (r.stdout, r.stderr)  # the first failure's code
    assert "nosuch" in r.stderr
    assert f"a1 {a1} exited (killed)" in r.stdout and f"a2 {a2} exited (killed)" in r.stdout
    assert kernel.client.status(a1).state == "exited" and kernel.client.status(a2).state == "exited"
    j = json.loads(cli(kernel, "kill", a1, "ghost", "--json").stdout)
    assert [(x["target"], x["ok"]) for x in j] == [(a1, True), ("ghost", False)]


def test_caps_revoke_reports_each_token(module_kernel) -> None:
    kernel = module_kernel
    aid = kernel.spawn("sleeper.py", name="holder", capabilities=["tool: echo"])
    tok = kernel.client.caps(aid)[0]["id"]
    r = cli(kernel, "caps", "revoke", "not-a-token", tok)
    assert r.returncode == 2 and "not-a-token" in r.stderr and f"revoked {tok}" in r.stdout
    assert kernel.client.caps(aid)[0]["revoked"] is True
    kernel.client.kill(aid)


def test_audit_export_has_no_flag_that_does_nothing(module_kernel) -> None:
    r = cli(module_kernel, "audit", "export", "--jsonl")
    assert r.returncode == 2 and "no such option" in r.stderr.lower()
    r = cli(module_kernel, "audit", "export")
    assert r.returncode == 0 and all(json.loads(ln)["seq"] for ln in r.stdout.splitlines())


def test_answered_approvals_say_answered_not_expires_in(kernel) -> None:
    calls = json.dumps([["tool.call", {"name": "echo", "args": {"message": "later"}, "wait": False}]])
    kernel.run("calls.py", calls, name="asker", capabilities=["tool: echo"], approval_required=["echo"])
    pending = kernel.client.approvals()
    assert len(pending) == 1
    assert "expires in" in cli(kernel, "approvals").stdout
    assert cli(kernel, "deny", pending[0]["id"], "--reason", "no").returncode == 0
    r = cli(kernel, "approvals", "--all")
    row = next(ln for ln in r.stdout.splitlines() if pending[0]["id"] in ln)
    assert "ANSWERED" in row and "expires" not in row.lower()
    assert "EXPIRES IN" not in r.stdout.splitlines()[0]


def test_a_preset_name_is_accepted_as_capabilities(module_kernel, tmp_path) -> None:
    mf = write(tmp_path, "p.yaml", f"name: preset\nprogram: {program('sleeper.py')}\ncapabilities: sandboxed\n")
    r = cli(module_kernel, "spawn", mf, "--json")
    assert r.returncode == 0, r.stderr
    aid = json.loads(r.stdout)["agent_id"]
    grants = module_kernel.client.caps(aid)[0]["grants"]
    assert "tool: *" in grants and "file_write: /workspace/*" in grants
    module_kernel.client.kill(aid)
    bad = write(tmp_path, "q.yaml", f"name: preset\nprogram: {program('sleeper.py')}\ncapabilities: sandboxd\n")
    r = cli(module_kernel, "spawn", bad)
    assert r.returncode == 2 and "neither a grant string" in r.stderr and "sandboxed" in r.stderr


# ---------------------------------------------------------------- the shared event rendering
def test_granted_and_revoked_capabilities_are_not_denials() -> None:
    from agentix.cli.goal import GoalWatch

    w = GoalWatch("ag-00000001", "bootstrap")
    for kind in ("capability.granted", "capability.revoked", "capability.delegated"):
        assert w.feed({"kind": kind, "agent": "ag-00000001", "ts": 0, "data": {"tokens": []}}) is None
    assert w.agents["ag-00000001"].denied == 0
    line = w.feed({"kind": "capability.denied", "agent": "ag-00000001", "ts": 0,
                   "data": {"tool": "exec", "message": "no exec grant"}})
    assert "denied" in line and "None" not in line and w.agents["ag-00000001"].denied == 1


# ---------------------------------------------------------------- a quick CLI
def test_info_ps_and_logs_import_no_rich_pydantic_or_httpx_when_piped(module_kernel) -> None:
    aid = module_kernel.spawn("first_call.py", name="quick")
    module_kernel.client.wait(aid, timeout=30)
    for args in (["info"], ["ps", "-a"], ["logs", aid]):
        r = subprocess.run([sys.executable, "-X", "importtime", *AGENTIX[1:], "--home",
                            str(module_kernel.home), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        loaded = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if "|" in ln}
        heavy = {m for m in loaded if m.split(".")[0] in ("rich", "pydantic", "httpx", "yaml", "biscuit_auth")}
        assert not heavy, (args, sorted(heavy))


QUICK = [sys.executable, "-m", "agentix.cli.quick"]


@pytest.mark.parametrize("args", [["info", "--json"], ["ps"], ["ps", "-a"], ["ps", "--tree"], ["ps", "-a", "--json"],
                                  ["logs", "quick2"], ["logs", "quick2", "-n", "1", "--head"],
                                  ["logs", "quick2", "--json"], ["logs", "nobody"], ["ps", "--bogus"],
                                  ["logs"], ["info", "--help"]])
def test_the_quick_path_prints_what_the_click_path_prints(module_kernel, args) -> None:
    if not any(a.name == "quick2" for a in module_kernel.client.list()):
        module_kernel.client.wait(module_kernel.spawn("calls.py", json.dumps([["print", "a"], ["print", "b"]]),
                                                      name="quick2"), timeout=30)
    home = ["--home", str(module_kernel.home)]
    fast = subprocess.run([*QUICK, *home, *args], capture_output=True, text=True, timeout=60)
    full = subprocess.run([*AGENTIX, *home, *args], capture_output=True, text=True, timeout=60)
    if args[:2] == ["info", "--json"]:  # uptime and call counts move between the two runs
        fast_j, full_j = json.loads(fast.stdout), json.loads(full.stdout)
        assert fast_j.keys() == full_j.keys() and fast_j["pid"] == full_j["pid"]
    else:
        assert (fast.returncode, fast.stdout, fast.stderr) == (full.returncode, full.stdout, full.stderr)
    assert fast.returncode == full.returncode


def test_the_entry_point_runs_info_without_click(module_kernel) -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "agentix.cli.quick", "--home",
                        str(module_kernel.home), "ps", "-a"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if "|" in ln}
    assert "click" not in loaded and "agentix.cli.main" not in loaded
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["agentix"] == "agentix.cli.quick:main"
