"""Grants as a manifest states them, and tokens on the wire.

``manifest_groups`` turns a manifest's ``capabilities`` into one token's worth of grants per
group; ``model_grant`` refuses a ``model`` no grant covers; an agent granted a model with no
token budget gets ``DEFAULT_LLM_BUDGET`` (root) or ``DEFAULT_LLM_CHILD_BUDGET`` (child).
``encode_token``/``decode_token_param``: a serialized token as URL-safe base64.
Pure: no kernel state.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from agentix.core.caps import Token
from agentix.core.errors import AgentixError, CapabilityDenied, InvalidRequest, LimitExceeded
from agentix.core.grants import MAX_GRANTS, GrantSet, Request, parse_grants
from agentix.core.manifest import CapabilityEntry, Manifest
from agentix.kernel.methods import VIRTUAL_WORKSPACE

__all__ = ["DEFAULT_LLM_BUDGET", "DEFAULT_LLM_CHILD_BUDGET", "VIRTUAL_WORKSPACE", "ManifestGroup",
           "decode_token_param", "encode_token", "grants_model", "manifest_groups", "model_grant"]


@dataclass(frozen=True)
class ManifestGroup:
    """One token's worth of grants from a manifest: strings, plus optional limits."""

    grants: GrantSet
    max_invocations: int | None = None
    expires: float | None = None  # seconds from now


def manifest_groups(manifest: Manifest) -> list[ManifestGroup]:
    """The manifest's capabilities as grant groups: all plain strings together, each mapping
    entry alone (with its limits). Raises ``invalid_request`` for a bad grant string."""
    caps = manifest.capabilities
    items: list[Any] = [caps] if isinstance(caps, str) else list(caps)
    plain = [c for c in items if isinstance(c, str)]
    out: list[ManifestGroup] = []
    if plain:
        out.append(ManifestGroup(parse_grants(plain, workspace=VIRTUAL_WORKSPACE)))
    for c in items:
        if isinstance(c, CapabilityEntry):
            out.append(ManifestGroup(parse_grants(c.grant_strings(), workspace=VIRTUAL_WORKSPACE),
                                  c.max_invocations, c.expires))
    out = [g for g in out if len(g.grants)]
    if sum(len(g.grants) for g in out) > MAX_GRANTS:  # each group is bounded, and so are all together
        raise LimitExceeded(f"the manifest's capabilities hold more than {MAX_GRANTS} grants: name a "
                            "directory or a wildcard instead of each path or host", limit=MAX_GRANTS,
                            field="capabilities")
    return out


DEFAULT_LLM_BUDGET: dict[str, int] = {"max_input_tokens": 2_000_000, "max_output_tokens": 200_000}
#: the same for a child (a tenth: ten children with defaults fit in a root's default)
DEFAULT_LLM_CHILD_BUDGET: dict[str, int] = {"max_input_tokens": 200_000, "max_output_tokens": 20_000}


def grants_model(manifest: Manifest) -> bool:
    try:
        return any(g.grants.of_kind("model") for g in manifest_groups(manifest))
    except AgentixError:
        return False  # a bad grant string is refused later, with its own message


def model_grant(manifest: Manifest, groups: list[ManifestGroup]) -> None:
    """Refuse a manifest whose ``model`` no ``model`` grant of its own covers, naming the grant."""
    if not manifest.model:
        return
    req = Request("model", manifest.model)
    if any(g.grants.permits(req) for g in groups):
        return
    raise CapabilityDenied(
        f"manifest model {manifest.model!r} is not granted: add the capability "
        f"'model: {manifest.model}' (or e.g. 'model: {manifest.model.partition(':')[0]}:*')",
        reason="model_not_granted", request=str(req), field="capabilities")


def decode_token_param(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidRequest('"token" must be a base64 string (a serialized token)', field="token")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise CapabilityDenied("the capability token is not valid", reason="invalid_token") from None


def encode_token(t: Token) -> str:
    return base64.urlsafe_b64encode(t.serialized).decode("ascii").rstrip("=")
