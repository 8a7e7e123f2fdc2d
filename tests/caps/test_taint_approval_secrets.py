"""Taint policy, approval binding and secret redaction: SCENARIOS 30-36 at the core level."""

from __future__ import annotations

import pytest

from agentix.core.approval import TRANSITIONS, Approval, action_hash, apply, consume
from agentix.core.caps import Authority, generate_root_key
from agentix.core.errors import ApprovalDenied, InvalidRequest, StateError, TaintViolation
from agentix.core.grants import Request
from agentix.core.taint import DEFAULT_RULES, TaintLabel, TaintPolicy, TaintSet, parse_rules, web_fetch_has_payload
from agentix.tools.secrets import inject, redact

NOW = 1_800_000_000.0
WEB = TaintSet().add("fetched_url", "https://evil.example/page")


# ------------------------------------------------------------------ taint


@pytest.mark.parametrize("tool, facts", [
    ("exec", {}),
    ("send_email", {}),
    ("post_tweet", {}),
    ("slack_post", {}),
    ("web_fetch", {"has_payload": True}),
    ("file_write", {"outside_workspace": True}),
    ("file_edit", {"outside_workspace": True}),
])
def test_s30_tainted_context_cannot_reach_protected_tools(tool, facts):
    with pytest.raises(TaintViolation) as info:
        TaintPolicy().check(tool, WEB, **facts)
    assert info.value.data == {"tool": tool, "source": "fetched_url", "origin": "https://evil.example/page"}


@pytest.mark.parametrize("tool, facts", [
    ("web_fetch", {}), ("file_write", {}), ("file_read", {}), ("summarise", {}),
])
def test_tainted_context_keeps_harmless_tools(tool, facts):
    assert TaintPolicy().decide(tool, WEB, **facts).action == "allow"


def test_clean_context_is_allowed_everything():
    assert TaintPolicy().decide("exec", TaintSet()).action == "allow"


def test_message_and_untrusted_file_taint_are_refused_by_exec_by_default():
    # untrusted_file is attached now ([taint] untrusted_paths, files tainted writers wrote:
    # kernel/file_taint.py), so the defaults treat it like web text
    msg = TaintSet().add("agent_message", "agent:helper")
    assert TaintPolicy().decide("exec", msg).action == "refuse"
    f = TaintSet().add("untrusted_file", "/data/inbox/x.eml")
    d = TaintPolicy().decide("exec", f)
    assert d.action == "refuse" and d.label == TaintLabel("untrusted_file", "/data/inbox/x.eml")
    assert TaintPolicy().decide("file_write", f, outside_workspace=True).action == "refuse"
    assert TaintPolicy().decide("file_write", f).action == "allow"  # its own workspace


def test_policy_can_ask_instead_of_refusing():
    pol = TaintPolicy(parse_rules([{"tool": "exec", "sources": ["fetched_url"], "action": "ask"}]))
    assert pol.decide("exec", WEB).action == "ask"
    assert pol.check("exec", WEB).action == "ask"


@pytest.mark.parametrize("bad", [[{"sources": ["x"]}], [{"tool": "exec", "sources": ["nope"]}],
                                 [{"tool": "exec", "action": "maybe"}], [{"tool": "exec", "when": "sometimes"}]])
def test_bad_policy_config_is_rejected(bad):
    with pytest.raises(InvalidRequest):
        parse_rules(bad)


def test_s31_labels_survive_being_passed_on():
    child_ctx = TaintSet().union(WEB)  # a child or a message inherits the sender's labels
    assert child_ctx.sources() == {"fetched_url"}
    assert TaintPolicy().decide("exec", child_ctx).action == "refuse"
    round_trip = TaintSet.from_data(child_ctx.to_data())
    assert round_trip == child_ctx


def test_s32_untaint_needs_the_capability_and_clears_only_that_label():
    auth = Authority(generate_root_key())
    holder = auth.mint("a", ["untaint: fetched_url"], now=NOW)
    other = auth.mint("b", ["tool: *"], now=NOW)
    assert holder.permits(Request("untaint", "fetched_url"))
    assert not holder.permits(Request("untaint", "agent_message"))
    assert not other.permits(Request("untaint", "fetched_url"))
    both = WEB.add("agent_message", "agent:x")
    assert both.without("fetched_url").sources() == {"agent_message"}


def test_web_fetch_payload_detection():
    assert not web_fetch_has_payload({"url": "https://x.com/a"})
    assert web_fetch_has_payload({"url": "https://x.com/a?q=secret"})
    assert web_fetch_has_payload({"url": "https://x.com/a", "body": "data"})


