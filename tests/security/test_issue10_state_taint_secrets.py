"""Issue 10, part B: trusted state in the store, taint everywhere data enters, secrets never
leave the kernel.

Restart tests run a REAL kernel daemon (``agentixd`` in a subprocess, the suite's isolation
mode) and restart it on the same home, cleanly or with ``kill -9``; taint and redaction tests
run an in-process kernel with real agent processes and real loopback HTTP servers (the
harness of test_scenarios_12_36.py) or a real daemon where its own log is the evidence.
Every refusal test asserts the refusal and that nothing else changed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from conftest import Daemon, short_tmp, wait_until
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentix.core.errors import AgentixError, CapabilityDenied, Timeout, ToolError
from agentix.kernel.vault import RedactingFilter, Vault
from agentix.sdk.errors import AgentixError as SdkError
from agentix.tools.secrets import inject

from _ports import free_port  # nothing listens there once it is released
from test_scenarios_12_36 import World, run, tool  # noqa: E402  (same directory)

# ---------------------------------------------------------------------------- a persistent probe
KEEPER = '''
from agentix.sdk import agent
k = agent.connect()
while True:
    m = k.recv(timeout=60)
    if m is None:
        continue
    body = m.body
    if not (isinstance(body, dict) and "task" in body):
        continue
    out = []
    for method, params in body["task"]:
        try:
            out.append({"ok": k.call(method, **params)})
        except Exception as e:
            out.append({"error": getattr(e, "code", repr(e)), "message": str(e),
                        "data": getattr(e, "data", None)})
    k.call("agent.reply", request_id=body["request_id"], result=out)
'''


class Homes:
    """Daemons on ONE home, restarted cleanly or killed; every one cleaned up at the end."""

    def __init__(self, isolation: str) -> None:
        self.tmp = short_tmp()
        self.home = self.tmp / "h"
        self.isolation = isolation
        self.current: Daemon | None = None
        self.prog = self.tmp / "keeper.py"
        self.prog.write_text(KEEPER)

    def start(self) -> Daemon:
        self.current = Daemon(self.home, self.isolation)
        return self.current

    def restart(self, how: str) -> Daemon:
        d = self.current
        assert d is not None
        if how == "clean":
            d.stop()
        else:
            self.kill9()
        return self.start()

    def kill9(self) -> None:
        d = self.current
        assert d is not None
        if d.proc.poll() is None:
            os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        d.client.close()
        d.log.close()
        self.current = None

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    def keeper(self, d: Daemon, caps: list[Any], name: str = "keeper", **extra: Any) -> str:
        """The live persistent keeper's id (spawned if not running, e.g. respawned at start)."""
        for a in d.client.list(all=False):
            if a.name == name and a.state == "running":
                return a.agent_id
        r = d.client.spawn({"name": name, "program": str(self.prog), "lifecycle": "persistent",
                            "capabilities": caps, "isolation": "degraded"
                            if self.isolation == "degraded" else "strict", **extra})
        d.see(r.pid)
        return r.agent_id

    @staticmethod
    def respawned(d: Daemon, name: str = "keeper") -> str:
        assert wait_until(lambda: any(a.name == name and a.state == "running"
                                      for a in d.client.list(all=False)), timeout=20), d.daemon_log()
        return next(a.agent_id for a in d.client.list(all=False) if a.name == name and a.state == "running")

    @staticmethod
    def do(d: Daemon, aid: str, calls: list) -> list[dict[str, Any]]:
        return d.client.run_agent(aid, calls, timeout=60)["result"]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.home / 'agentix.db'}?mode=ro", uri=True)


@pytest.fixture
def homes(isolation_mode: str):
    h = Homes(isolation_mode)
    try:
        yield h
    finally:
        h.close()


ECHO = ["tool.call", {"name": "echo", "args": {"message": "hi"}}]


@pytest.mark.parametrize("how", ["clean", "kill9"])
def test_revoked_grant_is_still_refused_after_a_kernel_restart(homes, how):
    d = homes.start()
    aid = homes.keeper(d, ["tool: echo"])
    assert homes.do(d, aid, [ECHO]) == [{"ok": {"echo": "hi"}}]
    (tok,) = d.client.caps(aid)
    d.client.revoke(tok["id"])
    assert homes.do(d, aid, [ECHO])[0]["error"] == "capability_revoked"

    d = homes.restart(how)
    new = homes.respawned(d)
    assert new != aid  # a new run of the same persistent agent
    before = [e["kind"] for e in d.client.events(agent=new, limit=10_000)]
    res = homes.do(d, new, [ECHO])
    assert res[0]["error"] == "capability_revoked", res
    (carried,) = d.client.caps(new)
    assert carried["revoked"] is True and carried["grants"] == ["tool: echo"]
    # nothing ran: the only new record about the call is its denial
    after = [e["kind"] for e in d.client.events(agent=new, limit=10_000)]
    assert "tool.result" not in after[len(before):] and after[len(before):].count("capability.denied") == 1
    with homes.db() as db:
        reasons = dict(db.execute("SELECT token_id, reason FROM revocations").fetchall())
    assert reasons[tok["id"]] == "operator" and "carried over" in reasons[carried["id"]]


