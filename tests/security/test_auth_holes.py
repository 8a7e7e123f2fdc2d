"""The three holes the audit of issue 10 left open, each attempted through a real kernel.

Each test is named after the attack and asserts the refusal AND that the world did not move
(nothing delivered, run, written, sent or charged). Harness: the scenarios' one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_scenarios_12_36 import World, run, tool  # noqa: E402  (same directory)

from agentix.core.errors import InvalidRequest  # noqa: E402
from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.dispatch import Call  # noqa: E402


# ---------------------------------------------------------------------------- ipc.broadcast name race
class _SpawnDuringBroadcast:
    """A stage after the capability stage: between the decision and the handler, an agent of
    the sender's tree is spawned with a name the sender's grant covers (the race, made certain)."""

    def __init__(self, w: World, parent: Any) -> None:
        self.w, self.parent = w, parent
        self.late: list[Any] = []

    async def before(self, call: Call) -> None:
        if call.method == "ipc.broadcast" and not self.late:
            m = {"name": "peer", "program": "probe.py", "isolation": "degraded"}
            self.late.append(await self.w.k.spawn(parse_manifest(m), parent=self.parent))

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        return None


def test_agent_spawned_with_a_granted_name_after_the_broadcast_decision_receives_nothing(tmp_path):
    async def body(w: World):
        sender = await w.spawn([{"grant": "message_send: [peer]", "max_invocations": 5},
                                "spawn_child: [peer]"], name="sender")
        m = {"name": "peer", "program": "probe.py", "isolation": "degraded"}
        first = await w.k.spawn(parse_manifest(m), parent=sender)
        race = _SpawnDuringBroadcast(w, sender)
        w.k.pipeline.add_stage(race)
        toks = list(w.k.caps.held[sender.agent_id])
        res = await w.calls(sender, [["ipc.broadcast", {"message": "hi"}]])
        late = race.late[0]
        sent = [e["data"]["to"] for e in w.events("message.sent", sender.agent_id)]
        return res, first, late, sent, sum(w.k.caps.ledger.used(t.id) for t in toks), \
            len(late.mailbox)

    res, first, late, sent, used, late_mail = run(tmp_path, body)
    assert res[0]["ok"]["delivered"] == [first.agent_id], res
    assert late.agent_id not in sent and late_mail == 0  # the late agent got nothing
    assert sent == [first.agent_id] and used == 1  # one recipient decided, one charged, one sent


# ---------------------------------------------------------------------------- dry_run on every path
def test_operator_tool_invoke_dry_run_without_agent_id_runs_nothing(tmp_path):
    out = tmp_path / "written.txt"

    async def body(w: World):
        before = len(w.events("tool.result"))
        r1 = await w.op("tool.invoke", name="file_write", args={"path": str(out), "content": "x"},
                        dry_run=True)
        r2 = await w.op("tool.invoke", name="echo", args={"message": "x"}, dry_run=True)
        return r1, r2, w.events("tool.result")[before:]

    r1, r2, results = run(tmp_path, body)
    assert r1["allowed"] is True and r1["token_id"] is None and "echo" not in r2, (r1, r2)
    assert r2["allowed"] is True and r2["requests"] == ["tool: echo"]
    assert not out.exists()  # the write did not happen
    assert all(e["data"]["ok"] for e in results)  # answered as checks, nothing failed


def test_dry_run_on_a_method_the_table_does_not_decide_is_refused_not_run(tmp_path):
    """``agent.stop_child`` (a guard, no decision) with ``dry_run`` must not stop the child."""
    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]"], name="parent")
        m = {"name": "kid", "program": "probe.py", "isolation": "degraded"}
        kid = await w.k.spawn(parse_manifest(m), parent=parent)
        seen: list[bool] = []

        class Observe:  # after the refused stop_child, is the child still alive?
            async def before(self, call: Call) -> None:
                if call.method == "tool.call" and call.caller.agent_id == parent.agent_id:
                    seen.append(kid.live)

            async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
                return None

        w.k.pipeline.stages.insert(0, Observe())
        res = await w.calls(parent, [["agent.stop_child", {"agent_id": kid.agent_id, "dry_run": True}],
                                     ["ipc.recv", {"dry_run": True}],
                                     ["tool.call", {"name": "echo", "args": {}}]])
        alive = seen == [True]
        return res, alive

    res, alive = run(tmp_path, body)
    assert [r.get("error") for r in res[:2]] == [InvalidRequest.code] * 2, res
    assert "dry_run" in res[0]["message"] and alive  # refused, and the child still runs


# ---------------------------------------------------------------------------- secrets bound to hosts
from test_issue10_authorization import _Hits, _server  # noqa: E402

from agentix.kernel.cap_config import load_secret_hosts  # noqa: E402


@pytest.fixture
def http():
    made = []

    def make(redirect_to: str | None = None) -> tuple[int, _Hits]:
        hits = _Hits()
        made.append(_server(hits, redirect_to))
        return made[-1].server_address[1], hits

    yield make
    for s in made:
        s.shutdown()


def _vault(tmp_path: Path, secret: str, hosts: list[str] | None) -> None:
    keys = tmp_path / "home" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    text = f'API_KEY = "{secret}"\n' if hosts is None else \
        f'[API_KEY]\nvalue = "{secret}"\nhosts = {json.dumps(hosts)}\n'
    (keys / "secrets.toml").write_text(text)
    (keys / "secrets.toml").chmod(0o600)


def _fetch_secret(tmp_path: Path, url: str, **extra: Any):
    async def body(w: World):
        rec = await w.spawn(["network: 127.0.0.1, localhost", "secret: API_KEY"], name="fetcher")
        toks = list(w.k.caps.held[rec.agent_id])
        res = await w.calls(rec, [tool("web_fetch", url=url, secret="API_KEY", **extra)])
        return res, sum(w.k.caps.ledger.used(t.id) for t in toks), \
            w.events("capability.denied", rec.agent_id), w.events("tool.invoked", rec.agent_id)
    return run(tmp_path, body)


def test_secret_sent_to_a_granted_host_it_is_not_bound_to_is_refused_before_any_connection(tmp_path, http):
    secret = "sk-bound-" + "ab12" * 4
    _vault(tmp_path, secret, ["localhost"])
    port, hits = http()
    res, used, denied, invoked = _fetch_secret(tmp_path, f"http://127.0.0.1:{port}/x", secret_as="query",
                                               secret_name="key")
    assert res[0]["error"] == "capability_denied" and res[0]["data"]["reason"] == "secret_host", res
    assert "localhost" in res[0]["message"] and secret not in json.dumps(res)
    assert hits.paths == [] and used == 0 and invoked == [] and len(denied) == 1  # nothing moved


def test_redirect_to_another_granted_host_never_carries_the_secret(tmp_path, http):
    secret = "sk-bound-" + "cd34" * 4
    _vault(tmp_path, secret, ["127.0.0.1"])
    other_port, other_hits = http()
    port, hits = http(redirect_to=f"http://localhost:{other_port}/stolen")
    res, _used, _denied, _invoked = _fetch_secret(tmp_path, f"http://127.0.0.1:{port}/x")
    assert res[0]["error"] == "capability_denied" and res[0]["data"]["reason"] == "secret_host", res
    assert hits.paths == ["/x"] and other_hits.paths == []  # the hop to localhost was never made
    assert secret not in json.dumps(res)


def test_secret_declared_without_hosts_is_refused_with_what_to_add(tmp_path, http):
    secret = "sk-unbound-" + "ef56" * 4
    _vault(tmp_path, secret, None)  # the old form: NAME = "value", no hosts
    port, hits = http()
    res, used, denied, invoked = _fetch_secret(tmp_path, f"http://127.0.0.1:{port}/x")
    assert res[0]["error"] == "capability_denied" and res[0]["data"]["reason"] == "secret_unbound", res
    assert 'hosts = ["127.0.0.1"]' in res[0]["message"] and "[secrets.API_KEY]" in res[0]["message"]
    assert hits.paths == [] and used == 0 and invoked == [] and len(denied) == 1


def test_secret_bound_to_its_host_is_sent_there(tmp_path, http):
    secret = "sk-bound-" + "0a1b" * 4
    _vault(tmp_path, secret, ["127.0.0.1"])
    port, hits = http()
    res, used, _denied, _invoked = _fetch_secret(tmp_path, f"http://127.0.0.1:{port}/x")
    assert res[0]["ok"]["status"] == 200, res
    assert json.loads(res[0]["ok"]["content"])["auth"] == "Bearer [secret:API_KEY]" and hits.paths == ["/x"]


def test_secret_bound_to_every_host_is_refused_at_load(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[secrets.API_KEY]\nenv = "X"\nhosts = ["*"]\n')
    with pytest.raises(InvalidRequest, match="name the hosts"):
        load_secret_hosts(home)
    (home / "config.toml").write_text('[secrets.API_KEY]\nenv = "X"\nhosts = ["api.example.com", "*.x.com"]\n')
    assert [str(p) for p in load_secret_hosts(home)["API_KEY"]] == ["api.example.com", "*.x.com"]


_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@given(labels=st.lists(_label, min_size=1, max_size=4), prefix=_label)
@settings(max_examples=200, deadline=None)
def test_secret_reaches_no_host_its_declaration_does_not_name(labels, prefix):
    """Bound to ``api.example.com`` and ``*.svc.example.com``: every other host — suffix and
    prefix tricks included — is refused; the named ones pass."""
    from agentix.core.errors import CapabilityDenied
    from agentix.core.grants import check_secret_host, parse_secret_hosts

    hosts = parse_secret_hosts("K", ["api.example.com", "*.svc.example.com"])
    host = ".".join(labels)
    for h in (host, f"{host}.api.example.com", f"api.example.com.{host}", f"{prefix}api.example.com",
              f"{host}svc.example.com"):
        ok = h == "api.example.com" or h.endswith(".svc.example.com")
        if ok:
            check_secret_host("K", hosts, h)
        else:
            with pytest.raises(CapabilityDenied):
                check_secret_host("K", hosts, h)
    check_secret_host("K", hosts, f"{host}.svc.example.com")  # a subdomain of the wildcard passes
    with pytest.raises(CapabilityDenied, match="declares no hosts"):
        check_secret_host("K", (), host)
