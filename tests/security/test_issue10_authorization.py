"""Issue 10's problem list, attempted as an attacker would, through a real kernel.

Each test names the hole it closes, makes the attack through real agent processes over their
channels (an in-process ``Kernel`` on a real loop, plain backend, loopback HTTP servers) and
asserts the refusal AND that nothing changed: no file read or written, no connection made,
nothing charged, and exactly one audit record of the refusal.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentix.kernel.cap_grants import encode_token
from agentix.kernel.clock import VirtualClock

from _world import SCRIPTED, World, run, substrate, tool  # noqa: E402,F401  (same directory)


async def _copy_out(w: World, rec) -> None:  # the probe's program must be in a child's workspace
    shutil.copy(w.prog, rec.workspace / "probe.py")


# ---------------------------------------------------------------------------- HTTP
class _Hits:
    def __init__(self) -> None:
        self.paths: list[str] = []


def _server(hits: _Hits, redirect_to: str | None = None):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.paths.append(self.path)
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", redirect_to)
                self.end_headers()
                return
            body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def http():
    made = []

    def make(redirect_to: str | None = None) -> tuple[str, _Hits]:
        hits = _Hits()
        srv = _server(hits, redirect_to)
        made.append(srv)
        return srv.server_address[1], hits

    yield make
    for s in made:
        s.shutdown()


# ---------------------------------------------------------------------------- dead tokens in tools
def test_revoked_token_cannot_read_through_file_read_many(tmp_path):
    """One path is authorised by a live token; the other only by a revoked one: it is not read."""
    async def body(w):
        rec = await w.spawn([{"grant": "file_read: {workspace}/a/*"}, {"grant": "file_read: {workspace}/b/*"}])
        for d in ("a", "b"):
            (rec.workspace / d).mkdir()
            (rec.workspace / d / "f.txt").write_text(f"secret-{d}")
        a_tok, b_tok = w.k.caps.held[rec.agent_id]
        await w.op("cap.revoke", token_id=b_tok.id)
        before = w.used(rec)
        res = await w.calls(rec, [tool("file_read_many", paths=["a/f.txt", "b/f.txt"])])
        return res, a_tok, b_tok, before, w.used(rec)

    res, a_tok, b_tok, before, after = run(tmp_path, body)
    a, b = res[0]["ok"]["results"]
    assert a["ok"] and a["content"] == "secret-a"
    assert not b["ok"] and b["error"]["code"] == "capability_revoked"
    assert "secret-b" not in json.dumps(res)          # nothing read through the revoked token
    assert after[b_tok.id] == before[b_tok.id]          # nothing charged to it


def test_exhausted_token_cannot_read_through_file_read_many(tmp_path):
    async def body(w):
        rec = await w.spawn([{"grant": "file_read: {workspace}/a/*"},
                             {"grant": "file_read: {workspace}/b/*", "max_invocations": 1}])
        for d in ("a", "b"):
            (rec.workspace / d).mkdir()
            (rec.workspace / d / "f.txt").write_text(f"secret-{d}")
        _a, b_tok = w.k.caps.held[rec.agent_id]
        res = await w.calls(rec, [tool("file_read", path="b/f.txt"),
                                  tool("file_read_many", paths=["a/f.txt", "b/f.txt"])])
        return res, w.k.caps.ledger.used(b_tok.id)

    res, b_used = run(tmp_path, body)
    assert res[0]["ok"]["content"] == "secret-b"
    a, b = res[1]["ok"]["results"]
    assert a["ok"] and not b["ok"] and b["error"]["code"] == "capability_exhausted"
    assert json.dumps(res[1]).count("secret-b") == 0
    assert b_used == 1                                  # exactly the one allowed call


def test_revoked_token_cannot_authorise_a_web_fetch_redirect_hop(tmp_path, http):
    """The first host is covered by a live token; the redirect target only by a revoked one."""
    port2, hits2 = http()
    port1, hits1 = http(redirect_to=f"http://localhost:{port2}/next")

    async def body(w):
        rec = await w.spawn([{"grant": "network: 127.0.0.1"}, {"grant": "network: localhost"}])
        _a, b_tok = w.k.caps.held[rec.agent_id]
        await w.op("cap.revoke", token_id=b_tok.id)
        res = await w.calls(rec, [tool("web_fetch", url=f"http://127.0.0.1:{port1}/start")])
        return res, w.refusals(rec.agent_id), w.events("tool.result", rec.agent_id)

    res, refusals, results = run(tmp_path, body)
    assert res[0]["error"] == "capability_revoked"
    assert hits1.paths == ["/start"] and hits2.paths == []   # no connection to the hop's host
    assert [e["data"]["ok"] for e in results] == [False]       # one outcome record, a failure


def test_expired_token_cannot_authorise_a_web_fetch_redirect_hop(tmp_path, http):
    port2, hits2 = http()
    port1, _hits1 = http(redirect_to=f"http://localhost:{port2}/next")

    clock = VirtualClock()

    async def body(w):
        rec = await w.spawn([{"grant": "network: 127.0.0.1"}, {"grant": "network: localhost", "expires": 10}])
        clock.advance(10)  # the kernel's clock passes the second token's expiry; the first never expires
        return await w.calls(rec, [tool("web_fetch", url=f"http://127.0.0.1:{port1}/start")])

    res = run(tmp_path, body, clock=clock)
    assert res[0]["error"] == "capability_expired" and hits2.paths == []


def test_revoked_token_cannot_unlock_a_vault_secret(tmp_path, http):
    secret = "sk-vault-" + os.urandom(8).hex()
    keys = tmp_path / "home" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    (keys / "secrets.toml").write_text(f'[API_KEY]\nvalue = "{secret}"\nhosts = ["127.0.0.1"]\n')
    (keys / "secrets.toml").chmod(0o600)
    port, hits = http()

    async def body(w):
        rec = await w.spawn([{"grant": "network: 127.0.0.1"}, {"grant": "secret: API_KEY"}])
        _a, s_tok = w.k.caps.held[rec.agent_id]
        await w.op("cap.revoke", token_id=s_tok.id)
        res = await w.calls(rec, [tool("web_fetch", url=f"http://127.0.0.1:{port}/x", secret="API_KEY")])
        return res, w.refusals(rec.agent_id), w.events("tool.invoked", rec.agent_id)

    res, refusals, invoked = run(tmp_path, body)
    assert res[0]["error"] == "capability_revoked" and res[0]["data"]["request"] == "secret: API_KEY"
    assert hits.paths == []                           # refused before any connection
    assert len(refusals) == 1 and invoked == []       # one audit record; the tool never ran


# ---------------------------------------------------------------------------- expiry and charging
def test_expired_grant_refuses_ipc_send_broadcast_and_delegate(tmp_path):
    clock = VirtualClock()

    async def body(w):
        a = await w.spawn([{"grant": ["message_send: b", "tool: echo"], "expires": 10}], name="a")
        await _copy_out(w, a)
        b = await w.spawn([], name="b", parent=a)      # in a's tree: a broadcast would reach it
        clock.advance(10)
        res = await w.calls(a, [["ipc.send", {"to": "b", "message": "hi"}],
                                ["ipc.broadcast", {"message": "hi all"}],
                                ["cap.delegate", {"to": "b", "grants": ["tool: echo"]}]])
        return res, w.events("message.sent", a.agent_id), list(w.k.caps.held.get(b.agent_id, [])), \
            w.refusals(a.agent_id)

    res, sent, held_b, refusals = run(tmp_path, body, clock=clock)
    assert [r.get("error") for r in res] == ["capability_expired"] * 3
    assert sent == [] and held_b == []                # nothing delivered, nothing handed over
    assert len(refusals) == 3                          # one audit record per refused call


def test_broadcast_charges_one_invocation_per_recipient(tmp_path):
    async def body(w):
        root = await w.spawn([{"grant": ["message_send: *", "spawn_child: *"], "max_invocations": 3}],
                             name="root")
        await _copy_out(w, root)
        kids = [await w.spawn([], name=f"kid{i}", parent=root) for i in range(3)]
        tok = w.k.caps.held[root.agent_id][0]
        res = await w.calls(root, [["ipc.broadcast", {"message": "hello"}]])
        sent = [e["data"] for e in w.events("message.sent", root.agent_id)]
        return res, sent, [k.agent_id for k in kids], w.k.caps.ledger.used(tok.id)

    res, sent, kids, used = run(tmp_path, body)
    # the kernel spawned the kids (no spawn_child charge): the three invocations are the
    # broadcast's, one per recipient
    assert sorted(res[0]["ok"]["delivered"]) == sorted(kids) and len(sent) == 3 and used == 3


def test_broadcast_stops_at_the_invocation_limit(tmp_path):
    async def body(w):
        root = await w.spawn([{"grant": ["message_send: *"], "max_invocations": 2}], name="root")
        await _copy_out(w, root)
        kids = [await w.spawn([], name=f"kid{i}", parent=root) for i in range(3)]
        tok = w.k.caps.held[root.agent_id][0]
        res = await w.calls(root, [["ipc.broadcast", {"message": "hello"}]])
        return res, w.events("message.sent", root.agent_id), w.k.caps.ledger.used(tok.id)

    res, sent, used = run(tmp_path, body)
    assert len(res[0]["ok"]["delivered"]) == 2 and len(sent) == 2 and used == 2


@pytest.mark.parametrize("dead", ["revoked", "expired", "exhausted"])
def test_dry_run_answers_denied_for_a_dead_token_and_charges_nothing(tmp_path, dead):
    clock = VirtualClock()

    async def body(w):
        grant: dict[str, Any] = {"grant": "tool: echo"}
        if dead == "expired":
            grant["expires"] = 10
        if dead == "exhausted":
            grant["max_invocations"] = 0
        rec = await w.spawn([grant])
        tok = w.k.caps.held[rec.agent_id][0]
        if dead == "revoked":
            await w.op("cap.revoke", token_id=tok.id)
        if dead == "expired":
            clock.advance(10)
        check = await w.op("cap.check", agent_id=rec.agent_id, name="echo", args={"message": "x"})
        res = await w.calls(rec, [["tool.call", {"name": "echo", "args": {"message": "x"}, "dry_run": True}]])
        return check, res, w.k.caps.ledger.used(tok.id), w.events("tool.invoked", rec.agent_id)

    check, res, used, invoked = run(tmp_path, body, clock=clock)
    code = {"revoked": "capability_revoked", "expired": "capability_expired",
            "exhausted": "capability_exhausted"}[dead]
    assert check["allowed"] is False and check["error"] == code
    assert res[0]["error"] == code
    assert used == 0 and invoked == []


# ---------------------------------------------------------------------------- inference
def test_think_without_a_model_grant_reaches_no_provider(tmp_path):
    async def body(w):
        none = await w.spawn(["tool: echo"], name="nomodel")
        other = await w.spawn(["model: other:*"], name="other")
        ok = await w.spawn(["model: sim:*"], name="ok")
        r_none = await w.calls(none, [["think", {"messages": [{"role": "user", "content": "hi"}]}]])
        r_other = await w.calls(other, [["think", {"messages": [{"role": "user", "content": "hi"}],
                                                   "model": "sim:engine"}]])
        r_ok = await w.calls(ok, [["think", {"messages": [{"role": "user", "content": "hi"}]}]])
        usage = {a.name: len(w.events("usage.reported", a.agent_id)) for a in (none, other, ok)}
        return r_none, r_other, r_ok, usage, {a.name: len(w.refusals(a.agent_id)) for a in (none, other)}

    r_none, r_other, r_ok, usage, refusals = run(tmp_path, body, SCRIPTED)
    assert r_none[0]["error"] == "capability_denied" and r_none[0]["data"]["request"] == "model: sim:engine"
    assert r_other[0]["error"] == "capability_denied"
    assert r_ok[0]["ok"]["text"] == "thought"          # the positive control reached the provider
    assert usage == {"nomodel": 0, "other": 0, "ok": 1}
    assert refusals == {"nomodel": 1, "other": 1}


def test_spawn_with_an_ungranted_model_is_refused_naming_the_grant(tmp_path):
    async def body(w):
        try:
            await w.spawn(["tool: echo"], name="llm", model="sim:engine")
        except Exception as err:  # noqa: BLE001
            return err, list(w.k.table), sorted(os.listdir(w.home.workspaces))
        return None, [], []

    err, table, workspaces = run(tmp_path, body, SCRIPTED)
    assert err is not None and err.code == "capability_denied" and "model: sim:engine" in err.message
    assert table == [] and workspaces == []           # nothing was created


def test_llm_roots_get_a_finite_default_budget(tmp_path):
    async def body(w):
        rec = await w.spawn(["model: sim:*"], name="llm")
        await w.k.deliver(None, rec, "exit")
        return rec.budget.limits

    limits = run(tmp_path, body, SCRIPTED)
    assert limits.max_input_tokens is not None and limits.max_output_tokens is not None


# ---------------------------------------------------------------------------- holder binding
def test_copied_token_with_an_appended_holder_block_grants_nothing(tmp_path):
    async def body(w):
        alice = await w.spawn(["tool: echo"], name="alice")
        bob = await w.spawn([], name="bob")
        stolen = w.k.caps.held[alice.agent_id][0]
        # anyone can append a block offline: here one that names bob as the holder
        forged = w.k.caps.authority.attenuate(stolen, ["tool: echo"], now=time.time(), holder=bob.agent_id)
        res = await w.calls(bob, [["tool.call", {"name": "echo", "args": {"message": "x"},
                                                 "token": encode_token(forged)}]])
        await w.k.deliver(None, alice, "exit")
        return res, w.k.caps.ledger.used(stolen.id), w.events("tool.invoked", bob.agent_id), \
            w.refusals(bob.agent_id)

    res, used, invoked, refusals = run(tmp_path, body)
    assert res[0]["error"] == "capability_denied" and res[0]["data"]["reason"] == "not_issued"
    assert used == 0 and invoked == [] and len(refusals) == 1


# ---------------------------------------------------------------------------- constraints accumulate
def test_child_inherits_the_parents_approval_required(tmp_path):
    async def body(w):
        parent = await w.spawn(["tool: echo", "spawn_child: *"], name="parent", approval_required=["echo"])
        await _copy_out(w, parent)
        child = await w.spawn(["tool: echo"], name="child", parent=parent)
        res = await w.calls(child, [["tool.call", {"name": "echo", "args": {"message": "x"}, "wait": False}]])
        await w.k.deliver(None, parent, "exit")
        return res, child.manifest.approval_required, w.events("tool.invoked", child.agent_id)

    res, asks, invoked = run(tmp_path, body)
    assert res[0]["error"] == "approval_denied" and res[0]["data"]["reason"] == "pending"
    assert "echo" in asks and invoked == []


def test_delegated_token_carries_the_delegators_approval_required(tmp_path):
    async def body(w):
        b = await w.spawn([], name="b")
        a = await w.spawn(["tool: echo", "message_send: b"], name="a", approval_required=["echo"])
        await w.calls(a, [["cap.delegate", {"to": "b", "grants": ["tool: echo"]}]], exit=False)
        res = await w.calls(b, [["tool.call", {"name": "echo", "args": {"message": "x"}, "wait": False}]])
        await w.k.deliver(None, a, "exit")
        return res, w.events("tool.invoked", b.agent_id)

    res, invoked = run(tmp_path, body)
    assert res[0]["error"] == "approval_denied" and invoked == []


# ---------------------------------------------------------------------------- the kernel's own state
def test_unrestricted_preset_cannot_read_the_root_key(tmp_path):
    async def body(w):
        rec = await w.spawn(["preset: unrestricted"], name="root-ish")
        key = w.home.keys / "root.key"
        before = key.read_bytes()
        res = await w.calls(rec, [tool("file_read", path=str(key)),
                                  tool("file_read_many", paths=[str(key)]),
                                  tool("file_write", path=str(w.home.keys / "evil"), content="x"),
                                  tool("grep", path=str(w.home.root), pattern=".")])
        return res, before, key.read_bytes(), sorted(os.listdir(w.home.keys)), w.refusals(rec.agent_id)

    res, before, after, keys, refusals = run(tmp_path, body)
    assert [r.get("error") for r in res] == ["capability_denied"] * 4
    assert all(r["data"]["reason"] == "kernel_state" for r in res)
    assert before.hex() not in json.dumps(res) and after == before and "evil" not in keys
    assert len(refusals) == 4


def test_a_hard_link_to_the_root_key_is_fenced_at_open_time(tmp_path):
    """The decision sees a path outside $AGENTIX_HOME; the opened file is the root key."""
    data = tmp_path / "data"
    data.mkdir()

    async def body(w):
        os.link(w.home.keys / "root.key", data / "innocent.bin")
        rec = await w.spawn([f"file_read: {data}/*"], name="reader")
        res = await w.calls(rec, [tool("file_read", path=str(data / "innocent.bin")),
                                  tool("grep", path=str(data), pattern=".")])
        return res, (w.home.keys / "root.key").read_bytes()

    res, key = run(tmp_path, body)
    assert res[0]["error"] == "capability_denied" and res[0]["data"]["reason"] == "kernel_state"
    assert res[1]["ok"]["matches"] == []              # the walk skips the key's inode
    assert key.hex() not in json.dumps(res)


def test_a_symlinked_grant_root_into_the_home_is_fenced_at_open_time(tmp_path):
    """The operator's grant names a directory that is (through a symlink) the kernel's keys."""
    async def body(w):
        os.symlink(w.home.keys, tmp_path / "innocent")
        rec = await w.spawn([f"file_read: {tmp_path}/innocent/*"], name="reader")
        return await w.calls(rec, [tool("file_read", path=f"{tmp_path}/innocent/root.key")])

    res = run(tmp_path, body)
    assert res[0]["error"] == "capability_denied" and res[0]["data"]["reason"] == "kernel_state"


# ---------------------------------------------------------------------------- budget
def test_max_tool_calls_is_enforced_in_the_decision(tmp_path):
    async def body(w):
        rec = await w.spawn([{"grant": "tool: echo"}], name="counted", budget={"max_tool_calls": 2})
        tok = w.k.caps.held[rec.agent_id][0]
        res = await w.calls(rec, [tool("echo", message=str(i)) for i in range(3)])
        return res, w.k.caps.ledger.used(tok.id), w.events("tool.invoked", rec.agent_id), \
            w.refusals(rec.agent_id)

    res, used, invoked, refusals = run(tmp_path, body)
    assert [r.get("error") for r in res] == [None, None, "budget_exceeded"]
    assert len(invoked) == 2 and len(refusals) == 1


def test_a_redirect_hop_is_decided_again_and_charged_once(tmp_path, http):
    """The hop's host is covered by a second, limited token: it is charged exactly once (not
    once per check of the host and of its address), the first token not again."""
    port2, hits2 = http()
    port1, _hits1 = http(redirect_to=f"http://localhost:{port2}/next")

    async def body(w):
        rec = await w.spawn([{"grant": "network: 127.0.0.1", "max_invocations": 5},
                             {"grant": "network: localhost", "max_invocations": 5}])
        a_tok, b_tok = w.k.caps.held[rec.agent_id]
        res = await w.calls(rec, [tool("web_fetch", url=f"http://127.0.0.1:{port1}/start")])
        return res, w.k.caps.ledger.used(a_tok.id), w.k.caps.ledger.used(b_tok.id)

    res, used_a, used_b = run(tmp_path, body)
    assert res[0]["ok"]["status"] == 200 and hits2.paths == ["/next"]
    assert (used_a, used_b) == (1, 1)
