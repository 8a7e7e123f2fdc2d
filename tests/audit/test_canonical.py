from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentix.core.canonical import canonical_json
from agentix.core.errors import InvalidRequest


def test_sorted_keys_no_whitespace_utf8():
    assert canonical_json({"b": 1, "a": [True, None, "é"], "A": {}}) == (
        '{"A":{},"a":[true,null,"é"],"b":1}'.encode())


def test_control_characters_and_quotes_are_escaped_exactly():
    assert canonical_json("\x00\x08\t\n\x0c\r\x1f\"\\\x7f\u2028") == (
        b'"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\\x7f\xe2\x80\xa8"')


@pytest.mark.parametrize("f,text", [(1.0, "1.0"), (0.1, "0.1"), (1e-05, "1e-05"),
                                    (1e16, "1e+16"), (-0.0, "-0.0"), (0.0001, "0.0001"),
                                    (1e-7, "1e-07"), (123.456, "123.456")])
def test_floats_follow_python_repr(f, text):
    assert canonical_json({"x": f}) == b'{"x":' + text.encode() + b"}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {1: "a"}, {"a": object()},
                                 "\ud800", b"bytes", {1.5}])
def test_unrepresentable_values_are_refused(bad):
    with pytest.raises(InvalidRequest):
        canonical_json({"v": bad})


def test_integers_are_signed_64_bit():
    assert canonical_json([-(2**63), 2**63 - 1]) == (
        b"[-9223372036854775808,9223372036854775807]")
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(InvalidRequest):
            canonical_json({"n": bad})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(), ch, max_size=4),
    max_leaves=20)


@given(json_values)
def test_canonical_equals_the_stdlib_reference_and_round_trips(v):
    out = canonical_json(v)
    ref = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                     allow_nan=False).encode()
    assert out == ref
    assert canonical_json(json.loads(out)) == out
