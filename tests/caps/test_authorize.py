"""core.authorize: the one decision, as a pure function. Each refusal charges nothing."""

from __future__ import annotations

import pytest

from agentix.core.authorize import AuthRequest, authorize
from agentix.core.caps import Authority, generate_root_key
from agentix.core.errors import (
    BudgetExceeded,
    CapabilityDenied,
    CapabilityExhausted,
    CapabilityExpired,
    CapabilityRevoked,
    HandoffEscalationDenied,
)
from agentix.core.grants import Request, parse_grant
from agentix.core.ledger import MemoryIssuedTokens, TokenLedger

NOW = 1_800_000_000.0


@pytest.fixture
def env():
    auth = Authority(generate_root_key())
    led = TokenLedger()
    issued = MemoryIssuedTokens()

    def mint(holder, grants, **kw):
        t = auth.mint(holder, grants, now=NOW, **kw)
        issued.issue(t)
        return t

    def decide(tokens, holder, *resources, now=NOW, **kw):
        return authorize(tokens, AuthRequest(holder, tuple(resources), **kw), ledger=led, issued=issued, now=now)

    return auth, led, issued, mint, decide


R = Request


def test_new_agent_holds_nothing(env):
    _a, led, _i, mint, decide = env
    empty = mint("a", [])
    for r in (R("tool", "echo"), R("file_read", "/etc/passwd"), R("network", "example.com"), R("exec", "ls"),
              R("model", "openai:gpt-4o-mini")):
        with pytest.raises(CapabilityDenied) as info:
            decide([empty], "a", r)
        assert info.value.data["reason"] == "not_granted" and info.value.data["request"] == str(r)


def test_each_resource_names_its_own_token_and_each_token_is_charged_once(env):
    _a, led, _i, mint, decide = env
    t1 = mint("a", ["file_read: /data/*"], max_invocations=5)
    t2 = mint("a", ["network: example.com"], max_invocations=5)
    auth = decide([t1, t2], "a", R("file_read", "/data/x"), R("file_read", "/data/y"), R("network", "example.com"))
    assert [c.token.id for c in auth.covered] == [t1.id, t1.id, t2.id]
    assert dict(auth.charges) == {t1.id: 1, t2.id: 1}
    assert led.used(t1.id) == 0  # pure: nothing charged until committed
    led.commit(auth)
    assert led.used(t1.id) == 1 and led.used(t2.id) == 1


def test_per_resource_charges_one_per_resource_and_stops_at_the_limit(env):
    _a, led, _i, mint, decide = env
    t = mint("a", ["message_send: *"], max_invocations=2)
    auth = decide([t], "a", R("message_send", "x"), R("message_send", "y"), R("message_send", "z"),
                  partial=True, charge="per_resource")
    assert len(auth.covered) == 2 and auth.refused[0].error.code == "capability_exhausted"
    assert dict(auth.charges) == {t.id: 2}


def test_partial_reports_the_refused_and_keeps_the_others(env):
    _a, _l, _i, mint, decide = env
    t = mint("a", ["file_read: /data/*"])
    auth = decide([t], "a", R("file_read", "/data/x"), R("file_read", "/etc/passwd"), partial=True)
    assert auth.allows(R("file_read", "/data/x")) and not auth.allows(R("file_read", "/etc/passwd"))
    with pytest.raises(CapabilityDenied):
        auth.token_for(R("file_read", "/etc/passwd"))
    with pytest.raises(CapabilityDenied, match="not part of this call"):
        auth.token_for(R("file_read", "/data/other"))
    with pytest.raises(CapabilityDenied):  # partial, but nothing covered: refused
        decide([t], "a", R("file_read", "/etc/passwd"), partial=True)


@pytest.mark.parametrize("dead", ["revoked", "expired", "exhausted", "wrong_holder", "not_issued"])
def test_a_dead_token_covers_nothing_and_its_error_is_reported(env, dead):
    auth_, led, issued, mint, decide = env
    live = mint("a", ["file_read: /a/*"])
    kw = {"max_invocations": 0} if dead == "exhausted" else {"expires_at": NOW + 10} if dead == "expired" else {}
    t = mint("b" if dead == "wrong_holder" else "a", ["file_read: /b/*"], **kw)
    if dead == "not_issued":  # bytes with a block appended offline: an id the kernel never issued
        t = auth_.attenuate(t, ["file_read: /b/*"], now=NOW, holder="a")
    if dead == "revoked":
        led.revoke(t.id)
    now = NOW + 11 if dead == "expired" else NOW
    err = {"revoked": CapabilityRevoked, "expired": CapabilityExpired, "exhausted": CapabilityExhausted,
           "wrong_holder": CapabilityDenied, "not_issued": CapabilityDenied}[dead]
    with pytest.raises(err):
        decide([live, t], "a", R("file_read", "/a/x"), R("file_read", "/b/x"), now=now)
    auth = decide([live, t], "a", R("file_read", "/a/x"), R("file_read", "/b/x"), now=now, partial=True)
    assert [c.token.id for c in auth.covered] == [live.id]
    assert isinstance(auth.refused[0].error, err)


