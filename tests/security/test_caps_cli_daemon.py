"""Capabilities and approvals through a REAL daemon: the SDK and the `agentix` CLI.

An agent blocked on an approval is answered with `agentix approve` / `agentix deny`; tokens
are listed and revoked with `agentix caps ls` / `agentix caps revoke`; the root key is made
once (0600) and reused by the next kernel on the same home.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from conftest import wait_until

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


def cli(kernel, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTIX, "--home", str(kernel.home), *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_approve_and_deny_a_blocked_call(kernel) -> None:
    calls = json.dumps([["tool.call", {"name": "echo", "args": {"message": "first"}}],
                        ["tool.call", {"name": "echo", "args": {"message": "second"}}]])
    aid = kernel.spawn("calls.py", calls, name="asker", capabilities=["tool: echo"],
                       approval_required=["echo"])
    k = kernel.client
    assert wait_until(lambda: len(k.approvals()) == 1, timeout=20)
    r = cli(kernel, "approvals", "--json")
    assert r.returncode == 0, r.stderr
    pending = json.loads(r.stdout)
    assert [(p["agent"], p["tool"], p["args"]) for p in pending] == [(aid, "echo", {"message": "first"})]
    assert k.status(aid).state == "running"  # blocked, not failed
    r = cli(kernel, "approve", pending[0]["id"])
    assert r.returncode == 0 and "approved" in r.stdout, r.stderr
    assert wait_until(lambda: len(k.approvals()) == 1 and k.approvals()[0]["id"] != pending[0]["id"], timeout=20)
    second = k.approvals()[0]
    r = cli(kernel, "deny", second["id"], "--reason", "not this one")
    assert r.returncode == 0 and "denied" in r.stdout, r.stderr
    info = k.wait(aid, timeout=30)
    assert info.result[0] == {"ok": {"echo": "first"}}
    assert info.result[1]["error"] == "approval_denied" and "not this one" in info.result[1]["message"]
    # answering again is a conflict (exit code for usage errors), and nothing changes
    r = cli(kernel, "approve", second["id"])
    assert r.returncode == 2 and "denied" in r.stderr


def test_cli_caps_ls_and_revoke(kernel) -> None:
    aid = kernel.spawn("sleeper.py", name="holder", capabilities=["tool: echo", "file_read: {workspace}/*"])
    k = kernel.client
    r = cli(kernel, "caps", "ls", aid, "--json")
    assert r.returncode == 0, r.stderr
    toks = json.loads(r.stdout)
    assert len(toks) == 1 and toks[0]["holder"] == aid
    assert toks[0]["grants"] == ["tool: echo", "file_read: /workspace/*"] and not toks[0]["revoked"]
    assert k.check(aid, "echo")["allowed"] is True
    r = cli(kernel, "caps", "revoke", toks[0]["id"])
    assert r.returncode == 0 and "revoked" in r.stdout, r.stderr
    chk = k.check(aid, "echo")
    assert chk["allowed"] is False and chk["error"] == "capability_revoked"
    assert json.loads(cli(kernel, "caps", "ls", aid, "--json").stdout)[0]["revoked"] is True
    # the operator may grant anew; the new token works
    g = k.grant(aid, ["tool: echo"], max_invocations=1)
    assert g["remaining"] == 1 and k.check(aid, "echo")["allowed"] is True
    kinds = [e["kind"] for e in k.events(agent=aid)]
    assert {"capability.granted", "capability.revoked"} <= set(kinds)
    k.kill(aid)


def test_root_key_reused_and_pending_approval_survives_a_daemon_restart(start_kernel) -> None:
    from conftest import Daemon

    kernel = start_kernel()
    key = kernel.home / "keys" / "root.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    first = key.read_bytes()
    calls = json.dumps([["tool.call", {"name": "echo", "args": {"message": "later"}, "wait": False}]])
    info = kernel.run("calls.py", calls, name="asker", capabilities=["tool: echo"], approval_required=["echo"])
    assert info.result[0]["error"] == "approval_denied" and info.result[0]["data"]["reason"] == "pending"
    before = kernel.client.approvals()
    assert len(before) == 1
    kernel.stop()
    again = Daemon(kernel.home, kernel.isolation)
    try:
        assert key.read_bytes() == first  # loaded, not regenerated
        after = again.client.approvals()
        assert [(a["id"], a["tool"], a["args"], a["state"]) for a in after] == \
            [(b["id"], b["tool"], b["args"], "pending") for b in before]
        r = cli(again, "deny", after[0]["id"], "--reason", "stale")
        assert r.returncode == 0, r.stderr
        assert again.client.approvals() == []
    finally:
        again.stop()