@pytest.mark.parametrize("how", ["clean", "kill9"])
def test_two_of_three_invocations_then_a_restart_leaves_exactly_one(homes, how):
    d = homes.start()
    aid = homes.keeper(d, [{"grant": "tool: echo", "max_invocations": 3}])
    assert homes.do(d, aid, [ECHO, ECHO]) == [{"ok": {"echo": "hi"}}] * 2

    d = homes.restart(how)
    new = homes.respawned(d)
    (tok,) = d.client.caps(new)
    assert tok["max_invocations"] == 3 and tok["remaining"] == 1
    res = homes.do(d, new, [ECHO, ECHO, ECHO])
    assert res[0] == {"ok": {"echo": "hi"}}
    assert [r["error"] for r in res[1:]] == ["capability_exhausted"] * 2
    assert d.client.caps(new)[0]["remaining"] == 0
    # echo has no outside effect: its charge is committed with the next group commit (within
    # the commit window, docs/audit.md); reading the log through the kernel waits for that
    d.client.events(limit=1)
    with homes.db() as db:
        used = dict(db.execute("SELECT token_id, used FROM token_uses").fetchall())
        n_revoked = db.execute("SELECT count(*) FROM revocations").fetchone()[0]
        n_counts = db.execute("SELECT count(*) FROM token_uses").fetchone()[0]
    assert used[tok["id"]] == 3  # refusals charge nothing
    if how == "kill9":  # kernel.recovered says what it restored, and it is true
        (rec,) = [e for e in d.client.events(kind="kernel.recovered", limit=100)]
        data = rec["data"]
        assert data["clean_shutdown"] is False and aid in data["exited"]
        assert data["invocation_counts"] >= 1 and data["revoked_now"] >= 1
        assert data["revocations"] <= n_revoked and data["invocation_counts"] <= n_counts


def test_pending_approval_lives_in_the_store_and_a_legacy_json_file_is_imported(homes):
    legacy = {"id": "ap-legacy1", "agent": "ag-gone", "tool": "echo", "action_hash": "0" * 64,
              "created_at": time.time(), "deadline": time.time() + 3600, "state": "pending",
              "reason": None, "answered_by": None, "args": {"message": "old"}}
    homes.home.mkdir(parents=True)
    (homes.home / "approvals.json").write_text(json.dumps([legacy]))
    d = homes.start()
    listed = d.client.approvals()
    assert [(a["id"], a["args"]) for a in listed] == [("ap-legacy1", {"message": "old"})]
    assert not (homes.home / "approvals.json").exists()  # imported, then removed
    aid = homes.keeper(d, ["tool: echo"], approval_required=["echo"])
    res = homes.do(d, aid, [["tool.call", {"name": "echo", "args": {"message": "x"}, "wait": False}]])
    assert res[0]["error"] == "approval_denied" and res[0]["data"]["reason"] == "pending"
    fresh = res[0]["data"]["approval_id"]
    d.client.deny("ap-legacy1", "stale")

    d = homes.restart("kill9")
    after = {a["id"]: (a["state"], a["args"]) for a in d.client.approvals(all=True)}
    assert after == {"ap-legacy1": ("denied", {"message": "old"}), fresh: ("pending", {"message": "x"})}
    assert not (homes.home / "approvals.json").exists()  # no side file comes back
    rec = d.client.events(kind="kernel.recovered", limit=100)[-1]  # (the first start's: the import)
    assert rec["data"]["pending_approvals"] == [fresh] and rec["data"]["clean_shutdown"] is False
    with homes.db() as db:
        rows = dict(db.execute("SELECT id, state FROM approvals").fetchall())
    assert rows == {"ap-legacy1": "denied", fresh: "pending"}


class _Hits(BaseHTTPRequestHandler):
    hits = 0
    kill_at = 0
    kernel_pid = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        if type(self).hits == type(self).kill_at:
            os.kill(type(self).kernel_pid, signal.SIGKILL)  # the effect is happening: die now
            time.sleep(0.5)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a: Any) -> None:
        pass


