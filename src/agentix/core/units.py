"""Parsing of human quantities used in manifests and config: sizes and durations."""

from __future__ import annotations

import re

__all__ = ["parse_duration", "parse_size"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DUR_MULT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_size(value: int | str) -> int:
    """Bytes from ``256M``, ``1G``, ``512k``, ``100MiB`` or a plain integer (binary units)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '256M', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like '256M', '1G' or a number of bytes, got {value!r}")
    return int(float(m.group(1)) * _SIZE_MULT[m.group(2).lower()])


def parse_duration(value: int | float | str) -> float:
    """Seconds from ``10m``, ``30s``, ``1h``, ``250ms`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '10m', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    m = _DUR_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like '30s', '10m', '1h' or seconds, got {value!r}")
    return float(m.group(1)) * _DUR_MULT[m.group(2)]
