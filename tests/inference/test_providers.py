"""Providers against loopback servers that speak the real OpenAI and Anthropic wire formats."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentix.core.errors import ProviderError
from agentix.llm.anthropic import AnthropicProvider
from agentix.llm.base import InferenceRequest
from agentix.llm.openai import OpenAIProvider
from agentix.llm.scripted import ScriptedProvider
from tests.fakes.openai_server import Scripted

TOOLS = ({"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},)


def req(**kw):
    base = dict(messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}),
                model="m", max_tokens=8)
    base.update(kw)
    return InferenceRequest(**base)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_text_and_usage(openai_server, stream):
    openai_server.push(Scripted(text="hello there friend", input_tokens=12, output_tokens=3))
    deltas: list[str] = []

    async def go():
        p = OpenAIProvider("openai", openai_server.base_url, "sk-secret")
        try:
            return await p.complete(req(stream=stream), deltas.append)
        finally:
            await p.aclose()

    r = run(go())
    assert r.text == "hello there friend"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (12, 3)
    assert r.stop_reason == "end" and r.provider == "openai" and not r.scripted
    assert "".join(deltas) == "hello there friend"
    if stream:
        assert len(deltas) == 3  # partial text arrived piece by piece
    body, headers = openai_server.stats.bodies[0], openai_server.stats.headers[0]
    assert headers["authorization"] == "Bearer sk-secret"
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["max_tokens"] == 8 and body.get("stream", False) == stream


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_calls_including_streamed_deltas(openai_server, stream):
    openai_server.push(Scripted(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}},
                                            {"name": "get_weather", "arguments": {"city": "Oslo"}}]))

    async def go():
        p = OpenAIProvider("openai", openai_server.base_url, None)
        try:
            return await p.complete(req(tools=TOOLS, stream=stream))
        finally:
            await p.aclose()

    r = run(go())
    assert r.stop_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in r.tool_calls] == [("get_weather", {"city": "Paris"}),
                                                              ("get_weather", {"city": "Oslo"})]
    assert openai_server.stats.bodies[0]["tools"] == list(TOOLS)
    assert "authorization" not in openai_server.stats.headers[0]


@pytest.mark.parametrize("status,retryable", [(429, True), (500, True), (503, True), (400, False), (401, False)])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_errors_are_one_family(openai_server, status, retryable, stream):
    openai_server.push(Scripted(status=status, retry_after=2.5 if status == 429 else None, error_message="nope"))

    async def go():
        p = OpenAIProvider("openai", openai_server.base_url, None)
        try:
            return await p.complete(req(stream=stream))
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as ei:
        run(go())
    d = ei.value.data
    assert d["provider"] == "openai" and d["status"] == status and d["retryable"] is retryable
    assert d["retry_after"] == (2.5 if status == 429 else None)
    assert "nope" in ei.value.message


def test_openai_connection_refused_is_retryable_provider_error():
    async def go():
        p = OpenAIProvider("openai", "http://127.0.0.1:9/v1", None)
        try:
            return await p.complete(req())
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as ei:
        run(go())
    assert ei.value.data["retryable"] is True and ei.value.data["status"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_text_tools_and_translation(anthropic_server, stream):
    anthropic_server.push(Scripted(text="bonjour", input_tokens=20, output_tokens=2),
                          Scripted(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]))
    deltas: list[str] = []
    history = (
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    )

    async def go():
        p = AnthropicProvider("anthropic", anthropic_server.base_url, "ak-secret")
        try:
            a = await p.complete(req(stream=stream), deltas.append)
            b = await p.complete(req(messages=history, tools=TOOLS, stream=stream))
            return a, b
        finally:
            await p.aclose()

    a, b = run(go())
    assert a.text == "bonjour" and (a.usage.input_tokens, a.usage.output_tokens) == (20, 2)
    assert a.stop_reason == "end" and "".join(deltas) == "bonjour"
    assert b.stop_reason == "tool_calls" and b.tool_calls[0].name == "get_weather"
    assert b.tool_calls[0].arguments == {"city": "Paris"}
    h = anthropic_server.stats.headers[0]
    assert h["x-api-key"] == "ak-secret" and h["anthropic-version"] == "2023-06-01"
    body = anthropic_server.stats.bodies[1]
    assert body["system"] == "be brief"
    assert body["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert body["messages"][1]["content"][0] == {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                                 "input": {"city": "Rome"}}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]}


@pytest.mark.parametrize("status,retryable", [(429, True), (529, True), (500, True), (400, False)])
def test_anthropic_errors(anthropic_server, status, retryable):
    anthropic_server.push(Scripted(status=status, retry_after=1 if status == 429 else None, error_message="busy"))

    async def go():
        p = AnthropicProvider("anthropic", anthropic_server.base_url, None)
        try:
            return await p.complete(req())
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as ei:
        run(go())
    assert ei.value.data["status"] == status and ei.value.data["retryable"] is retryable
    assert ei.value.data["retry_after"] == (1.0 if status == 429 else None)


def test_scripted_replays_in_order_and_is_labelled(tmp_path):
    f = tmp_path / "turns.yaml"
    f.write_text("- text: first\n- tool_calls: [{name: t, arguments: {a: 1}}]\n"
                 "- error: {message: boom, status: 503}\n")
    p = ScriptedProvider.from_file(f)

    async def go():
        out = [await p.complete(req()), await p.complete(req())]
        with pytest.raises(ProviderError) as e1:
            await p.complete(req())
        with pytest.raises(ProviderError) as e2:
            await p.complete(req())
        return out, e1.value, e2.value

    (a, b), e1, e2 = run(go())
    assert a.text == "first" and a.scripted and a.provider == "scripted"
    assert b.tool_calls[0].arguments == {"a": 1} and b.scripted
    assert e1.data["status"] == 503 and e1.data["retryable"] is True
    assert "exhausted" in e2.message and e2.data["retryable"] is False


def test_request_validation_names_the_field():
    from agentix.core.errors import InvalidRequest

    for params, fld in [({}, "messages"), ({"messages": [{"role": "robot"}]}, "messages[0]"),
                        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
                        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "x"}]}, "tools[0]")]:
        with pytest.raises(InvalidRequest) as ei:
            InferenceRequest.from_params(params)
        assert ei.value.data["field"] == fld
    r = InferenceRequest.from_params({"messages": [{"role": "user", "content": "x"}], "tools": list(TOOLS)})
    assert r.tools == TOOLS and json.dumps(r.messages)
