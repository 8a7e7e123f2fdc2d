"""The loop never overflows a hard context window (a local model's slot), and a lone summary
is never summarised again."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.agents.loop import LoopConfig, ToolDef, ToolLoop
from agentix.core.context import SUMMARY_PREFIX, ContextPolicy, choose_span, estimate_tokens, fit_to_budget

from .fake_kernel import FakeKernel, reply

ECHO = ToolDef("echo", "Return the message.", {"type": "object", "properties": {"message": {"type": "string"}},
                                               "required": ["message"]})


def prompt_tokens(loop: ToolLoop, p: dict, scale: float = 1.0) -> int:
    schema = len(json.dumps(p["tools"])) / 3 + 8 if p["tools"] else 0
    return sum(math.ceil(scale * estimate_tokens(m)) for m in p["messages"]) + math.ceil(scale * schema)


@settings(max_examples=40, deadline=None)
@given(window=st.integers(700, 6000), sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=8),
       ratio=st.sampled_from([1.0, 1.6, 2.5]))
def test_no_request_ever_exceeds_the_window(window, sizes, ratio):
    """Tool results of any size, a provider whose tokenizer counts more than the estimate:
    every think request (turns and summaries) fits prompt + max_tokens within the window."""
    results = iter(sizes)
    state = {"scale": 1.0}

    def think(p):
        used = prompt_tokens(loop, p, ratio)           # what the provider's tokenizer would count
        assert used + p["max_tokens"] <= window * 1.001 + 1 or state["scale"] < ratio, (used, p["max_tokens"])
        n_in = math.ceil(used)
        if p.get("purpose") == "summary":
            return reply("short summary", usage=(n_in, 5))
        n = len([m for m in p["messages"] if m["role"] == "tool"])
        state["scale"] = ratio
        if n < len(sizes):
            return reply(calls=[("echo", {"message": "m"})], usage=(n_in, 5))
        return reply("done", usage=(n_in, 5))

    k = FakeKernel(think, tools={"echo": lambda a: "z" * next(results, 10)})
    config = LoopConfig(max_tokens=512, window=window, context=ContextPolicy(window=max(512, window - 600)),
                        max_iterations=12)
    loop = ToolLoop(k, [ECHO], config=config)
    res = loop.run("task")
    assert res.stop_reason in ("complete", "max_iterations", "context_window_exceeded"), res
    # after the first reply calibrated the scale, every request fitted the provider's count
    for p in k.thinks[1:]:
        assert prompt_tokens(loop, p, ratio) + p["max_tokens"] <= window + 1


def test_a_huge_tool_result_is_cut_not_sent_whole():
    k = FakeKernel([reply(calls=[("echo", {"message": "m"})]), reply("done")],
                   tools={"echo": lambda a: "q" * 100_000})
    loop = ToolLoop(k, [ECHO], config=LoopConfig(max_tokens=256, window=2048))
    assert loop.run("t").stop_reason == "complete"
    last = k.thinks[-1]
    assert prompt_tokens(loop, last) + last["max_tokens"] <= 2048
    tool_msg = [m for m in last["messages"] if m["role"] == "tool"][0]
    assert "characters cut to fit the context window" in tool_msg["content"]
    assert any(kind == "context_cut" for kind, _ in k.events)


def test_a_prompt_that_cannot_fit_stops_with_context_window_exceeded():
    k = FakeKernel([reply("never")])
    loop = ToolLoop(k, [ECHO], system_prompt="s" * 20_000, config=LoopConfig(max_tokens=256, window=1024))
    res = loop.run("t")
    assert res.stop_reason == "context_window_exceeded" and not k.thinks   # nothing was sent


def test_a_lone_summary_is_not_summarised_again():
    summary = {"role": "user", "content": f"{SUMMARY_PREFIX} (12 messages)]\n" + "s" * 8000}
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}, summary,
            {"role": "assistant", "content": "latest"}]
    assert choose_span(msgs, ContextPolicy(window=1000)) is None
    more = msgs[:3] + [{"role": "assistant", "content": "a" * 100}, {"role": "user", "content": "b"},
                       {"role": "assistant", "content": "latest"}]
    start, end = choose_span(more, ContextPolicy(window=1000))
    assert start == 2 and end > 3


def test_fit_to_budget_keeps_system_and_tool_call_arguments():
    msgs = [{"role": "system", "content": "S" * 5000}, {"role": "user", "content": "U" * 5000},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "t", "arguments": '{"a": "' + "A" * 900 + '"}'}}]},
            {"role": "tool", "tool_call_id": "c", "content": "T" * 20_000}]
    out, n = fit_to_budget(msgs, 2000)
    assert out[0] == msgs[0] and out[2] == msgs[2] and n >= 1
    assert sum(estimate_tokens(m) for m in out) <= 2000
    assert msgs[3]["content"] == "T" * 20_000   # the input was not changed
