"""Token authority and ledger: SCENARIOS 12, 18-22 and 25 at the core level."""

from __future__ import annotations

import threading

import pytest

from agentix.core.caps import Authority, generate_root_key
from agentix.core.errors import (
    CapabilityDenied,
    CapabilityExhausted,
    CapabilityExpired,
    CapabilityRevoked,
    HandoffEscalationDenied,
    InvalidRequest,
)
from agentix.core.grants import Request
from agentix.core.ledger import TokenLedger

NOW = 1_800_000_000.0


@pytest.fixture
def auth():
    return Authority(generate_root_key())


def test_s12_new_agent_holds_nothing(auth):
    tok = auth.mint("newbie", [], now=NOW)
    for r in [Request("tool", "anything"), Request("file_read", "/tmp/x"), Request("network", "example.com"),
              Request("exec", "ls"), Request("spawn_child", "a"), Request("message_send", "b")]:
        with pytest.raises(CapabilityDenied) as info:
            auth.authorize(tok, [r])
        assert info.value.data["reason"] == "not_granted"


def test_verify_round_trip_with_a_fresh_authority_on_the_same_key():
    key = generate_root_key()
    tok = Authority(key).mint("a", ["file_read: /data/*"], now=NOW, expires_at=NOW + 60, max_invocations=3)
    again = Authority(key).verify(tok.serialized, "a", NOW + 59)  # no cache: signature + Datalog
    assert again.id == tok.id and again.grants.strings() == ["file_read: /data/*"]
    assert again.max_invocations == 3 and again.expires_at == int(NOW + 60)


def test_old_tokens_still_verify(auth):
    """The seed bug: verifying with a fresh timestamp/key so anything older than a moment fails."""
    tok = auth.mint("a", ["tool: *"], now=NOW)
    assert auth.verify(tok.serialized, "a", NOW + 86400 * 30).id == tok.id


def test_s19_token_presented_by_another_agent_is_refused(auth):
    tok = auth.mint("alice", ["tool: *"], now=NOW)
    with pytest.raises(CapabilityDenied) as info:
        auth.verify(tok.serialized, "mallory", NOW)
    assert info.value.data["reason"] == "wrong_holder"


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-1],
    lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:],
    lambda b: b[:40] + bytes([b[40] ^ 0x10]) + b[41:],
    lambda b: b"",
    lambda b: b"\x00" * 200,
])
def test_s19_forged_or_damaged_token_is_refused(mutate):
    key = generate_root_key()
    tok = Authority(key).mint("alice", ["tool: *"], now=NOW)
    fresh = Authority(key)
    with pytest.raises(CapabilityDenied) as info:
        fresh.verify(mutate(tok.serialized), "alice", NOW)
    assert info.value.data["reason"] == "invalid_token"


def test_s19_token_signed_by_another_key_is_refused(auth):
    other = Authority(generate_root_key())
    tok = other.mint("alice", ["tool: *"], now=NOW)
    with pytest.raises(CapabilityDenied) as info:
        auth.verify(tok.serialized, "alice", NOW)
    assert info.value.data["reason"] == "invalid_token"


def test_attacker_appended_block_cannot_widen():
    """Offline attenuation by a holder can only add restrictions: rights are the intersection."""
    import biscuit_auth as bi
    import base64, orjson

    key = generate_root_key()
    auth = Authority(key)
    tok = auth.mint("alice", ["file_read: /data/*"], now=NOW)
    payload = base64.urlsafe_b64encode(orjson.dumps(
        {"v": 1, "holder": "alice", "grants": ["file_read: /*", "exec: *"], "exp": None, "max": None, "iat": NOW}
    )).decode()
    forged = tok._biscuit.append(bi.BlockBuilder("agentix_block({p});", {"p": payload}))
    v = Authority(key).verify(bytes(forged.to_bytes()), "alice", NOW)
    assert not v.permits(Request("file_read", "/etc/shadow"))
    assert not v.permits(Request("exec", "sh"))
    assert v.permits(Request("file_read", "/data/x"))


def test_expiry_uses_the_passed_clock_and_is_refused_after(auth):
    tok = auth.mint("a", ["tool: *"], now=NOW, expires_at=NOW + 10)
    auth.verify(tok.serialized, "a", NOW + 9.5)
    with pytest.raises(CapabilityExpired):
        auth.verify(tok.serialized, "a", NOW + 10)
    auth.verify(tok.serialized, "a", NOW + 5)  # the clock is the caller's, not the wall clock


