"""Snapshots through a real kernel: snapshot, restore and fork an agent that wrote files, saved
state, got a message and was tainted; refusals (wider grants, a tampered snapshot) leave
nothing; special files in a workspace are skipped without blocking."""

from __future__ import annotations

import gzip
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from agentix.sdk.errors import AgentixError

from conftest import wait_until

STANDARD_GRANTS = ["tool: *", "file_read: /workspace/*", "file_write: /workspace/*", "network: *",
                   "spawn_child: *", "message_send: *"]


def _ready_agent(kernel: Any, name: str = "snapper") -> tuple[str, Path]:
    """A snapper that wrote files, saved state, was tainted by a teller's message, and has one
    operator message pending in its mailbox."""
    aid = kernel.spawn("snapper.py", name=name)
    ws = Path(kernel.client.status(aid).raw["workspace"])
    assert kernel.run("snapper.py", "tell", name, name="teller").reason == "completed"
    assert wait_until(lambda: (ws / "ready.flag").exists(), timeout=30), kernel.daemon_log()[-2000:]
    kernel.client.send(aid, {"cmd": "report"})
    return aid, ws


def _snapshots(kernel: Any) -> list[dict[str, Any]]:
    return [p for p in kernel.client.call("package.list")["packages"] if p["ref"].startswith("snapshots/")]


def _blobs(kernel: Any) -> set[str]:
    return {p.name for p in (kernel.home / "registry" / "blobs" / "sha256").iterdir()}


def _events(kernel: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in kernel.client.audit_tail(limit=2000) if e["kind"] == kind]


def test_snapshot_twice_gives_one_digest_and_restore_brings_everything_back(kernel: Any) -> None:
    aid, ws = _ready_agent(kernel)
    before = kernel.client.status(aid).raw
    assert "agent_message" in before["taint"]
    s1 = kernel.client.call("snapshot.create", agent=aid)
    s2 = kernel.client.call("snapshot.create", agent=aid)
    assert s1["digest"] == s2["digest"] and s1["ref"] == s2["ref"]
    assert s1["skipped"] == []
    assert kernel.client.status(aid).state == "running"  # frozen while read, resumed after
    kinds = [e["kind"] for e in kernel.client.audit_tail(limit=2000)
             if e["kind"] in ("agent.paused", "agent.resumed")]
    assert kinds == ["agent.paused", "agent.resumed"] * 2

    info = kernel.client.call("package.inspect", ref=s1["ref"])
    assert info["kind"] == "snapshot" and info["state_keys"] == ["heard", "notes"]
    assert info["pending_messages"] == 1 and "agent_message" in info["taint"]
    # grant strings and limits, never token bytes or ids
    assert all(set(g) == {"grants", "max_invocations", "expires_at"} for g in info["grants"])
    held = kernel.client.call("cap.list", agent_id=aid)["tokens"]
    raw = b"".join(p.read_bytes() for p in (kernel.home / "registry" / "blobs" / "sha256").iterdir())
    assert held and not any(t["id"].encode() in raw for t in held)
    r = kernel.client.call("snapshot.restore", ref=s1["ref"])
    assert r["agent_id"] != aid and r["name"] != "snapper"
    done = kernel.client.wait(r["agent_id"], timeout=60)
    assert done.reason == "completed", kernel.daemon_log()[-3000:]
    res = done.result
    assert res["agent_id"] == r["agent_id"]
    assert res["files"] == {
        "a.txt": __import__("hashlib").sha256(b"alpha").hexdigest(),
        "ready.flag": __import__("hashlib").sha256(b"ready").hexdigest(),
        "snapper.py": __import__("hashlib").sha256((Path(__file__).parents[1] / "programs" / "snapper.py")
                                                   .read_bytes()).hexdigest(),
        "sub/b.bin": __import__("hashlib").sha256(bytes(range(256)) * 100).hexdigest(),
        "sub/deeper/run.sh": __import__("hashlib").sha256(b"#!/bin/sh\necho hi\n").hexdigest(),
    }
    assert res["exec"] is True                                   # the mode came back
    assert res["notes"]["value"] == {"step": 1, "items": ["x", "y"]}
    assert res["heard"] == {"value": {"psst": "a secret from another agent"}, "taint": ["agent_message"]}
    assert res["messages"] == [{"from_name": "operator", "body": {"cmd": "report"}, "taint": []}]
    assert "agent_message" in res["taint"]                       # taint kept
    assert sorted(res["grants"]) == sorted(STANDARD_GRANTS)      # no wider (here: the same)
    assert kernel.client.status(aid).state == "running"          # the original is untouched
    [ev] = _events(kernel, "snapshot.restore")
    assert ev["data"]["ok"] is True and ev["data"]["agent_id"] == r["agent_id"]