def test_kill9_between_charge_and_effect_never_leaves_an_effect_uncharged(homes):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/x"
    try:
        d = homes.start()
        _Hits.kill_at, _Hits.kernel_pid = 4, d.proc.pid
        aid = homes.keeper(d, [{"grant": "network: 127.0.0.1", "max_invocations": 50}], name="fetcher")
        calls = [["tool.call", {"name": "web_fetch", "args": {"url": url}}]] * 10
        with pytest.raises(Exception):
            homes.do(d, aid, calls)  # the kernel dies during the 4th fetch
        assert wait_until(lambda: d.proc.poll() is not None, timeout=10)
        homes.kill9()
        with homes.db() as db:
            (tid,) = db.execute("SELECT id FROM issued_tokens WHERE holder=?", (aid,)).fetchone()
            row = db.execute("SELECT used FROM token_uses WHERE token_id=?", (tid,)).fetchone()
        hits = _Hits.hits
        assert hits == 4
        assert row is not None and row[0] >= hits  # every effect that happened was charged first
        d = homes.start()  # and the next kernel continues from there
        new = homes.respawned(d, "fetcher")
        assert d.client.caps(new)[0]["remaining"] == 50 - row[0]
    finally:
        srv.shutdown()


# ---------------------------------------------------------------------------- taint
class _World(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/redirect-off"):
            self.send_response(302)
            self.send_header("Location", "http://elsewhere.test/landing")
            self.end_headers()
        elif self.path.startswith("/reset"):
            self.connection.shutdown(socket.SHUT_RDWR)  # no status line at all
        else:
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"page")

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def world_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _World)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.parametrize("path,code", [("/redirect-off", "capability_denied"), ("/reset", "tool_error")])
def test_an_error_carrying_world_text_taints_the_context_like_a_result(tmp_path, world_server, path, code):
    out = tmp_path / "outside"
    out.mkdir()
    url = world_server + path

    async def body(w):
        rec = await w.spawn(["network: 127.0.0.1", f"file_write: {out}/*", "tool: echo"])
        res = await w.calls(rec, [["sys.info", {}], tool("web_fetch", url=url), ["sys.info", {}],
                                  tool("file_write", path=f"{out}/x.txt", content="leak")])
        return rec, res, w.events("tool.result", rec.agent_id), w.events("taint.violation", rec.agent_id)

    rec, res, results, violations = run(tmp_path, body)
    assert res[0]["ok"]["taint"] == []
    assert res[1]["error"] == code  # the fetch failed ...
    assert res[2]["ok"]["taint"] == [f"fetched_url:{url}"]  # ... and its error still labelled us
    assert res[3]["error"] == "taint_violation" and res[3]["data"]["source"] == "fetched_url"
    assert list(out.iterdir()) == []  # nothing written
    fetch = [e for e in results if e["data"].get("tool") == "web_fetch"]
    assert len(fetch) == 1 and fetch[0]["taint"] == [f"fetched_url:{url}"]
    assert len(violations) == 1


def test_state_saved_while_tainted_comes_back_with_its_labels(tmp_path, world_server):
    out = tmp_path / "outside"
    out.mkdir()
    url = world_server + "/page"
    caps = ["network: 127.0.0.1", f"file_write: {out}/*", "untaint: fetched_url"]

    async def body(w):
        first = await w.spawn(caps, name="keeper")
        r1 = await w.calls(first, [tool("web_fetch", url=url),
                                   ["agent.state_save", {"key": "notes", "value": "page said hi"}]])
        clean = await w.spawn(caps, name="other")
        r0 = await w.calls(clean, [["agent.state_save", {"key": "notes", "value": "mine"}]])
        second = await w.spawn(caps, name="keeper")  # a new run of the same identity
        r2 = await w.calls(second, [["sys.info", {}], ["agent.state_load", {"key": "notes"}],
                                    ["sys.info", {}],
                                    tool("file_write", path=f"{out}/a.txt", content="x"),
                                    ["sys.untaint", {"label": "fetched_url"}],
                                    tool("file_write", path=f"{out}/b.txt", content="x")])
        third = await w.spawn(caps, name="other")
        r3 = await w.calls(third, [["agent.state_load", {"key": "notes"}], ["sys.info", {}]])
        return r1, r0, r2, r3

    r1, r0, r2, r3 = run(tmp_path, body)
    label = f"fetched_url:{url}"
    assert r1[1]["ok"]["taint"] == [label]
    assert r2[0]["ok"]["taint"] == []  # a new run starts clean ...
    assert r2[1]["ok"] == {"value": "page said hi", "taint": [label]}
    assert r2[2]["ok"]["taint"] == [label]  # ... until it loads what a tainted run saved
    assert r2[3]["error"] == "taint_violation"
    assert r2[4]["ok"]["removed"] == [label]  # only untaint (or an approval) clears it
    assert "ok" in r2[5] and sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert r3[0]["ok"] == {"value": "mine", "taint": []} and r3[1]["ok"]["taint"] == []
    assert r0[0]["ok"]["taint"] == []