def test_expiry_uncached_matches_cached():
    key = generate_root_key()
    tok = Authority(key).mint("a", ["tool: *"], now=NOW, expires_at=NOW + 10)
    for t, ok in [(NOW + 9.999, True), (NOW + 10, False), (NOW + 11, False)]:
        fresh = Authority(key)
        if ok:
            fresh.verify(tok.serialized, "a", t)
            fresh.verify(tok.serialized, "a", t)
        else:
            with pytest.raises(CapabilityExpired):
                fresh.verify(tok.serialized, "a", t)


def test_s18_max_invocations_allows_exactly_n_and_a_check_uses_none(auth):
    tok = auth.mint("a", ["tool: *"], now=NOW, max_invocations=3)
    led = TokenLedger()
    for _ in range(5):
        led.check(tok)  # a pure check charges nothing
    for _ in range(3):
        led.charge(tok)
    with pytest.raises(CapabilityExhausted):
        led.charge(tok)
    assert led.used(tok.id) == 3 and led.remaining(tok) == 0


def test_s18_twenty_concurrent_calls_against_ten_give_ten(auth):
    tok = auth.mint("a", ["tool: *"], now=NOW, max_invocations=10)
    led = TokenLedger(threading.Lock())
    ok, refused = [], []
    barrier = threading.Barrier(20)

    def call():
        barrier.wait()
        try:
            led.charge(tok)
            ok.append(1)
        except CapabilityExhausted:
            refused.append(1)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 10 and len(refused) == 10 and led.used(tok.id) == 10


def test_delegated_child_shares_the_parents_count(auth):
    """The seed bug: a delegated child got a fresh invocation count."""
    parent = auth.mint("p", ["tool: *"], now=NOW, max_invocations=5)
    led = TokenLedger()
    led.charge(parent)
    led.charge(parent)
    child = auth.attenuate(parent, ["tool: x"], now=NOW, holder="c", max_invocations=3,
                           remaining=led.remaining(parent))
    for _ in range(3):
        led.charge(child)
    assert led.remaining(parent) == 0
    with pytest.raises(CapabilityExhausted):
        led.charge(parent)
    with pytest.raises(CapabilityExhausted):
        led.charge(child)


def test_refused_charge_charges_nothing(auth):
    parent = auth.mint("p", ["tool: *"], now=NOW, max_invocations=1)
    child = auth.attenuate(parent, ["tool: *"], now=NOW, max_invocations=1)
    led = TokenLedger()
    led.charge(parent)
    before = led.snapshot()
    with pytest.raises(CapabilityExhausted):
        led.charge(child)
    assert led.snapshot() == before


def test_s20_revocation_is_final_and_cascades(auth):
    root = auth.mint("p", ["tool: *"], now=NOW)
    child = auth.attenuate(root, ["tool: *"], now=NOW, holder="c")
    grandchild = auth.attenuate(child, ["tool: x"], now=NOW, holder="g")
    sibling = auth.mint("p", ["tool: *"], now=NOW)
    led = TokenLedger()
    led.revoke(child.id)
    for t in (child, grandchild):
        with pytest.raises(CapabilityRevoked):
            led.charge(t)
    led.charge(root)
    led.charge(sibling)
    assert led.used(child.id) == 0 and led.used(grandchild.id) == 0


def test_s20_stopping_an_agent_revokes_its_tokens(auth):
    led = TokenLedger()
    a1 = auth.mint("worker", ["tool: *"], now=NOW)
    a2 = auth.mint("worker", ["tool: y"], now=NOW)
    other = auth.mint("other", ["tool: *"], now=NOW)
    for t in (a1, a2, other):
        led.register(t)
    assert sorted(led.revoke_holder("worker")) == sorted([a1.id, a2.id])
    for t in (a1, a2):
        with pytest.raises(CapabilityRevoked):
            led.charge(t)
    led.charge(other)


def test_ledger_snapshot_restores_revocations_and_counts(auth):
    tok = auth.mint("a", ["tool: *"], now=NOW, max_invocations=2)
    led = TokenLedger()
    led.charge(tok)
    led.revoke("deadbeef")
    again = TokenLedger.restore(led.snapshot())
    assert again.used(tok.id) == 1 and "deadbeef" in again.revoked_ids()
    again.charge(tok)
    with pytest.raises(CapabilityExhausted):
        again.charge(tok)


