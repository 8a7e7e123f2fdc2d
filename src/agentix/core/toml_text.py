"""One reading of TOML text for every configuration file the kernel reads (config.toml's
``[kernel]``, ``[secrets]``, ``[taint]``, ``[mcp]``, ``[providers]``; keys/secrets.toml).

Pure: the caller reads the bytes. Text that is not UTF-8 or not TOML is refused with
``invalid_request`` naming the file and the field, never a silent default (a taint policy that
fell back to the defaults on a typo would have turned the operator's rules off)."""

from __future__ import annotations

import tomllib
from typing import Any

from agentix.core.errors import InvalidRequest

__all__ = ["parse_toml"]


def parse_toml(data: bytes, where: str, field: str) -> dict[str, Any]:
    """The TOML document in ``data`` (the file ``where``), or ``invalid_request`` naming
    ``where`` and ``field`` and what is wrong with it."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InvalidRequest(f"{where}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8",
                             field=field) from None
    except tomllib.TOMLDecodeError as err:
        raise InvalidRequest(f"{where}: not valid TOML: {err}", field=field) from None
