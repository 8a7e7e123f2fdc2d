"""Canonical JSON: one byte string per value, so hashes over JSON are reproducible.

The rule (docs/audit.md repeats it for independent verifiers):

* Values are ``null``, ``true``, ``false``, integers, finite floats, strings, arrays and
  objects whose keys are strings. NaN, infinities, non-string keys, lone surrogates and any
  other type are refused (``InvalidRequest``). Python tuples serialise as arrays.
* Object members are sorted by key, comparing keys as sequences of Unicode code points
  (which is the same as comparing their UTF-8 bytes). Keys are unique.
* No whitespace anywhere: separators are exactly ``,`` and ``:``.
* Output is UTF-8. Inside strings only ``"`` -> ``\\"``, ``\\`` -> ``\\\\`` and the control
  characters U+0000..U+001F are escaped: ``\\b \\t \\n \\f \\r`` for U+0008, U+0009, U+000A,
  U+000C, U+000D and ``\\u00xx`` (lower-case hex) for the others. Everything else, including
  U+007F and U+2028, is written as its UTF-8 bytes. No Unicode normalisation is applied.
* Integers must lie in the signed 64-bit range ``[-2**63, 2**63 - 1]`` (others are
  refused) and are written in decimal without leading zeros or ``+``. Verifiers must parse
  them exactly (not as doubles: JavaScript needs a BigInt-aware parser above 2**53).
* A float is written as Python's ``repr`` writes it: the shortest decimal string that
  round-trips to the same IEEE-754 double; positional notation (always with a ``.`` and at
  least one digit after it, e.g. ``1.0``, ``0.0001``) when the decimal exponent ``e``
  satisfies ``-4 <= e < 16``, otherwise ``d[.ddd]e[+-]XX`` with a sign and at least two
  exponent digits (``1e-05``, ``1e+16``, ``1.5e+300``); ``-0.0`` stays ``-0.0``. Producers
  that cannot guarantee this should avoid floats (use integers: micro-dollars, tokens).

Implementation: values without floats go through ``orjson`` (fast; its output is
byte-identical to the rule above for those values); values with floats go through the
standard library's ``json`` with the equivalent options.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from agentix.core.errors import InvalidRequest

__all__ = ["bounded_loads", "canonical_json", "canonical_loads"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: the deepest nesting ``bounded_loads`` reads: what ``canonical_json`` writes (``_check``:
#: 64 levels below the top), top level included
MAX_DEPTH = 65


def _check(value: Any, depth: int = 0) -> bool:
    """Validate ``value`` against the rule; return True if it needs the stdlib path."""
    if depth > MAX_DEPTH - 1:
        raise InvalidRequest(f"canonical JSON: nesting deeper than {MAX_DEPTH - 1} levels")
    t = type(value)
    if t is str or value is None or t is bool:
        return False
    if t is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidRequest("canonical JSON: integer outside the signed 64-bit range")
        return False
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidRequest("canonical JSON: NaN and infinities are not allowed")
        return True
    if t is dict:
        slow = False
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidRequest(
                    "canonical JSON: object keys must be strings", key=repr(k)[:80]
                )
            if _check(v, depth + 1):
                slow = True
        return slow
    if t is list or t is tuple:
        slow = False
        for v in value:
            if _check(v, depth + 1):
                slow = True
        return slow
    raise InvalidRequest("canonical JSON: unsupported type", type=t.__name__)


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (see the module docstring for the rule)."""
    slow = _check(value)
    try:
        if not slow:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, orjson.JSONEncodeError) as exc:
        # lone surrogates and the like
        raise InvalidRequest("canonical JSON: value cannot be encoded", reason=str(exc)) from None


def canonical_loads(data: bytes | str) -> Any:
    """Parse JSON text (canonical or not) into Python values; refuses invalid JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("invalid JSON", reason=str(exc)) from None


def bounded_loads(data: bytes | str) -> Any:
    """Parse JSON someone else wrote (a registry's answer, a pulled manifest or config, a
    snapshot document): ``ValueError`` if it is not JSON, holds NaN or infinities, or nests
    deeper than canonical JSON may (``MAX_DEPTH``) — a value nested a thousand deep parses,
    then breaks whatever recurses over it next (``repr``, ``json.dumps``, a validator) with a
    ``RecursionError`` instead of a refusal."""
    value = orjson.loads(data)  # orjson.JSONDecodeError is a ValueError; it stops at 1024 levels itself
    stack = [(value, 1)] if type(value) is dict or type(value) is list else []
    while stack:
        v, depth = stack.pop()
        children = v.values() if type(v) is dict else v
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return value
