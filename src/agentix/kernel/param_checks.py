"""Checks of a call's parameters shared by the system-call handlers.

Each raises ``InvalidRequest`` naming the field and what it must be.
"""

from __future__ import annotations

import math
from typing import Any

from agentix.core.errors import InvalidRequest
from agentix.core.grants import GrantSet, parse_grants
from agentix.core.units import parse_duration
from agentix.kernel.dispatch import Call
from agentix.kernel.methods import VIRTUAL_WORKSPACE
from agentix.kernel.process import AgentRecord, ProcessTable

__all__ = ["MAX_WAIT", "caller_record", "grants_param", "limits_params", "optional", "required", "timeout_param"]

MAX_WAIT = 24 * 3600.0
#: what a grant's limits may say (a token stores them as 64-bit integers)
MAX_INVOCATIONS = 10**15  # as a manifest's max_invocations (core/manifest.py)
MAX_EXPIRES = 10 * 365 * 86400.0


def caller_record(table: ProcessTable, call: Call) -> AgentRecord:
    """The calling agent's record (an agent's method: its connection named it at spawn)."""
    assert call.caller.agent_id is not None
    return table.get(call.caller.agent_id)


def required(params: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    if key not in params:
        raise InvalidRequest(f'missing parameter "{key}" ({what})', field=key)
    val = params[key]
    if not isinstance(val, typ) or isinstance(val, bool) and typ is not bool:
        raise InvalidRequest(f'parameter "{key}" must be {what}', field=key)
    return val


def optional(params: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str, default: Any) -> Any:
    if params.get(key) is None:
        return default
    return required(params, key, typ, what)


def timeout_param(params: dict[str, Any], default: float | None) -> float | None:
    t = optional(params, "timeout", (int, float), "a number of seconds", default)
    if t is not None and (t < 0 or t > MAX_WAIT):
        raise InvalidRequest(f'"timeout" must be between 0 and {MAX_WAIT:g} seconds', field="timeout")
    return None if t is None else float(t)


def grants_param(params: dict[str, Any]) -> GrantSet:
    g = params.get("grants")
    if isinstance(g, str):
        g = [g]
    if not isinstance(g, list) or not g or not all(isinstance(x, str) for x in g):
        raise InvalidRequest('"grants" must be a non-empty list of grant strings', field="grants")
    return parse_grants(g, workspace=VIRTUAL_WORKSPACE)


def limits_params(params: dict[str, Any], now: float) -> tuple[int | None, float | None]:
    """``max_invocations`` and ``expires`` (a duration) of a grant: the count, and the
    instant it expires (``now`` plus the duration), each None when not given."""
    mx = params.get("max_invocations")
    if mx is not None and (not isinstance(mx, int) or isinstance(mx, bool) or not 0 <= mx <= MAX_INVOCATIONS):
        raise InvalidRequest(f'"max_invocations" must be an integer from 0 to {MAX_INVOCATIONS}',
                             field="max_invocations")
    exp = params.get("expires")
    try:
        seconds = None if exp is None else parse_duration(exp)
    except ValueError as err:
        raise InvalidRequest(f'"expires": {err}', field="expires") from None
    if seconds is not None and not (math.isfinite(seconds) and 0 <= seconds <= MAX_EXPIRES):
        raise InvalidRequest(f'"expires" must be at most {MAX_EXPIRES:g} seconds (ten years)', field="expires")
    return mx, None if seconds is None else now + seconds
