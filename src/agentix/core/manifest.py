"""The agent manifest: a typed model parsed once, at the boundary.

Field names follow aaOS (``name``, ``model``, ``system_prompt``, ``program``,
``lifecycle``, ``capabilities``, ``approval_required``, ``memory``, ``budget``,
``limits``) plus ``priority`` and ``isolation``. Fields whose behaviour later layers
implement are validated and stored now.

``parse_manifest`` takes already-decoded data (a dict from YAML or JSON) and returns a
``Manifest`` or raises ``InvalidRequest`` whose message names the field and says what is
expected. ``load_manifest_text`` decodes YAML or JSON text first (JSON is YAML, so one
decoder serves both).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentix.core.errors import InvalidRequest
from agentix.core.units import parse_duration, parse_size

__all__ = [
    "Budget",
    "CapabilityEntry",
    "Limits",
    "Manifest",
    "MemoryConfig",
    "load_manifest_text",
    "parse_manifest",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Model):
    """OS resource limits (enforced by the sandbox). Sizes in bytes, times in seconds."""

    memory: int | None = None
    cpu: float | None = Field(default=None, gt=0, le=1024)
    pids: int | None = Field(default=None, ge=1, le=1_000_000)
    wall_clock: float | None = None
    nofile: int | None = Field(default=None, ge=16, le=1_048_576)
    disk: int | None = None

    @field_validator("memory", "disk", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        return None if v is None else parse_size(v)

    @field_validator("wall_clock", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    def capped_by(self, ceiling: Limits) -> Limits:
        """These limits, none above ``ceiling``'s (an unset field takes the ceiling's; a field
        the ceiling leaves unset stays as it is)."""
        mine, top = self.model_dump(), ceiling.model_dump()
        out = {k: (v if top[k] is None else top[k] if v is None else min(v, top[k])) for k, v in mine.items()}
        return Limits(**out)

    def merged_over(self, defaults: Limits) -> Limits:
        """These limits with unset fields taken from ``defaults``."""
        data = defaults.model_dump()
        data.update({k: v for k, v in self.model_dump().items() if v is not None})
        return Limits(**data)


class Budget(_Model):
    """Inference and spawning budget (enforced by the kernel's budget checks)."""

    max_input_tokens: int | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_wall_clock: float | None = None
    max_children: int | None = Field(default=None, ge=0)
    max_tool_calls: int | None = Field(default=None, ge=0)
    warn_at: float = Field(default=0.8, gt=0, le=1)
    reset_period: float | None = None

    @field_validator("max_wall_clock", "reset_period", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)


class MemoryConfig(_Model):
    """Episodic memory settings."""

    enabled: bool = False
    max_records: int = Field(default=10_000, ge=0)
    max_record_bytes: int = Field(default=16_384, ge=1)
    shared_identity: str | None = None


class CapabilityEntry(_Model):
    """One limited grant set of a manifest's ``capabilities`` list."""

    grant: list[str] | str
    max_invocations: int | None = Field(default=None, ge=0)
    expires: float | None = None  # seconds from the spawn

    @field_validator("expires", mode="before")
    @classmethod
    def _expires(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    def grant_strings(self) -> list[str]:
        return [self.grant] if isinstance(self.grant, str) else list(self.grant)


class Manifest(_Model):
    name: str
    model: str | None = None
    system_prompt: str | None = None
    program: str | None = None
    args: list[str] = Field(default_factory=list)
    lifecycle: Literal["on_demand", "persistent"] = "on_demand"
    #: grant strings, a preset name, or mappings ``{grant: "tool: echo", max_invocations: 3, expires: 10m}``
    #: (``grant`` may also be a list of strings); each mapping becomes its own token
    capabilities: list[str | CapabilityEntry] | str = Field(default_factory=list)
    approval_required: list[str] = Field(default_factory=list)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    budget: Budget = Field(default_factory=Budget)
    limits: Limits = Field(default_factory=Limits)
    priority: float = Field(default=1.0, gt=0, le=1000)
    isolation: Literal["strict", "degraded"] = "strict"
    env: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    max_iterations: int = Field(default=50, ge=1, le=10_000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 1-63 characters of lowercase letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("capabilities", mode="before")
    @classmethod
    def _caps(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str) and ":" not in v:
            # a preset name alone: ``capabilities: sandboxed`` means ``[preset: sandboxed]``
            from agentix.core.grants import PRESETS

            if v.strip() not in PRESETS:
                raise ValueError(f"{v!r} is neither a grant string ('kind: value') nor a preset "
                                 f"name ({', '.join(PRESETS)})")
            return [f"preset: {v.strip()}"]
        if isinstance(v, dict):
            # {file_read: [/a/*, /b/*], tool: web_fetch} -> ["file_read: /a/*", ...]
            out: list[str] = []
            for key, val in v.items():
                vals = val if isinstance(val, list) else [val]
                out.extend(f"{key}: {x}" for x in vals)
            return out
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"environment variable name {key!r} is not valid")
            if key.startswith("AGENTIX_"):
                raise ValueError(f"{key!r}: names starting with AGENTIX_ are reserved for the kernel")
        return v

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(manifest)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see docs/manifest.md)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_manifest(data: Any) -> Manifest:
    """Validate decoded manifest data; raise InvalidRequest naming the bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"a manifest must be a mapping of fields, got {type(data).__name__}",
            field="(manifest)",
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidRequest(
            f"invalid manifest: {_describe(err)}",
            field=".".join(str(x) for x in first["loc"]),
        ) from None


def load_manifest_text(text: str) -> Manifest:
    """Decode YAML or JSON manifest text and validate it."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidRequest(f"manifest is not valid YAML or JSON: {err}", field="(manifest)") from None
    return parse_manifest(data)