def test_s21_child_cannot_get_what_the_parent_lacks(auth):
    parent = auth.mint("p", ["file_write: /data/out/*"], now=NOW)
    with pytest.raises(HandoffEscalationDenied) as info:
        auth.delegate([parent], ["file_write: /etc/*"], holder="c", now=NOW)
    assert info.value.message == "parent lacks file_write: /etc/*"


def test_s21_no_more_invocations_than_left_and_no_later_expiry(auth):
    parent = auth.mint("p", ["tool: *"], now=NOW, expires_at=NOW + 100, max_invocations=4)
    with pytest.raises(HandoffEscalationDenied) as info:
        auth.attenuate(parent, ["tool: *"], now=NOW, max_invocations=5, remaining=4)
    assert info.value.data["reason"] == "more_invocations"
    with pytest.raises(HandoffEscalationDenied) as info:
        auth.attenuate(parent, ["tool: *"], now=NOW, expires_at=NOW + 101)
    assert info.value.data["reason"] == "later_expiry"
    child = auth.attenuate(parent, ["tool: *"], now=NOW)
    assert child.expires_at == parent.expires_at


@pytest.mark.parametrize("wider", [["tool: other"], ["tool: *"], ["file_read: /data/*"], ["file_read: /*"],
                                   ["network: *"], ["exec: ls"]])
def test_s22_downscoping_to_another_tool_or_wider_scope_is_refused(auth, wider):
    tok = auth.mint("a", ["tool: search", "file_read: /data/a/*"], now=NOW)
    with pytest.raises(HandoffEscalationDenied):
        auth.attenuate(tok, wider, now=NOW, holder="b")


def test_s25_agent_cannot_raise_its_own_permissions(auth):
    tok = auth.mint("a", ["file_read: /ws/*"], now=NOW)
    with pytest.raises(HandoffEscalationDenied):
        auth.attenuate(tok, ["preset: unrestricted"], now=NOW)
    with pytest.raises(HandoffEscalationDenied):
        auth.delegate([tok], ["file_write: /ws/*"], holder="a", now=NOW)


def test_delegate_splits_child_grants_over_parent_tokens(auth):
    t1 = auth.mint("p", ["file_read: /data/*"], now=NOW)
    t2 = auth.mint("p", ["network: *.example.com"], now=NOW, max_invocations=7)
    kids = auth.delegate([t1, t2], ["file_read: /data/in/*", "network: api.example.com"], holder="c",
                         now=NOW, remaining={t2.id: 5})
    assert len(kids) == 2
    assert {k.parent_id for k in kids} == {t1.id, t2.id}
    net = next(k for k in kids if k.parent_id == t2.id)
    assert net.max_invocations == 5 and net.holder == "c"
    assert net.permits(Request.make("network", "api.example.com", "93.184.216.34"))
    assert not net.permits(Request.make("network", "www.example.com", "93.184.216.34"))


def test_derived_token_is_the_intersection_for_private_addresses(auth):
    parent = auth.mint("p", ["network: *"], now=NOW)
    child = auth.attenuate(parent, ["network: intranet.example"], now=NOW)
    assert child.permits(Request.make("network", "intranet.example", "93.184.216.34"))
    assert not child.permits(Request.make("network", "intranet.example", "10.0.0.1"))


def test_bad_root_key_is_an_invalid_request():
    with pytest.raises(InvalidRequest):
        Authority(b"short")


def test_describe_holds_no_key_material(auth):
    tok = auth.mint("a", ["tool: *"], now=NOW)
    d = tok.describe()
    assert set(d) == {"id", "chain", "holder", "grants", "expires_at", "max_invocations"}
    assert "serialized" not in repr(tok)


def test_cache_is_bounded_and_eviction_only_costs_a_reverify():
    key = generate_root_key()
    auth = Authority(key, cache_size=4)
    toks = [auth.mint(f"h{i}", ["tool: *"], now=NOW) for i in range(10)]
    assert len(auth._cache) <= 4
    for i, t in enumerate(toks):
        assert auth.verify(t.serialized, f"h{i}", NOW).id == t.id
