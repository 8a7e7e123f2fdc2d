"""core.decision_cache: a remembered decision is always the decision ``authorize`` makes now.

A Hypothesis state machine interleaves mints, attenuations (issued or not, to the same or
another holder), revocations, clock steps (forward and back), invocation limits, tool-call
budgets and calls — each call repeated at will so that the memo is hit — and asserts after
every call that the cached answer (or refusal) equals the uncached one, and that committing
it moves the ledger the same way. Examples name the attacks: a token revoked between two
calls, a token that expires between two calls, a clock stepped back, a budget used up.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule

from agentix.core.authorize import AuthRequest, authorize
from agentix.core.caps import Authority, generate_root_key
from agentix.core.decision_cache import DecisionCache
from agentix.core.errors import AgentixError, BudgetExceeded, CapabilityExpired, CapabilityRevoked
from agentix.core.grants import Request, parse_grant
from agentix.core.ledger import MemoryIssuedTokens, TokenLedger

NOW = 1_800_000_000.0
KEY = generate_root_key()

_GRANTS = ["tool: echo", "tool: echo", "tool: echo", "file_read: /data/*", "tool: *", "file_read: /data/*", "file_read: /data/a/*", "file_write: /data/*",
           "network: example.com", "network: *.example.com"]
_REQUESTS = [Request("tool", "echo"), Request("tool", "echo"), Request("tool", "echo"),
             Request("file_read", "/data/a/x"), Request("tool", "other"), Request("file_read", "/data/a/x"),
             Request("file_read", "/data/b"), Request("file_read", "/etc/passwd"),
             Request("file_write", "/data/a/x"), Request("network", "example.com"),
             Request("network", "api.example.com")]
_HOLDERS = st.sampled_from(["alice", "alice", "alice", "bob"])
# mostly uncounted, unexpiring tokens and matching requests: the memo's cases, so it is hit
_LIMITS = st.one_of(st.none(), st.none(), st.none(), st.integers(0, 3))
_TTLS = st.one_of(st.none(), st.none(), st.integers(1, 30))


def _outcome(fn):
    """A decision as comparable data: what it covers with which token, what it refuses and
    why, its charges — or the refusal it raises."""
    try:
        a = fn()
    except AgentixError as err:
        return ("refused", type(err).__name__, err.code, err.message, sorted(err.data.items(), key=str))
    return ("allowed", a.holder, [(r, t.id) for r, t in a.covered],
            [(r, type(e).__name__, e.code, e.message) for r, e in a.refused],
            a.charges, [t.id for t in a.tokens], a.counts_tool_call)


class CacheMachine(RuleBasedStateMachine):
    tokens = Bundle("ctokens")

    def __init__(self):
        super().__init__()
        self.auth = Authority(KEY)
        self.led = TokenLedger()
        self.issued = MemoryIssuedTokens()
        self.cache = DecisionCache(size=8)  # small: the bound is exercised too
        self.now = NOW
        self.all: list = []
        self.last = None

    @rule(target=tokens, holder=_HOLDERS, gs=st.lists(st.sampled_from(_GRANTS), min_size=1, max_size=3),
          limit=_LIMITS, ttl=_TTLS)
    def mint(self, holder, gs, limit, ttl):
        exp = None if ttl is None else self.now + ttl
        t = self.auth.mint(holder, gs, now=self.now, expires_at=exp, max_invocations=limit)
        self.issued.issue(t)
        self.all.append(t)
        return t

    @rule(target=tokens, parent=tokens, holder=_HOLDERS, gs=st.lists(st.sampled_from(_GRANTS), max_size=2),
          limit=_LIMITS, issue=st.booleans())
    def attenuate(self, parent, holder, gs, limit, issue):
        grants = [g for s in gs for g in parse_grant(s)]
        try:
            t = self.auth.attenuate(parent, grants, now=self.now, holder=holder, max_invocations=limit)
        except AgentixError:
            return parent
        if issue:
            self.issued.issue(t)
        self.all.append(t)
        return t

    @rule(t=tokens)
    def issue_late(self, t):
        """An id issued after a decision that found it unissued (the record only grows)."""
        if self.issued.holder_of(t.id) is None:
            self.issued.issue(t)

    @rule(t=tokens)
    def revoke(self, t):
        self.led.revoke(t.id)

    @rule(dt=st.integers(-5, 20))
    def tick(self, dt):
        self.now += dt

    def _check(self, holder, shown, reqs, partial, per_resource, counts, left):
        req = AuthRequest(holder=holder, resources=tuple(reqs), partial=partial,
                          charge="per_resource" if per_resource else "per_token",
                          tool_calls_left=left, counts_tool_call=counts)
        plain = _outcome(lambda: authorize(shown, req, ledger=self.led, issued=self.issued, now=self.now))
        got = []
        cached = _outcome(lambda: got.append(self.cache.authorize(
            shown, req, ledger=self.led, issued=self.issued, now=self.now)) or got[0])
        assert cached == plain
        if got:  # the cached answer is committed, as the kernel does: the ledger moves alike
            self.led.commit(got[0])
        self.last = (holder, shown, reqs, partial, per_resource, counts, left)

    @rule(holder=_HOLDERS, data=st.data(), reqs=st.one_of(st.just([Request("tool", "echo")]), st.just([Request("file_read", "/data/a/x")]),
                         st.lists(st.sampled_from(_REQUESTS), min_size=1, max_size=3)),
          partial=st.booleans(), per_resource=st.booleans(), counts=st.booleans(),
          left=st.one_of(st.none(), st.integers(0, 2)))
    def call(self, holder, data, reqs, partial, per_resource, counts, left):
        if not self.all:
            return
        shown = data.draw(st.lists(st.sampled_from(self.all), min_size=1, max_size=3,
                                   unique_by=lambda t: t.id))
        self._check(holder, shown, reqs, partial, per_resource, counts, left)

    @rule(left=st.one_of(st.none(), st.integers(0, 2)))
    def call_again(self, left):
        """The same call once more (what the memo is for), whatever happened in between."""
        self._again(left)

    @rule(left=st.one_of(st.none(), st.integers(0, 2)))
    def call_again_too(self, left):
        self._again(left)

    def _again(self, left):
        if self.last is not None:
            holder, shown, reqs, partial, per_resource, counts, _ = self.last
            self._check(holder, shown, reqs, partial, per_resource, counts, left)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
def test_cache_machine_slow():
    run = CacheMachine.TestCase
    run.settings = settings(max_examples=3_000, stateful_step_count=50, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run().runTest()


# ------------------------------------------------------------------ the attacks, as examples

@pytest.fixture
def world():
    auth = Authority(KEY)
    led = TokenLedger()
    issued = MemoryIssuedTokens()
    cache = DecisionCache()

    def mint(holder, grants, **kw):
        t = auth.mint(holder, grants, now=NOW, **kw)
        issued.issue(t)
        return t

    def decide(tokens, holder, *resources, now=NOW, **kw):
        return cache.authorize(tokens, AuthRequest(holder, tuple(resources), **kw), ledger=led,
                               issued=issued, now=now)

    decide.issued = issued
    return auth, led, cache, mint, decide


def test_a_token_revoked_between_two_calls_is_refused_on_the_next(world):
    _a, led, cache, mint, decide = world
    t = mint("a", ["tool: echo"])
    first = decide([t], "a", Request("tool", "echo"))
    assert decide([t], "a", Request("tool", "echo")) is first and cache.hits == 1
    led.revoke(t.id)
    with pytest.raises(CapabilityRevoked):
        decide([t], "a", Request("tool", "echo"))
    assert led.used(t.id) == 0 and cache.statistics()["hits"] == 1


def test_revoking_an_ancestor_refuses_the_derived_token_on_the_next_call(world):
    auth, led, cache, mint, decide = world
    root = mint("a", ["tool: *"])
    child = auth.attenuate(root, parse_grant("tool: echo"), now=NOW, holder="a")
    decide.issued.issue(child)  # as the kernel issues a delegated token at spawn
    first = decide([child], "a", Request("tool", "echo"))
    assert decide([child], "a", Request("tool", "echo")) is first and cache.hits == 1
    led.revoke(root.id)
    with pytest.raises(CapabilityRevoked):
        decide([child], "a", Request("tool", "echo"))


def test_a_token_that_expires_between_two_calls_is_refused_at_its_expiry(world):
    _a, led, _c, mint, decide = world
    t = mint("a", ["tool: echo"], expires_at=NOW + 10)
    decide([t], "a", Request("tool", "echo"), now=NOW + 9)
    assert decide([t], "a", Request("tool", "echo"), now=NOW + 9.5).covered
    with pytest.raises(CapabilityExpired):
        decide([t], "a", Request("tool", "echo"), now=NOW + 10)


def test_a_clock_stepped_back_decides_again(world):
    _a, _l, cache, mint, decide = world
    t = mint("a", ["tool: echo"], expires_at=NOW + 10)
    old = mint("a", ["tool: echo"], expires_at=NOW + 1)
    decide([old, t], "a", Request("tool", "echo"), now=NOW + 5)  # old is expired: t covers
    again = decide([old, t], "a", Request("tool", "echo"), now=NOW)  # old is live again
    assert again.covered[0].token.id == old.id and cache.hits == 0


def test_a_counted_token_is_never_answered_from_memory(world):
    _a, led, cache, mint, decide = world
    t = mint("a", ["tool: echo"], max_invocations=2)
    for _ in range(2):
        led.commit(decide([t], "a", Request("tool", "echo")))
    with pytest.raises(AgentixError) as info:
        decide([t], "a", Request("tool", "echo"))
    assert info.value.code == "capability_exhausted" and cache.hits == 0


def test_the_tool_call_budget_is_checked_on_every_call(world):
    _a, _l, _c, mint, decide = world
    t = mint("a", ["tool: echo"])
    decide([t], "a", Request("tool", "echo"), tool_calls_left=1, counts_tool_call=True)
    with pytest.raises(BudgetExceeded):
        decide([t], "a", Request("tool", "echo"), tool_calls_left=0, counts_tool_call=True)


def test_another_holder_presenting_the_same_token_is_decided_for_itself(world):
    _a, _l, _c, mint, decide = world
    t = mint("a", ["tool: echo"])
    decide([t], "a", Request("tool", "echo"))
    with pytest.raises(AgentixError) as info:
        decide([t], "b", Request("tool", "echo"))
    assert info.value.data["reason"] == "wrong_holder"


def test_a_token_issued_after_a_decision_is_decided_again(world):
    auth, _l, cache, mint, decide = world
    root = mint("a", ["tool: *"])
    late = auth.attenuate(root, parse_grant("tool: echo"), now=NOW, holder="a")  # not issued yet
    first = decide([late, root], "a", Request("tool", "echo"))
    assert first.covered[0].token.id == root.id  # the unissued token is dead
    decide.issued.issue(late)
    assert decide([late, root], "a", Request("tool", "echo")).covered[0].token.id == late.id
    assert cache.hits == 0
