"""CallGate: the whole capability check of one call, in order; refusals charge nothing."""

from __future__ import annotations

import pytest

from agentix.core.caps import Authority, generate_root_key
from agentix.core.errors import CapabilityDenied, CapabilityExpired, CapabilityRevoked, TaintViolation
from agentix.core.gate import CallGate
from agentix.core.ledger import TokenLedger
from agentix.core.taint import TaintPolicy, TaintSet, parse_rules

NOW = 1_800_000_000.0
WEB = TaintSet().add("fetched_url", "https://evil.example/")


@pytest.fixture
def setup():
    auth = Authority(generate_root_key())
    led = TokenLedger()
    return auth, led, CallGate(auth, led)


def test_s12_new_agent_holds_nothing_any_tool_call_is_denied(setup):
    auth, led, gate = setup
    empty = auth.mint("new", [], now=NOW, max_invocations=5)
    for tool, args in [("summarise", {}), ("file_read", {"path": "/etc/passwd"}),
                       ("web_fetch", {"url": "https://example.com/"}), ("exec", {"argv": ["ls"]})]:
        with pytest.raises(CapabilityDenied) as info:
            gate.check(tokens=[empty.serialized], holder="new", tool=tool, args=args, now=NOW)
        assert info.value.data["reason"] == "not_granted"
        with pytest.raises(CapabilityDenied):
            gate.check(tokens=[], holder="new", tool=tool, args=args, now=NOW)
    assert led.used(empty.id) == 0


def test_allowed_call_charges_exactly_one(setup):
    auth, led, gate = setup
    t = auth.mint("a", ["file_read: /data/*"], now=NOW, max_invocations=3)
    res = gate.check(tokens=[t.serialized], holder="a", tool="file_read", args={"path": "/data/x"}, now=NOW)
    assert res.token.id == t.id and led.used(t.id) == 1
    gate.check(tokens=[t.serialized], holder="a", tool="file_read", args={"path": "/data/x"}, now=NOW,
               charge=False)
    assert led.used(t.id) == 1


def test_relative_path_resolves_in_the_workspace(setup):
    auth, led, gate = setup
    t = auth.mint("a", ["file_write: /ws/a/*"], now=NOW)
    gate.check(tokens=[t.serialized], holder="a", tool="file_write", args={"path": "notes.md"}, now=NOW,
               workspace="/ws/a")
    with pytest.raises(CapabilityDenied):
        gate.check(tokens=[t.serialized], holder="a", tool="file_write", args={"path": "notes.md"}, now=NOW,
                   workspace="/ws/b")


def test_picks_the_token_that_covers_the_call(setup):
    auth, led, gate = setup
    t1 = auth.mint("a", ["file_read: /data/*"], now=NOW, max_invocations=9)
    t2 = auth.mint("a", ["network: *.example.com"], now=NOW, max_invocations=9)
    res = gate.check(tokens=[t1.serialized, t2.serialized], holder="a", tool="web_fetch",
                     args={"url": "https://api.example.com/x"}, now=NOW)
    assert res.token.id == t2.id and led.used(t1.id) == 0 and led.used(t2.id) == 1


def test_taint_refusal_charges_nothing(setup):
    auth, led, gate = setup
    t = auth.mint("a", ["exec: ls"], now=NOW, max_invocations=3)
    with pytest.raises(TaintViolation) as info:
        gate.check(tokens=[t.serialized], holder="a", tool="exec", args={"argv": ["ls"]}, now=NOW, taint=WEB)
    assert info.value.data == {"tool": "exec", "source": "fetched_url", "origin": "https://evil.example/"}
    assert led.used(t.id) == 0


def test_taint_write_outside_workspace_only(setup):
    auth, led, gate = setup
    t = auth.mint("a", ["file_write: /*"], now=NOW)
    gate.check(tokens=[t.serialized], holder="a", tool="file_write", args={"path": "/ws/a/x"}, now=NOW,
               workspace="/ws/a", taint=WEB)
    with pytest.raises(TaintViolation):
        gate.check(tokens=[t.serialized], holder="a", tool="file_write", args={"path": "/etc/x"}, now=NOW,
                   workspace="/ws/a", taint=WEB)


def test_ask_is_returned_for_approval(setup):
    auth, led, _ = setup
    gate = CallGate(auth, led, TaintPolicy(parse_rules([{"tool": "exec", "action": "ask"}])))
    t = auth.mint("a", ["exec: ls"], now=NOW)
    res = gate.check(tokens=[t.serialized], holder="a", tool="exec", args={"argv": ["ls"]}, now=NOW, taint=WEB)
    assert res.needs_approval


def test_wrong_holder_expired_and_revoked(setup):
    auth, led, gate = setup
    t = auth.mint("a", ["tool: *"], now=NOW, expires_at=NOW + 10, max_invocations=5)
    with pytest.raises(CapabilityDenied) as info:
        gate.check(tokens=[t.serialized], holder="b", tool="x", args={}, now=NOW)
    assert info.value.data["reason"] == "wrong_holder"
    with pytest.raises(CapabilityExpired):
        gate.check(tokens=[t.serialized], holder="a", tool="x", args={}, now=NOW + 10)
    led.revoke(t.id)
    with pytest.raises(CapabilityRevoked):
        gate.check(tokens=[t.serialized], holder="a", tool="x", args={}, now=NOW)
    assert led.used(t.id) == 0


def test_read_many_needs_one_readable_path(setup):
    auth, led, gate = setup
    t = auth.mint("a", ["file_read: /data/*"], now=NOW)
    gate.check(tokens=[t.serialized], holder="a", tool="file_read_many",
               args={"paths": ["/etc/shadow", "/data/a", "/data/b"]}, now=NOW)
    with pytest.raises(CapabilityDenied):
        gate.check(tokens=[t.serialized], holder="a", tool="file_read_many", args={"paths": ["/etc/shadow"]},
                   now=NOW)


def test_s18_a_failing_call_still_uses_one_invocation(setup, tmp_path):
    from agentix.core.errors import ToolError
    from agentix.tools import fs

    auth, led, gate = setup
    t = auth.mint("a", [f"file_read: {tmp_path}/*"], now=NOW, max_invocations=2)
    args = {"path": f"{tmp_path}/missing.txt"}
    res = gate.check(tokens=[t.serialized], holder="a", tool="file_read", args=args, now=NOW)
    with pytest.raises(ToolError):
        fs.file_read(*fs.locate(res.token, "file_read", args["path"]))
    assert led.used(t.id) == 1
