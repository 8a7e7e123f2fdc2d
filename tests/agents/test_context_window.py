"""The loop never overflows a hard context window (a local model's slot), and a lone summary
is never summarised again. The loop runs in a real agent against the real kernel; its model is
the scripted provider, or the fake OpenAI server on 127.0.0.1 counting tokens the way a
provider's own tokenizer would (tests/agents/loop_world.py)."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.agents.loop import ToolDef
from agentix.core.context import SUMMARY_PREFIX, ContextPolicy, choose_span, estimate_tokens, fit_to_budget
from tests.fakes.openai_server import Scripted
from tests.fakes.routed_openai import RoutedOpenAIServer

from .loop_world import reply, run_loop

READ = ToolDef("file_read", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}},
                                             "required": ["path"]})
ECHO = ToolDef("echo", "Return the message.", {"type": "object", "properties": {"message": {"type": "string"}},
                                               "required": ["message"]})
FILES = ["file_read: {workspace}/*"]


def prompt_tokens(p: dict, scale: float = 1.0) -> int:
    schema = len(json.dumps(p["tools"])) / 3 + 8 if p.get("tools") else 0
    return sum(math.ceil(scale * estimate_tokens(m)) for m in p["messages"]) + math.ceil(scale * schema)


# 20 examples: each starts a real kernel and a real agent (~2 s); the fitting arithmetic under
# it is a property at 400 examples in tests/agents/test_context.py (fit_to_budget, scaled)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=st.integers(700, 6000), sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=8),
       ratio=st.sampled_from([1.0, 1.6, 2.5]))
def test_no_request_ever_exceeds_the_window(tmp_path_factory, window, sizes, ratio):
    """Files of any size read into the context, a provider whose tokenizer counts more than
    the estimate: after the first reply calibrated the loop, every think request (turns and
    summaries) fits prompt + max_tokens within the window."""
    def route(body):
        n_in = math.ceil(prompt_tokens(body, ratio))   # what the provider's tokenizer counts
        if "<transcript>" in str(body["messages"][-1].get("content")):
            return Scripted(text="short summary", input_tokens=n_in, output_tokens=5)
        n = len([m for m in body["messages"] if m["role"] == "tool"])
        if n < len(sizes):
            return Scripted(tool_calls=[{"name": "file_read", "arguments": {"path": f"f{n}.txt"}}],
                            input_tokens=n_in, output_tokens=5)
        return Scripted(text="done", input_tokens=n_in, output_tokens=5)

    server = RoutedOpenAIServer(route)
    server.start()
    try:
        t = run_loop(tmp_path_factory.mktemp("w"), [], "task", tools=[READ], capabilities=FILES,
                     files={f"f{i}.txt": "z" * n for i, n in enumerate(sizes)}, base_url=server.base_url,
                     config={"max_tokens": 512, "window": window, "max_iterations": 12,
                             "context": {"window": max(512, window - 600)}})
    finally:
        server.stop()
    assert t.stop_reason in ("complete", "max_iterations", "context_window_exceeded"), t.result
    for p in t.thinks[1:]:
        assert prompt_tokens(p, ratio) + p["max_tokens"] <= window + 1


def test_a_huge_tool_result_is_cut_not_sent_whole(tmp_path):
    t = run_loop(tmp_path, [reply(calls=[("file_read", {"path": "big.txt"})]), reply("done")], tools=[READ],
                 capabilities=FILES, files={"big.txt": "q" * 100_000},
                 config={"max_tokens": 256, "window": 2048})
    assert t.stop_reason == "complete"
    last = t.thinks[-1]
    assert prompt_tokens(last) + last["max_tokens"] <= 2048
    tool_msg = [m for m in last["messages"] if m["role"] == "tool"][0]
    assert "characters cut to fit the context window" in tool_msg["content"]
    assert any(kind == "context_cut" for kind, _ in t.events)   # and the kernel audited the cut


def test_a_prompt_that_cannot_fit_stops_with_context_window_exceeded(tmp_path):
    t = run_loop(tmp_path, [reply("never")], tools=[ECHO], system_prompt="s" * 20_000,
                 config={"max_tokens": 256, "window": 1024})
    assert t.stop_reason == "context_window_exceeded" and not t.thinks   # nothing was sent


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