def test_budget_spent_is_carried_into_the_restored_agent(module_kernel: Any) -> None:
    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    aid, _ = _ready_agent(kernel, "budgeted")
    kernel.client.call("tool.invoke", agent_id=aid, name="echo", args={"text": "one"})
    used = kernel.client.status(aid).raw["budget"]["tool_calls"]
    assert used >= 1
    snap = kernel.client.call("snapshot.create", agent=aid)
    r = kernel.client.call("snapshot.restore", ref=snap["ref"])
    assert kernel.client.status(r["agent_id"]).raw["budget"]["tool_calls"] == used


def test_fork_with_a_narrower_grant_runs_with_only_that(module_kernel: Any) -> None:
    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    aid, _ = _ready_agent(kernel, "narrower")
    r = kernel.client.call("snapshot.fork", agent=aid, grants=["tool: echo", "file_read: /workspace/sub/*"])
    assert [g["grants"] for g in r["grants"]] == [["tool: echo", "file_read: /workspace/sub/*"]]
    done = kernel.client.wait(r["agent_id"], timeout=60)
    assert done.reason == "completed", kernel.daemon_log()[-3000:]
    assert sorted(done.result["grants"]) == ["file_read: /workspace/sub/*", "tool: echo"]
    assert "agent_message" in done.result["taint"]
    assert r["ref"] in {p["ref"] for p in _snapshots(kernel)}
    assert kernel.client.status(aid).state == "running"


def test_fork_asking_for_a_wider_grant_is_refused_and_leaves_nothing(kernel: Any) -> None:
    aid, _ = _ready_agent(kernel)
    agents = {a.agent_id for a in kernel.client.list()}
    blobs = _blobs(kernel)
    with pytest.raises(AgentixError) as ei:
        kernel.client.call("snapshot.fork", agent=aid, grants=["tool: echo", "exec: *"])
    assert ei.value.code == "handoff_escalation_denied"
    assert ei.value.data["missing"] == ["exec: *"]
    assert {a.agent_id for a in kernel.client.list()} == agents    # no agent
    assert _snapshots(kernel) == [] and _blobs(kernel) == blobs     # no artifact, no blob
    assert not _events(kernel, "agent.paused")                      # never even frozen
    [ev] = _events(kernel, "snapshot.fork")
    assert ev["data"]["ok"] is False
    assert kernel.client.status(aid).state == "running"


def test_restore_asking_for_a_wider_grant_is_refused_and_starts_nothing(module_kernel: Any) -> None:
    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    aid, _ = _ready_agent(kernel, "wider")
    snap = kernel.client.call("snapshot.create", agent=aid)
    agents = {a.agent_id for a in kernel.client.list()}
    with pytest.raises(AgentixError) as ei:
        kernel.client.call("snapshot.restore", ref=snap["ref"], grants=["file_write: /*"])
    assert ei.value.code == "handoff_escalation_denied"
    assert {a.agent_id for a in kernel.client.list()} == agents
    assert not list((kernel.home / "registry" / "tmp").iterdir())


