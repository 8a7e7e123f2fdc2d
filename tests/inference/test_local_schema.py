"""The local provider's constrained-decoding schema, without the engine."""

from __future__ import annotations

import re

from agentix.llm.local import INT_BOUND, NUMBER_PATTERN, restore_numbers, tool_schema

TOOL = {"type": "function", "function": {"name": "t", "parameters": {"type": "object", "properties": {
    "x": {"type": "number", "minimum": 0, "maximum": 600}, "n": {"type": "integer"},
    "s": {"type": "string"}, "items": {"type": "array", "items": {"type": "number"}},
    "either": {"anyOf": [{"type": "number"}, {"type": "boolean"}]}}}}}


def test_every_number_and_integer_is_bounded():
    schema = tool_schema((TOOL,), force_tool=True)
    props = schema["properties"]["arguments"]["properties"]
    assert props["x"]["type"] == "string" and props["x"]["pattern"] == NUMBER_PATTERN
    assert props["items"]["items"]["pattern"] == NUMBER_PATTERN
    assert (props["n"]["minimum"], props["n"]["maximum"]) == (-INT_BOUND, INT_BOUND)
    assert props["s"]["maxLength"] == 200
    rx = re.compile(NUMBER_PATTERN)
    assert rx.match("20") and rx.match("-3.5") and rx.match("0.1234")
    assert not rx.match("20.00000") and not rx.match("1234567890") and not rx.match("01")


def test_numbers_come_back_as_numbers():
    params = TOOL["function"]["parameters"]
    out = restore_numbers({"x": "20.5", "n": 3, "s": "20", "items": ["1", "2.25"], "either": "7"}, params)
    assert out == {"x": 20.5, "n": 3, "s": "20", "items": [1, 2.25], "either": 7}
    assert restore_numbers({"either": True}, params) == {"either": True}