def test_revocation_of_an_ancestor_kills_the_derived_token(env):
    auth_, led, issued, mint, decide = env
    root = mint("a", ["tool: *"])
    kid = auth_.attenuate(root, ["tool: echo"], now=NOW, holder="b")
    issued.issue(kid)
    decide([kid], "b", R("tool", "echo"))
    led.revoke(root.id)
    with pytest.raises(CapabilityRevoked):
        decide([kid], "b", R("tool", "echo"))


def test_kernel_state_is_never_a_resource(env):
    _a, _l, _i, mint, decide = env
    t = mint("a", ["file_read: /*", "file_write: /*"])
    for path in ("/home/u/.agentix", "/home/u/.agentix/keys/root.key"):
        for kind in ("file_read", "file_write"):
            with pytest.raises(CapabilityDenied) as info:
                decide([t], "a", R(kind, path), denied_prefixes=("/home/u/.agentix",))
            assert info.value.data["reason"] == "kernel_state"
    decide([t], "a", R("file_read", "/home/u/.agentix-other/x"), denied_prefixes=("/home/u/.agentix",))


def test_prior_decision_is_not_charged_again(env):
    _a, led, _i, mint, decide = env
    t = mint("a", ["network: a.com", "network: b.com"], max_invocations=1)
    first = decide([t], "a", R("network", "a.com"))
    led.commit(first)
    hop = authorize([t], AuthRequest("a", (R("network", "b.com"),)), ledger=led, issued=_i, now=NOW, prior=first)
    assert hop.charges == ()
    led.revoke(t.id)
    with pytest.raises(CapabilityRevoked):  # the hop still checks revocation
        authorize([t], AuthRequest("a", (R("network", "b.com"),)), ledger=led, issued=_i, now=NOW, prior=first)


def test_delegated_grants_must_be_covered(env):
    _a, _l, _i, mint, decide = env
    t = mint("a", ["file_read: /data/*"])
    decide([t], "a", parse_grant("file_read: /data/sub/*")[0])
    with pytest.raises(HandoffEscalationDenied, match="parent lacks"):
        decide([t], "a", parse_grant("file_read: /*")[0])


def test_max_tool_calls_refuses_before_anything(env):
    _a, led, _i, mint, decide = env
    t = mint("a", ["tool: echo"], max_invocations=3)
    with pytest.raises(BudgetExceeded):
        decide([t], "a", R("tool", "echo"), counts_tool_call=True, tool_calls_left=0)
    assert decide([t], "a", R("tool", "echo"), counts_tool_call=True, tool_calls_left=1).counts_tool_call


def test_commit_refuses_if_the_world_moved(env):
    _a, led, _i, mint, decide = env
    t = mint("a", ["tool: echo"], max_invocations=1)
    a1 = decide([t], "a", R("tool", "echo"))
    a2 = decide([t], "a", R("tool", "echo"))
    led.commit(a1)
    with pytest.raises(CapabilityExhausted):
        led.commit(a2)
    a3 = decide([mint("a", ["tool: echo"])], "a", R("tool", "echo"))
    led.revoke(a3.tokens[0].id)
    with pytest.raises(CapabilityRevoked):
        led.commit(a3)
    assert led.used(t.id) == 1


def test_model_grants_glob_over_provider_and_model(env):
    _a, _l, _i, mint, decide = env
    t = mint("a", ["model: local:*", "model: openai:gpt-4o-mini"])
    decide([t], "a", R("model", "local:gemma3"))
    decide([t], "a", R("model", "openai:gpt-4o-mini"))
    for m in ("openai:gpt-4o", "anthropic:claude", "localx:gemma"):
        with pytest.raises(CapabilityDenied):
            decide([t], "a", R("model", m))