@pytest.mark.parametrize("part", ["layer", "document"])
def test_a_tampered_snapshot_is_refused_on_restore_and_starts_nothing(kernel: Any, part: str) -> None:
    aid, _ = _ready_agent(kernel)
    snap = kernel.client.call("snapshot.create", agent=aid)
    import json

    layout = kernel.home / "registry" / "blobs" / "sha256"
    manifest = json.loads((layout / snap["digest"][7:]).read_bytes())
    target = manifest["layers"][0] if part == "layer" else manifest["config"]
    blob = layout / target["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(blob, 0o600)
    blob.write_bytes(bytes(data))
    agents = {a.agent_id for a in kernel.client.list()}
    with pytest.raises(AgentixError) as ei:
        kernel.client.call("snapshot.restore", ref=snap["ref"])
    assert ei.value.code == "package_rejected" and ei.value.data["reason"] == "digest_mismatch"
    assert {a.agent_id for a in kernel.client.list()} == agents
    assert not list((kernel.home / "registry" / "tmp").iterdir())
    assert sorted(p.name for p in (kernel.home / "workspaces").iterdir()) == sorted(
        a.agent_id for a in kernel.client.list() if (kernel.home / "workspaces" / a.agent_id).exists())


def test_symlinks_fifos_devices_and_hard_links_in_a_workspace_are_skipped_without_blocking(
        module_kernel: Any, tmp_path: Path) -> None:
    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    aid, ws = _ready_agent(kernel, "linked")
    secret = tmp_path / "shadow"  # a host file the agent must never get back through a snapshot
    secret.write_bytes(b"root:SECRET-HASH:19000:0:99999:7:::\n")
    os.chmod(secret, 0o600)
    os.symlink("/etc/passwd", ws / "link-out")
    os.symlink(secret, ws / "shadow-link")
    os.link(secret, ws / "sub" / "hard-link")  # same fs as the workspace: another name of the host file
    os.mkfifo(ws / "sub" / "pipe")  # opening it for reading would block forever
    device = os.geteuid() == 0
    if device:
        os.mknod(ws / "null-dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(kernel.connect().call("snapshot.create", agent=aid)),
                         daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the snapshot blocked"
    expected = ["link-out", "shadow-link", "sub/hard-link", "sub/pipe"] + (["null-dev"] if device else [])
    assert result["skipped"] == sorted(expected)
    for blob in (kernel.home / "registry" / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        assert b"SECRET-HASH" not in (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    r = kernel.client.call("snapshot.restore", ref=result["ref"])
    done = kernel.client.wait(r["agent_id"], timeout=60)
    assert done.reason == "completed", kernel.daemon_log()[-3000:]
    assert not {"link-out", "shadow-link", "sub/hard-link", "sub/pipe"} & set(done.result["files"])
    rws = Path(kernel.client.status(r["agent_id"]).raw["workspace"])
    assert not any(p.is_symlink() or not (p.is_file() or p.is_dir()) for p in rws.rglob("*"))


def test_only_a_live_agent_can_be_snapshotted(kernel: Any) -> None:
    aid = kernel.spawn("exit_code.py", "0", name="done")
    kernel.client.wait(aid, timeout=30)
    with pytest.raises(AgentixError) as ei:
        kernel.client.call("snapshot.create", agent=aid)
    assert ei.value.code in ("not_found", "state_error")
    assert _snapshots(kernel) == []


def test_a_refused_package_or_snapshot_call_records_what_it_was_asked(kernel: Any) -> None:
    """The outcome record of a failed package/snapshot method names the parameters it was
    about (dispatch.naming_params) and the error's data, and nothing else of the call."""
    with pytest.raises(AgentixError):
        kernel.client.call("package.rm", ref="nothing/here:1.0")
    with pytest.raises(AgentixError):
        kernel.client.call("snapshot.restore", ref="snapshots/none:x", name="n", accept_all=True)
    rm = [e["data"] for e in _events(kernel, "package.rm") if not e["data"]["ok"]]
    restore = [e["data"] for e in _events(kernel, "snapshot.restore") if not e["data"]["ok"]]
    assert rm and rm[-1]["params"] == {"ref": "nothing/here:1.0"}
    assert restore and restore[-1]["params"] == {"ref": "snapshots/none:x", "name": "n"}
    assert "accept_all" not in restore[-1]["params"]


# ---------------------------------------------------------------- the CLI, push, pull, signing
def _cli(kernel: Any, *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(kernel.home), *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_snapshot_restore_and_a_refused_fork(kernel: Any) -> None:
    import json

    aid, _ = _ready_agent(kernel)
    p = _cli(kernel, "snapshot", aid, "-t", "snapshots/mine:one", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    snap = json.loads(p.stdout)
    assert snap["ref"] == "snapshots/mine:one"
    p = _cli(kernel, "restore", "snapshots/mine:one", "--grant", "tool: echo", "--name", "again", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["name"] == "again" and [g["grants"] for g in r["grants"]] == [["tool: echo"]]
    agents = {a.agent_id for a in kernel.client.list()}
    p = _cli(kernel, "fork", aid, "--grant", "network: *", "--grant", "exec: python3")
    assert p.returncode != 0 and "exec: python3" in p.stderr
    assert {a.agent_id for a in kernel.client.list()} == agents
    assert [s["ref"] for s in _snapshots(kernel)] == ["snapshots/mine:one"]


def test_a_signed_snapshot_pushed_here_restores_there_and_an_unsigned_one_is_refused(
        start_kernel: Any, registry: Any) -> None:
    a = start_kernel()
    aid, _ = _ready_agent(a)
    ref = registry.ref("snaps/snapper:s1")
    a.client.call("snapshot.create", agent=aid, tag=ref)
    pub = a.client.call("keys.generate", name="default")["public_key"]
    a.client.call("package.sign", ref=ref, key="default")
    a.client.call("package.push", ref=ref)
    unsigned = registry.ref("snaps/snapper:unsigned")
    a.client.send(aid, "one more pending message")  # another state: another digest, not signed
    assert a.client.call("snapshot.create", agent=aid, tag=unsigned)["digest"] != \
        a.client.call("package.inspect", ref=ref)["digest"]
    a.client.call("package.push", ref=unsigned)

    b = start_kernel()
    with pytest.raises(AgentixError) as ei:                   # no trust yet: refused, nothing stored
        b.client.call("package.pull", ref=ref)
    assert ei.value.data["reason"] == "untrusted_key"
    b.client.call("trust.add", key=pub, pattern=registry.ref("snaps/*"))
    with pytest.raises(AgentixError) as ei:
        b.client.call("package.pull", ref=unsigned)
    assert ei.value.data["reason"] == "unsigned"
    pulled = b.client.call("package.pull", ref=ref)
    assert pulled["verdict"]["basis"] == "signed"
    # made elsewhere: its recorded grants are what the publisher says; nothing is granted unasked
    with pytest.raises(AgentixError) as ei:
        b.client.call("snapshot.restore", ref=ref)
    assert ei.value.code == "invalid_request" and "not made by this kernel" in str(ei.value)
    assert ei.value.data["recorded"] and b.client.list() == []
    r = b.client.call("snapshot.restore", ref=ref, accept_all=True)
    assert r["made_here"] is False
    done = b.client.wait(r["agent_id"], timeout=60)
    assert done.reason == "completed", b.daemon_log()[-3000:]
    assert done.result["notes"]["value"] == {"step": 1, "items": ["x", "y"]}
    # everything it brings is another agent's data: the agent, its state and its mail are tainted
    assert f"agent_message:snapshot {ref}" in done.result["taint"]
    assert f"agent_message:snapshot {ref}" in done.result["notes"]["taint"]
    with pytest.raises(AgentixError):                          # a snapshot is restored, never run as a package
        b.client.call("package.run", ref=ref, accept="all")


# ---------------------------------------------------------------- limits survive, freezing
def test_restoring_does_not_reset_invocation_counts_or_expiry(module_kernel: Any) -> None:
    """The attack: snapshot an agent whose limited token is nearly used up, restore it, and
    hope for a fresh count. The restored token has exactly what was left, and the same expiry."""
    import time

    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    caps = [{"grant": "tool: echo", "max_invocations": 3, "expires": 600}, "file_read: /workspace/*"]
    aid, ws = _ready_agent_with(kernel, caps)
    for _ in range(2):
        kernel.client.call("tool.invoke", agent_id=aid, name="echo", args={"message": "x"})
    [orig] = [t for t in kernel.client.call("cap.list", agent_id=aid)["tokens"] if t["grants"] == ["tool: echo"]]
    assert orig["remaining"] == 1
    snap = kernel.client.call("snapshot.create", agent=aid)
    r = kernel.client.call("snapshot.restore", ref=snap["ref"])
    [tok] = [t for t in kernel.client.call("cap.list", agent_id=r["agent_id"])["tokens"]
             if t["grants"] == ["tool: echo"]]
    assert tok["remaining"] == 1 and tok["max_invocations"] == 1
    assert tok["expires_at"] <= orig["expires_at"] + 1 and tok["expires_at"] > time.time()
    kernel.client.call("tool.invoke", agent_id=r["agent_id"], name="echo", args={"message": "last"})
    with pytest.raises(AgentixError) as ei:
        kernel.client.call("tool.invoke", agent_id=r["agent_id"], name="echo", args={"message": "one too many"})
    assert ei.value.code in ("capability_exhausted", "capability_denied")
    # a fork narrowing the limited group keeps its limit too (of an agent whose state moved on:
    # a fork of the unchanged agent is the same snapshot, whose count the restore above was
    # given — test_snapshot_counts.py)
    (ws / "moved-on.txt").write_text("after the snapshot")
    f = kernel.client.call("snapshot.fork", agent=aid, grants=["tool: echo"])
    assert f["digest"] != snap["digest"]
    assert [(g["grants"], g["max_invocations"]) for g in f["grants"]] == [(["tool: echo"], 1)]


def _ready_agent_with(kernel: Any, caps: list[Any]) -> tuple[str, Path]:
    aid = kernel.spawn("snapper.py", name="limited", capabilities=caps)
    ws = Path(kernel.client.status(aid).raw["workspace"])
    assert kernel.run("snapper.py", "tell", "limited", name="teller").reason == "completed"
    assert wait_until(lambda: (ws / "ready.flag").exists(), timeout=30), kernel.daemon_log()[-2000:]
    return aid, ws


def test_a_paused_agent_stays_paused_and_a_running_one_is_frozen_while_read(kernel: Any) -> None:
    aid, _ = _ready_agent(kernel)
    kernel.client.call("agent.pause", agent_id=aid)
    kernel.client.call("snapshot.create", agent=aid)
    assert kernel.client.status(aid).state == "paused"
    assert [e["kind"] for e in kernel.client.audit_tail(limit=2000)
            if e["kind"] in ("agent.paused", "agent.resumed")] == ["agent.paused"]


def test_a_restored_agent_never_inherits_isolation_lifecycle_priority_or_a_shared_memory_identity(
        module_kernel: Any) -> None:
    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    aid = kernel.spawn("snapper.py", name="special", lifecycle="persistent", priority=5,
                       memory={"enabled": True, "shared_identity": "team", "max_records": 7},
                       approval_required=["file_write"])
    ws = Path(kernel.client.status(aid).raw["workspace"])
    assert kernel.run("snapper.py", "tell", "special", name="teller").reason == "completed"
    assert wait_until(lambda: (ws / "ready.flag").exists(), timeout=30)
    snap = kernel.client.call("snapshot.create", agent=aid)
    r = kernel.client.call("snapshot.restore", ref=snap["ref"])
    m = kernel.client.status(r["agent_id"]).raw["manifest"]
    assert m["lifecycle"] == "on_demand" and m["priority"] == 1.0 and m["isolation"] == "strict"
    assert m["memory"]["shared_identity"] is None and m["memory"]["max_records"] == 7
    assert m["approval_required"] == ["file_write"]                # constraints are kept


def test_restorable_keeps_only_what_a_package_may_set() -> None:
    from agentix.kernel.snapshots_api import _restorable

    out = _restorable({"name": "x", "program": "p.py", "isolation": "degraded", "lifecycle": "persistent",
                       "priority": 100, "env": {"A": "1"}, "approval_required": ["exec"],
                       "memory": {"shared_identity": "orchestrator", "max_records": 3}, "unknown": 1})
    assert out == {"name": "x", "program": "p.py", "env": {"A": "1"}, "approval_required": ["exec"],
                   "memory": {"max_records": 3}}


def test_memory_records_come_back_in_the_restored_agent(module_kernel: Any) -> None:
    kernel = module_kernel  # shared with other tests: this one reads only its own agents
    aid = kernel.spawn("snapper.py", "memory", name="rememberer")
    ws = Path(kernel.client.status(aid).raw["workspace"])
    assert kernel.run("snapper.py", "tell", "rememberer", name="teller").reason == "completed"
    assert wait_until(lambda: (ws / "ready.flag").exists(), timeout=60), kernel.daemon_log()[-2000:]
    snap = kernel.client.call("snapshot.create", agent=aid)
    r = kernel.client.call("snapshot.restore", ref=snap["ref"])
    done = kernel.client.wait(r["agent_id"], timeout=60)
    assert done.reason == "completed", kernel.daemon_log()[-3000:]
    assert done.result["memories"][0] == "the cat sleeps on the mat"
    assert sorted(done.result["memories"]) == ["the cat sleeps on the mat", "we ship on friday"]
