"""JSON for the wire, at the cost of no import: the C accelerators of the stdlib ``json``.

Every agent program imports the SDK, so what it imports is start-up time for every agent
(``import agentix.sdk.agent`` must stay within 2x of ``python -c pass``). ``orjson`` costs
about 20 ms to load and ``json`` pulls in ``re``; the ``_json`` extension module that
``json`` itself uses is built into the interpreter. ``dumps``/``loads`` here drive it the
way ``json.dumps(obj, separators=(",", ":"), allow_nan=False)`` / ``json.loads`` do, and
fall back to ``json`` where ``_json`` is missing (other interpreters).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["dumps", "loads"]


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


class _Context:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict[str, str] = {}


try:
    import _json

    _encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None,
                                 ":", ",", False, False, False)
    _scan = _json.make_scanner(_Context())

    def dumps(obj: Any) -> bytes:
        """Compact ASCII JSON of ``obj`` (NaN and infinities are refused)."""
        return "".join(_encode(obj, 0)).encode("ascii")

    def loads(data: bytes | str) -> Any:
        """The value of one JSON document (surrounding whitespace allowed)."""
        s = (data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data).strip()
        try:
            obj, end = _scan(s, 0)
        except StopIteration:
            raise ValueError("not a JSON document") from None
        if end != len(s):
            raise ValueError(f"extra data after the JSON document at {end}")
        return obj

except (ImportError, AttributeError, TypeError):  # pragma: no cover - not CPython
    import json as _stdjson

    def dumps(obj: Any) -> bytes:
        return _stdjson.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")

    def loads(data: bytes | str) -> Any:
        return _stdjson.loads(data)
