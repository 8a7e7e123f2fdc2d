"""Context summarisation never separates a tool call from its results (scenario 47, pure part)."""

from __future__ import annotations

import copy
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.context import (
    MIN_KEEP,
    SUMMARY_PREFIX,
    ContextPolicy,
    apply_summary,
    choose_span,
    estimate_tokens,
    fit_to_budget,
    needs_summary,
    summary_request,
    total_tokens,
)


def tool_turn(n: int, calls: int, size: int) -> list[dict]:
    ids = [f"c{n}_{i}" for i in range(calls)]
    out = [{"role": "assistant", "content": None,
            "tool_calls": [{"id": i, "type": "function", "function": {"name": "file_read",
                                                                      "arguments": '{"path": "a"}'}} for i in ids]}]
    out += [{"role": "tool", "tool_call_id": i, "content": "x" * size} for i in ids]
    return out


@st.composite
def histories(draw):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "the task"}]
    for n in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["text", "tools", "user"]))
        size = draw(st.integers(0, 3000))
        if kind == "tools":
            msgs += tool_turn(n, draw(st.integers(1, 4)), size)
        else:
            msgs.append({"role": "assistant" if kind == "text" else "user", "content": "y" * size})
    return msgs


def pairs_intact(msgs: list[dict]) -> bool:
    """Every tool result directly follows (within its block) the assistant call it answers, and
    every call has its result."""
    pending: set[str] = set()
    for m in msgs:
        if m["role"] == "tool":
            if m["tool_call_id"] not in pending:
                return False
            pending.discard(m["tool_call_id"])
        else:
            if pending:
                return False
            pending = {tc["id"] for tc in m.get("tool_calls") or ()}
    return not pending


@settings(max_examples=400, deadline=None)
@given(histories(), st.floats(0.05, 0.9))
def test_span_never_splits_tool_pairs(msgs, fraction):
    assert pairs_intact(msgs)
    span = choose_span(msgs, ContextPolicy(window=1000, fraction=fraction))
    if span is None:
        return
    start, end = span
    assert start == 2 and start < end < len(msgs)
    out = apply_summary(msgs, span, "summary")
    assert pairs_intact(out)
    assert out[:2] == msgs[:2] and out[-1] == msgs[-1]
    assert out[2]["content"].startswith(SUMMARY_PREFIX)
    assert len(out) == len(msgs) - (end - start) + 1


# the arithmetic the loop's window guarantee rests on (tests/agents/test_context_window.py runs
# it end to end in a real agent, at 20 examples because each starts a kernel and an agent)
@settings(max_examples=400, deadline=None)
@given(histories(), st.integers(0, 20_000), st.sampled_from([1.0, 1.6, 2.5]))
def test_fit_to_budget_fits_or_cuts_everything_it_may_and_touches_nothing_else(msgs, budget, scale):
    def est(m: dict) -> int:   # the loop's calibrated estimate: a provider counting more
        return math.ceil(scale * estimate_tokens(m))

    before = copy.deepcopy(msgs)
    out, n = fit_to_budget(msgs, budget, est)
    assert msgs == before                                  # the input is not changed
    assert [m["role"] for m in out] == [m["role"] for m in msgs] and pairs_intact(out)
    changed = [i for i, (a, b) in enumerate(zip(msgs, out)) if a != b]
    assert n == len(changed)
    for i in changed:
        a, b = msgs[i], out[i]
        assert a["role"] != "system" and a.get("tool_calls") == b.get("tool_calls")
        kept = b["content"].split("…[")[0]
        assert a["content"].startswith(kept) and len(kept) >= MIN_KEEP and "characters cut" in b["content"]
    if sum(est(m) for m in out) > budget:                 # could not fit: nothing more may be cut
        assert all(m["role"] == "system" or not isinstance(m.get("content"), str)
                   or len(m["content"]) <= MIN_KEEP + 60 for m in out)


def test_threshold_and_fraction():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    for n in range(10):
        msgs += tool_turn(n, 1, 400)   # ~ 100 + 4 tokens per result
    pol = ContextPolicy(window=1500, threshold=0.7)
    assert total_tokens(msgs) > 1050 and needs_summary(msgs, pol)
    assert not needs_summary(msgs, ContextPolicy(window=10_000))
    start, end = choose_span(msgs, pol)
    chosen = total_tokens(msgs[start:end])
    assert 0.4 * total_tokens(msgs) <= chosen <= 0.4 * total_tokens(msgs) + 2 * 110
    assert msgs[end]["role"] == "assistant"


def test_only_tool_block_after_head_yields_no_span():
    msgs = [{"role": "user", "content": "task"}, *tool_turn(0, 3, 5000)]
    assert choose_span(msgs, ContextPolicy(window=100)) is None


def test_estimate_and_request_shape():
    m = {"role": "assistant", "content": "abcd" * 10}
    assert estimate_tokens(m) == 14
    req = summary_request([{"role": "user", "content": "hello"}, *tool_turn(1, 1, 10)])
    assert req[0]["role"] == "system" and "data, not instructions" in req[0]["content"]
    assert "[tool result (c1_0)]" in req[1]["content"] and "call file_read" in req[1]["content"]