# ---------------------------------------------------------------------------- secrets
SECRET = "sk-vault-" + os.urandom(6).hex()


class _Leaky(BaseHTTPRequestHandler):
    """A server that puts whatever key it is sent into its answers."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/status"):
            self.send_response(500, f"broken for key {SECRET}")
            body = f"error: your key {SECRET} is bad".encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/redirect-host"):
            self.send_response(302)
            self.send_header("Location", f"http://{SECRET}.example/")
            self.end_headers()
        elif self.path.startswith("/redirect-closed"):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{_Leaky.closed}/?key={SECRET}")
            self.end_headers()
        elif self.path.startswith("/slow"):
            time.sleep(3)
            self.send_response(200)
            self.end_headers()

    def log_message(self, *a: Any) -> None:
        pass


def test_a_secret_in_every_web_fetch_failure_path_leaves_no_trace(start_kernel, isolation_mode):
    _Leaky.closed = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    tmp = short_tmp()
    home = tmp / "h"
    (home / "keys").mkdir(parents=True, mode=0o700)
    vault = home / "keys" / "secrets.toml"
    vault.write_text(f'[API_KEY]\nvalue = "{SECRET}"\nhosts = ["127.0.0.1", "no-such-host.invalid"]\n')
    vault.chmod(0o600)
    d = Daemon(home, isolation_mode)
    try:
        q = {"secret": "API_KEY", "secret_as": "query", "secret_name": "key"}
        calls = [
            ["tool.call", {"name": "web_fetch", "args": {"url": f"http://127.0.0.1:{_Leaky.closed}/x", **q}}],
            ["tool.call", {"name": "web_fetch", "args": {"url": "http://no-such-host.invalid/x", **q}}],
            ["tool.call", {"name": "web_fetch", "args": {"url": base + "/status", **q}}],
            ["tool.call", {"name": "web_fetch", "args": {"url": base + "/redirect-host", **q}}],
            ["tool.call", {"name": "web_fetch", "args": {"url": base + "/redirect-closed", **q}}],
            ["tool.call", {"name": "web_fetch", "args": {"url": base + "/slow", "timeout": 0.5, **q}}],
        ]
        info = d.run("calls.py", json.dumps(calls), name="leaky", timeout=60,
                     capabilities=["network: 127.0.0.1, no-such-host.invalid", "secret: API_KEY"])
        res = info.result
        assert [r.get("error") for r in res] == ["tool_error", "tool_error", None, "capability_denied",
                                                  "tool_error", "timeout"], res
        assert res[2]["ok"]["status"] == 500 and "[secret:API_KEY]" in res[2]["ok"]["content"]
        assert "[secret:API_KEY]" in res[0]["message"] and "[secret:API_KEY]" in res[3]["message"]
        # the operator path: same redaction
        with pytest.raises(SdkError) as op_err:
            d.client.invoke("web_fetch", {"url": f"http://127.0.0.1:{_Leaky.closed}/y", **q}, agent=info.agent_id)
        assert SECRET not in str(op_err.value) and SECRET not in json.dumps(op_err.value.data)
        audit = json.dumps(d.client.audit_tail(0, limit=10_000))
        agent_log = d.client.logs(info.agent_id)[0]
    finally:
        d.stop()
        srv.shutdown()
    try:
        kernel_log = (tmp / "h-daemon.log").read_text(errors="replace")
        assert "HTTP Request" in kernel_log  # httpx's request log was on, and redacted:
        store = b"".join(p.read_bytes() for p in home.glob("agentix.db*")).decode("latin-1")
        for where, text in [("reply", json.dumps(res)), ("audit", audit), ("agent log", agent_log),
                            ("kernel log", kernel_log), ("store", store)]:
            for form in (SECRET, quote(SECRET, safe=""), base64.b64encode(SECRET.encode()).decode()):
                assert form not in text, f"the secret leaked into the {where}"
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def test_inference_events_and_provider_keys_are_redacted(tmp_path):
    key = "sk-provider-" + os.urandom(8).hex()
    config = f'default_model = "remote:m"\n[providers.remote]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "{key}"\n'

    async def body(w):
        await w.k.inference._emit("usage.reported", None, {"note": f"key={key}"})
        res = await w.op("tool.invoke", name="echo", args={"message": key})
        return res, w.events("usage.reported")

    res, ev = run(tmp_path, body, config_toml=config)
    assert res == {"echo": "[secret:provider:remote]"}
    assert ev and key not in json.dumps(ev) and "[secret:provider:remote]" in json.dumps(ev)


# ---------------------------------------------------------------------------- property
_printable = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=("Cs",)),
                     min_size=4, max_size=24)
_meta = st.sampled_from(list(".^$*+?{}[]\\|()%&=#'\"/:@ ~"))
secrets_ = st.lists(st.one_of(_meta, st.characters(min_codepoint=33, max_codepoint=126)),
                    min_size=4, max_size=24).map("".join) | _printable


def _shapes(secret: str, noise: str) -> list[AgentixError]:
    url = str(httpx.URL(inject(f"http://api.example/v1?q={quote_plus(noise)}", secret, "query", "key").url))
    return [
        ToolError(f"web_fetch of {url} failed: [Errno 111] Connection refused", url=url),
        Timeout(f"web_fetch of {url} took longer than 30 s", url=url, timeout=30),
        CapabilityDenied(f"no capability allows network access to {secret}.example",
                         reason="not_granted", host=f"{secret}.example"),
        ToolError(f"server said {secret!r} {json.dumps(secret)}", body={"echo": [noise, secret], secret: 1}),
        ToolError(f"HTTP/1.1 500 {noise}{secret}{noise}", status_line=f"500 {secret}",
                  raw=secret.encode(), encoded=[quote(secret, safe=""), quote_plus(secret)]),
        ToolError("b64 " + base64.b64encode(secret.encode()).decode(),
                  u=base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=")),
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# noise without control characters: their JSON escapes (\u0000) would spell digits that a
# secret like "0000" matches by construction, not by a leak
@given(secret=secrets_, noise=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12),
       shape=st.integers(0, 5))
def test_random_secrets_in_random_error_shapes_never_survive_redaction(secret, noise, shape):
    assume(secret.strip() == secret and secret.isprintable())
    vault = Vault({"K": secret})
    err = _shapes(secret, noise)[shape]
    red = vault.redact_error(err)
    assert type(red) is type(err) and red.code == err.code
    text = red.message + "\x00" + json.dumps(red.data, default=repr) + "\x00" + repr(red.data)
    text = text.replace("[secret:K]", "\x00")
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
             repr(secret)[1:-1], base64.b64encode(secret.encode()).decode()}
    for form in forms:
        assert form not in text, (form, red.message, red.data)


def test_the_log_filter_redacts_messages_arguments_and_tracebacks():
    import logging

    vault = Vault({"K": "hunter2-secret"})
    f = RedactingFilter(vault)
    rec = logging.LogRecord("httpx", logging.INFO, __file__, 1, 'HTTP Request: GET %s "%s"',
                            ("http://x/?key=hunter2-secret", "HTTP/1.1 200 OK"), None)
    try:
        raise ValueError("boom hunter2-secret")
    except ValueError:
        import sys

        rec2 = logging.LogRecord("agentix", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert f.filter(rec) and f.filter(rec2)
    line = logging.Formatter().format(rec) + logging.Formatter().format(rec2)
    assert "hunter2" not in line and line.count("[secret:K]") >= 2


def test_a_charge_the_store_refuses_stops_every_later_effect(tmp_path, monkeypatch):
    """Fail closed: if the journal cannot make a charge durable, ``flush`` (awaited before
    every effect) raises instead of letting the effect run on an unrecorded charge."""
    from agentix.core.caps import Authority, generate_root_key
    from agentix.core.errors import InternalError
    from agentix.core.grants import parse_grants
    from agentix.kernel.trusted_state import StoredLedger
    from agentix.store.db import Database
    from agentix.store.state import TokenStore

    db = Database(tmp_path / "agentix.db")
    led = StoredLedger(db)
    tok = Authority(generate_root_key()).mint("ag-1", parse_grants(["tool: echo"]), now=time.time(),
                                              max_invocations=5)
    led.register(tok)
    led.charge(tok)
    asyncio.run(led.flush())
    assert TokenStore(db).used() == {tok.id: 1}

    def refuse(*a: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(TokenStore, "set_used_in", staticmethod(refuse))
    led.charge(tok)
    with pytest.raises(InternalError):
        asyncio.run(led.flush())
    with pytest.raises(InternalError):  # and it stays refused
        asyncio.run(led.flush())
    monkeypatch.undo()
    assert TokenStore(db).used() == {tok.id: 1}  # the store never claimed the second charge
    db.close()
