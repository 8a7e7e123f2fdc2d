"""The Anthropic provider against a fake that speaks (and validates) the Messages wire format.

One test per way the provider once broke the Messages API: each asserts what went on the
wire, or what came back, over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio

import pytest

from agentix.core.budget import BudgetLedger, BudgetLimits
from agentix.core.errors import ProviderError
from agentix.kernel.inference import InferenceService
from agentix.llm.anthropic import AnthropicProvider
from agentix.llm.base import InferenceRequest
from agentix.llm.inference_config import Price, load_config
from tests.fakes.openai_server import Scripted

TOOLS = ({"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},)


def req(**kw):
    base = dict(messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}),
                model="claude-test", max_tokens=8)
    base.update(kw)
    return InferenceRequest(**base)


def complete(server, request, deltas=None):
    async def go():
        p = AnthropicProvider("anthropic", server.base_url, "ak-test")
        try:
            return await p.complete(request, None if deltas is None else deltas.append)
        finally:
            await p.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_none_is_sent_not_dropped(anthropic_server, stream):
    anthropic_server.push(Scripted(text="no tools today"))
    r = complete(anthropic_server, req(tools=TOOLS, tool_choice="none", stream=stream))
    assert r.text == "no tools today" and not r.tool_calls
    assert anthropic_server.stats.bodies[0]["tool_choice"] == {"type": "none"}


@pytest.mark.parametrize("choice,wire", [("auto", {"type": "auto"}), ("required", {"type": "any"}),
                                         ("get_weather", {"type": "tool", "name": "get_weather"})])
def test_every_tool_choice_maps_to_the_messages_shape(anthropic_server, choice, wire):
    anthropic_server.push(Scripted(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]))
    r = complete(anthropic_server, req(tools=TOOLS, tool_choice=choice))
    assert r.tool_calls[0].arguments == {"city": "Oslo"}
    assert anthropic_server.stats.bodies[0]["tool_choice"] == wire


def test_empty_user_message_is_not_sent_as_an_empty_text_block(anthropic_server):
    anthropic_server.push(Scripted(text="ok"))
    msgs = ({"role": "user", "content": "first"}, {"role": "assistant", "content": "noted"},
            {"role": "user", "content": ""}, {"role": "user", "content": "second"})
    r = complete(anthropic_server, req(messages=msgs))
    assert r.text == "ok"   # the fake refuses (400) any empty text block, like the API
    sent = anthropic_server.stats.bodies[0]["messages"]
    assert sent[-1] == {"role": "user", "content": [{"type": "text", "text": "second"}]}
    assert all(b.get("text") for m in sent for b in m["content"] if b["type"] == "text")


def test_request_with_only_empty_messages_is_refused_before_sending(anthropic_server):
    with pytest.raises(ProviderError) as ei:
        complete(anthropic_server, req(messages=({"role": "system", "content": "sys"},
                                                 {"role": "user", "content": "  "})))
    assert ei.value.data["retryable"] is False and "empty" in ei.value.message
    assert anthropic_server.stats.requests == 0   # nothing reached the API


def test_the_fake_really_refuses_an_empty_text_block(anthropic_server):
    """The guard above is only worth something if the fake behaves like the API."""
    import httpx

    r = httpx.post(anthropic_server.base_url + "/messages", json={
        "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("asked,sent", [(0.0, 0.0), (0.7, 0.7), (1.0, 1.0), (1.5, 1.0), (2.0, 1.0)])
def test_temperature_is_clamped_to_the_messages_range(anthropic_server, asked, sent):
    anthropic_server.push(Scripted(text="warm"))
    assert complete(anthropic_server, req(temperature=asked)).text == "warm"
    assert anthropic_server.stats.bodies[0]["temperature"] == sent


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("wire,ours", [("refusal", "refusal"), ("pause_turn", "pause_turn"),
                                       ("model_context_window_exceeded", "context_window_exceeded"),
                                       ("stop_sequence", "stop_sequence"), ("end_turn", "end")])
def test_stop_reasons_are_distinct_not_end(anthropic_server, stream, wire, ours):
    anthropic_server.push(Scripted(text="partial answer", stop_reason=wire))
    r = complete(anthropic_server, req(stream=stream))
    assert r.stop_reason == ours and r.text == "partial answer"


@pytest.mark.parametrize("kind,status", [("overloaded_error", 529), ("api_error", 500)])
def test_in_stream_error_is_retryable_like_its_status(anthropic_server, kind, status):
    anthropic_server.push(Scripted(text="never", stream_error=kind))
    with pytest.raises(ProviderError) as ei:
        complete(anthropic_server, req(stream=True))
    assert ei.value.data["retryable"] is True and ei.value.data["status"] == status
    assert kind in ei.value.message


def test_in_stream_invalid_request_error_is_not_retried(anthropic_server):
    anthropic_server.push(Scripted(text="never", stream_error="invalid_request_error"))
    with pytest.raises(ProviderError) as ei:
        complete(anthropic_server, req(stream=True))
    assert ei.value.data["retryable"] is False


@pytest.mark.parametrize("kind", ["overloaded_error", "api_error"])
def test_in_stream_error_is_retried_by_the_scheduler(tmp_path, anthropic_server, kind):
    """An error event after the 200 (before any text) is retried like a 529 / 5xx."""
    anthropic_server.push(Scripted(text="x", stream_error=kind), Scripted(text="second try works"))
    (tmp_path / "config.toml").write_text("[inference]\nbackoff_base = 0.01\n")
    cfg = load_config(tmp_path, {"ANTHROPIC_API_KEY": "ak", "ANTHROPIC_BASE_URL": anthropic_server.base_url,
                                 "AGENTIX_MODEL": "anthropic:claude-test"}, local_installed=False)
    events = []

    async def go():
        svc = InferenceService(cfg, record=lambda k, a, d: events.append((k, d)))
        try:
            return await svc.think("a1", 1.0, {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                                               "max_tokens": 20}, BudgetLedger(BudgetLimits(), 0.0))
        finally:
            await svc.aclose()

    r = asyncio.run(go())
    assert r.text == "second try works" and anthropic_server.stats.requests == 2
    assert [d["retries"] for k, d in events if k == "usage.reported"] == [1]


@pytest.mark.parametrize("stream", [False, True])
def test_cache_tokens_are_counted_and_costed(tmp_path, anthropic_server, stream):
    anthropic_server.push(Scripted(text="cached", input_tokens=100, output_tokens=10,
                                   cache_read_tokens=1000, cache_write_tokens=200))
    r = complete(anthropic_server, req(stream=stream))
    u = r.usage
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.output_tokens) == (1300, 1000, 200, 10)
    # through the kernel's driver: usage.reported carries them and the cost prices them
    anthropic_server.push(Scripted(text="cached", input_tokens=100, output_tokens=10,
                                   cache_read_tokens=1000, cache_write_tokens=200))
    (tmp_path / "config.toml").write_text('[prices."anthropic:claude-test"]\ninput_per_mtok = 3.0\n'
                                          'output_per_mtok = 15.0\n')
    cfg = load_config(tmp_path, {"ANTHROPIC_API_KEY": "ak", "ANTHROPIC_BASE_URL": anthropic_server.base_url,
                                 "AGENTIX_MODEL": "anthropic:claude-test"}, local_installed=False)
    events = []

    async def go():
        svc = InferenceService(cfg, record=lambda k, a, d: events.append((k, d)))
        try:
            return await svc.think("a1", 1.0, {"messages": [{"role": "user", "content": "hi"}], "stream": stream,
                                               "max_tokens": 20}, BudgetLedger(BudgetLimits(), 0.0))
        finally:
            await svc.aclose()

    resp = asyncio.run(go())
    (kind, data), = events
    expect = (100 * 3.0 + 1000 * 0.3 + 200 * 3.75 + 10 * 15.0) / 1e6
    assert data["cache_read_tokens"] == 1000 and data["cache_write_tokens"] == 200
    assert data["input_tokens"] == 1300 and data["cost_usd"] == pytest.approx(expect)
    assert resp.cost_usd == pytest.approx(expect)
    assert resp.to_data()["usage"]["cache_read_tokens"] == 1000
    assert Price(3.0, 15.0).cost(1300, 10, 1000, 200) == pytest.approx(expect)
    assert Price(3.0, 15.0).cost(1300, 10) > expect   # without the cache discount it costs more


def test_failed_tool_results_carry_is_error(anthropic_server):
    anthropic_server.push(Scripted(text="I see the failure"))
    history = (
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "X"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Y"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"error": "not_found"}', "is_error": True},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
    )
    assert complete(anthropic_server, req(messages=history, tools=TOOLS)).text == "I see the failure"
    results = anthropic_server.stats.bodies[0]["messages"][2]["content"]
    assert results[0] == {"type": "tool_result", "tool_use_id": "c1", "content": '{"error": "not_found"}',
                          "is_error": True}
    assert "is_error" not in results[1]


def test_openai_wire_never_sees_is_error(openai_server):
    from agentix.llm.openai import OpenAIProvider

    openai_server.push(Scripted(text="ok"))

    async def go():
        p = OpenAIProvider("openai", openai_server.base_url, "sk")
        try:
            return await p.complete(req(messages=(
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "bad", "is_error": True})))
        finally:
            await p.aclose()

    asyncio.run(go())
    assert all("is_error" not in m for m in openai_server.stats.bodies[0]["messages"])


@pytest.mark.parametrize("stream", [False, True])
def test_broken_tool_json_comes_back_raw_not_wrapped(anthropic_server, stream):
    """A tool_use whose streamed input_json_delta is not an object reaches the loop as raw text."""
    anthropic_server.push(Scripted(tool_calls=[{"name": "get_weather", "arguments": ["not", "an", "object"]}]))
    r = complete(anthropic_server, req(tools=TOOLS, stream=stream))
    assert isinstance(r.tool_calls[0].arguments, str) and "_raw" not in r.tool_calls[0].arguments