def test_default_rules_cover_the_issue_list():
    tools = {r.tool for r in DEFAULT_RULES}
    assert {"exec", "web_fetch", "file_write"} <= tools


# ------------------------------------------------------------------ approval


def test_approval_transition_table_is_the_whole_machine():
    assert TRANSITIONS == {("pending", "grant"): "granted", ("pending", "deny"): "denied",
                           ("pending", "expire"): "expired", ("granted", "consume"): "used"}


def test_s33_no_answer_before_the_timeout_is_a_deny():
    a = Approval.request("ap1", "agent1", "exec", {"argv": ["ls"]}, now=NOW, timeout=60)
    with pytest.raises(ApprovalDenied) as info:
        consume(a, "agent1", "exec", {"argv": ["ls"]}, now=NOW + 61)
    assert info.value.data["reason"] == "timeout"
    with pytest.raises(StateError):
        apply(a, "grant", now=NOW + 61)  # too late to grant
    assert apply(a, "expire", now=NOW + 61).state == "expired"


def test_s33_deny_returns_the_reason():
    a = apply(Approval.request("ap1", "a", "exec", {}, now=NOW), "deny", now=NOW, reason="not today", by="op")
    with pytest.raises(ApprovalDenied, match="not today"):
        consume(a, "a", "exec", {}, now=NOW)


def test_s34_approval_covers_exactly_the_action_shown():
    args = {"argv": ["rm", "-rf", "build"], "timeout": 5}
    a = apply(Approval.request("ap1", "a", "exec", args, now=NOW), "grant", now=NOW + 1)
    with pytest.raises(ApprovalDenied) as info:
        consume(a, "a", "exec", {"argv": ["rm", "-rf", "/"], "timeout": 5}, now=NOW + 2)
    assert info.value.data["reason"] == "action_mismatch"
    with pytest.raises(ApprovalDenied):
        consume(a, "b", "exec", args, now=NOW + 2)  # another agent
    used = consume(a, "a", "exec", {"timeout": 5, "argv": ["rm", "-rf", "build"]}, now=NOW + 2)  # key order irrelevant
    assert used.state == "used"
    with pytest.raises(ApprovalDenied, match="replay"):
        consume(used, "a", "exec", args, now=NOW + 3)


def test_action_hash_is_canonical():
    assert action_hash("a", "t", {"x": 1, "y": [1, 2]}) == action_hash("a", "t", {"y": [1, 2], "x": 1})
    assert action_hash("a", "t", {"x": 1}) != action_hash("a", "t", {"x": 1.5})
    assert action_hash("a", "t", {"x": "1"}) != action_hash("a", "t", {"x": 1})


def test_s35_pending_approval_round_trips_through_storage():
    a = Approval.request("ap1", "a", "exec", {"argv": ["ls"]}, now=NOW)
    b = Approval.from_data(a.to_data())
    assert b == a
    assert consume(apply(b, "grant", now=NOW + 5), "a", "exec", {"argv": ["ls"]}, now=NOW + 6).state == "used"


# ------------------------------------------------------------------ secrets


def test_s36_injected_secret_is_redacted_everywhere():
    secret = "sk-live-9f8e7d6c5b4a+/="
    inj = inject("https://api.example.com/v1?x=1", secret, "query", "key")
    bearer = inject("https://api.example.com/v1", secret, "bearer")
    record = {"url": inj.url, "headers": bearer.headers, "note": [f"echo {secret}", b"raw " + secret.encode()]}
    clean = redact(record, {"OPENAI": secret})
    assert secret not in repr(clean)
    assert "sk-live" not in repr(clean)
    assert clean["headers"]["Authorization"] == "Bearer [secret:OPENAI]"
    assert secret not in repr(inj) and secret not in repr(bearer)


def test_secret_header_injection_validates():
    assert inject("https://x", "v", "header", "X-Key").headers == {"X-Key": "v"}
    for bad in [("v\r\nX: y", "header", "X-Key"), ("v", "header", "Bad: Name"), ("v", "query", None),
                ("v", "cookie", "x")]:
        with pytest.raises(InvalidRequest):
            inject("https://x", *bad)


def test_taint_strings_round_trip_for_the_kernels_call_taint():
    ts = TaintSet.from_strings({"agent_message", "fetched_url:https://x.example/a?b=c:d"})
    assert {(lb.source, lb.origin) for lb in ts.labels} == {
        ("agent_message", ""), ("fetched_url", "https://x.example/a?b=c:d")}
    assert TaintSet.from_strings(ts.to_strings()) == ts
    with pytest.raises(InvalidRequest):
        TaintSet.from_strings({"bogus"})
