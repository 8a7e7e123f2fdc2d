"""The agent manifest: a typed model parsed once, at the boundary.
(Over 400 lines: one model and its one parser: every field's rule sits beside its type, where a
reviewer checks them together.)

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

import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentix.core.errors import InvalidRequest
from agentix.core.units import parse_duration, parse_size

__all__ = [
    "Budget",
    "CapabilityEntry",
    "Limits",
    "Manifest",
    "MemoryConfig",
    "check_env_name",
    "decode_manifest_text",
    "load_manifest_text",
    "parse_manifest",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}\Z")

# -- the valid range of every OS limit (what the sandbox can apply; docs/isolation.md) ----
MIB = 1024**2
MEMORY_RANGE = (16 * MIB, 2**50)      # below 16 MiB the interpreter cannot start; 1 PiB
DISK_RANGE = (1 * MIB, 2**50)         # RLIMIT_FSIZE and the size of the private /tmp
CPU_RANGE = (0.01, 1024.0)            # cores; cpu.max needs a quota of at least 1 ms per 100 ms
PIDS_RANGE = (8, 4_194_304)           # bwrap needs 2 processes besides the program; pid_max
NOFILE_RANGE = (16, 1_048_576)        # fs.nr_open; the kernel's own hard limit caps it further
WALL_CLOCK_MAX = 365 * 86400.0        # a year; 0 is refused (it never meant "no limit")

# -- environment: name shapes allowed, then dangerous names and prefixes refused ----------
ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,127}\Z")
ENV_MAX_VARS = 64
ENV_MAX_VALUE = 4096                  # bytes (UTF-8) per value
ENV_MAX_TOTAL = 32 * 1024             # bytes of names and values together
#: prefixes that make a loader, interpreter or libc read code, files or options
ENV_DENIED_PREFIXES: dict[str, str] = {
    "LD_": "the dynamic loader reads it (LD_PRELOAD, LD_LIBRARY_PATH, LD_DEBUG_OUTPUT ...)",
    "DYLD_": "the dynamic loader reads it",
    "PYTHON": "the Python interpreter reads it (PYTHONPATH, PYTHONSTARTUP, PYTHONHOME ...)",
    "AGENTIX_": "names starting with AGENTIX_ are reserved for the kernel",
    "MALLOC_": "the C library's allocator reads it",
    "GLIBC_": "the C library reads it (GLIBC_TUNABLES)",
    "GCONV_": "the C library loads conversion modules from it",
    "BASH_": "the shell runs or loads code from it (BASH_ENV, BASH_FUNC_*)",
    "PERL": "the Perl interpreter reads it (PERL5LIB, PERL5OPT ...)",
    "RUBY": "the Ruby interpreter reads it (RUBYLIB, RUBYOPT)",
    "NODE_": "Node.js reads it (NODE_OPTIONS, NODE_PATH)",
    "JAVA_TOOL": "the JVM reads it (JAVA_TOOL_OPTIONS)",
}
#: exact names the kernel sets itself or that make a program load files or code
ENV_DENIED_NAMES: dict[str, str] = {
    "PATH": "the kernel sets PATH", "HOME": "the kernel sets HOME",
    "LANG": "the kernel sets LANG", "TMPDIR": "the sandbox's /tmp is fixed",
    "ENV": "a shell runs the file it names", "IFS": "it changes how a shell splits words",
    "SHELL": "programs run the shell it names", "SHELLOPTS": "it changes shell behaviour",
    "PS4": "a shell expands it (code execution under xtrace)", "CDPATH": "it changes shell cd",
    "LOCPATH": "the C library loads locale files from it",
    "NLSPATH": "the C library loads message catalogues from it",
    "LOCALDOMAIN": "the resolver reads it", "HOSTALIASES": "the resolver reads the file it names",
    "RES_OPTIONS": "the resolver reads it", "TZDIR": "the C library loads zone files from it",
    "TERMINFO": "curses loads files from it", "TERMINFO_DIRS": "curses loads files from it",
    "GETCONF_DIR": "the C library runs programs from it",
}


def check_env_name(name: str) -> str:
    """Return ``name`` if a manifest may set it, else raise ValueError saying why not."""
    if not isinstance(name, str) or not ENV_NAME_RE.match(name):
        raise ValueError(
            "environment variable names must be 1-128 characters of A-Z, 0-9 and '_', "
            "starting with a letter (e.g. LOG_LEVEL)")
    if name in ENV_DENIED_NAMES:
        raise ValueError(f"refused: {ENV_DENIED_NAMES[name]}")
    for prefix, why in ENV_DENIED_PREFIXES.items():
        if name.startswith(prefix):
            raise ValueError(f"refused: {why}")
    return name


def _check_env_value(value: str) -> str:
    if "\x00" in value:
        raise ValueError("an environment value cannot contain a NUL character")
    if len(value.encode("utf-8", "surrogatepass")) > ENV_MAX_VALUE:
        raise ValueError(f"an environment value is at most {ENV_MAX_VALUE} bytes")
    return value


EnvName = Annotated[str, AfterValidator(check_env_name)]
EnvValue = Annotated[str, AfterValidator(_check_env_value)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("cannot contain a NUL character")
    return value


ARG_MAX_BYTES = 64 * 1024         # one argument (the OS refuses above 128 KiB)
ARGS_MAX_TOTAL = 256 * 1024       # all arguments together (well inside ARG_MAX)
Arg = Annotated[str, Field(max_length=ARG_MAX_BYTES), AfterValidator(_no_nul)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else f"{x:g}"


def _in_range(v: float | None, lo: float, hi: float, what: str) -> None:
    if v is not None and not lo <= v <= hi:
        raise ValueError(f"{what} must be between {_num(lo)} and {_num(hi)}, got {_num(v)}")


class Limits(_Model):
    """OS resource limits (enforced by the sandbox). Sizes in bytes, times in seconds.

    Every field is checked here against what the sandbox can apply (the ``*_RANGE``
    constants); ``nofile`` is further capped by the kernel's own hard limit at spawn.
    """

    memory: int | None = None
    cpu: float | None = Field(default=None, ge=CPU_RANGE[0], le=CPU_RANGE[1])
    pids: int | None = Field(default=None, ge=PIDS_RANGE[0], le=PIDS_RANGE[1])
    wall_clock: float | None = None
    nofile: int | None = Field(default=None, ge=NOFILE_RANGE[0], le=NOFILE_RANGE[1])
    disk: int | None = None

    @field_validator("memory", "disk", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"expected a size like '256M', got {v!r}")
        return None if v is None else parse_size(v)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | None) -> int | None:
        _in_range(v, *MEMORY_RANGE, "memory (bytes)")
        return v

    @field_validator("disk")
    @classmethod
    def _disk(cls, v: int | None) -> int | None:
        _in_range(v, *DISK_RANGE, "disk (bytes)")
        return v

    @field_validator("wall_clock", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        if v is None:
            return None
        secs = _finite_duration(v)
        if secs <= 0:
            raise ValueError("must be more than 0 s (there is no 'no limit' value; "
                             f"leave it unset for the kernel default, at most {WALL_CLOCK_MAX:g} s)")
        _in_range(secs, 0, WALL_CLOCK_MAX, "wall_clock (seconds)")
        return secs

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


_BIG = 10**15  # every integer stays far inside 64 bits (the audit log's canonical JSON)
_DURATION_MAX = 10 * 365 * 86400.0


def _finite_duration(v: Any) -> float:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"expected a duration like '10m', got {v!r}")
    secs = parse_duration(v)
    if not math.isfinite(secs) or secs > _DURATION_MAX:
        raise ValueError(f"a duration is at most {_DURATION_MAX:g} s")
    return secs


class Budget(_Model):
    """Inference and spawning budget (enforced by the kernel's budget checks)."""

    max_input_tokens: int | None = Field(default=None, ge=0, le=_BIG)
    max_output_tokens: int | None = Field(default=None, ge=0, le=_BIG)
    max_cost_usd: float | None = Field(default=None, ge=0, le=1e12)
    max_wall_clock: float | None = None
    max_children: int | None = Field(default=None, ge=0, le=1_000_000)
    max_tool_calls: int | None = Field(default=None, ge=0, le=_BIG)
    warn_at: float = Field(default=0.8, gt=0, le=1)
    reset_period: float | None = None

    @field_validator("max_wall_clock", "reset_period", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else _finite_duration(v)


class MemoryConfig(_Model):
    """Episodic memory settings."""

    enabled: bool = False
    max_records: int = Field(default=10_000, ge=0, le=10_000_000)
    max_record_bytes: int = Field(default=16_384, ge=1, le=16 * MIB)
    shared_identity: str | None = Field(default=None, max_length=256)


class CapabilityEntry(_Model):
    """One limited grant set of a manifest's ``capabilities`` list."""

    grant: list[str] | str
    max_invocations: int | None = Field(default=None, ge=0, le=_BIG)
    expires: float | None = None  # seconds from the spawn

    @field_validator("expires", mode="before")
    @classmethod
    def _expires(cls, v: Any) -> float | None:
        return None if v is None else _finite_duration(v)

    def grant_strings(self) -> list[str]:
        return [self.grant] if isinstance(self.grant, str) else list(self.grant)


class Manifest(_Model):
    name: str
    model: str | None = None
    system_prompt: str | None = None
    program: Arg | None = None
    args: list[Arg] = Field(default_factory=list, max_length=256)
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
    #: set inside the sandbox after confinement; names from an allowlist of shapes with
    #: dangerous names refused (``check_env_name``); values bounded, no NUL
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=ENV_MAX_VARS)
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

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        total = sum(len(a.encode("utf-8", "surrogatepass")) + 1 for a in v)
        if total > ARGS_MAX_TOTAL:
            raise ValueError(f"the arguments are at most {ARGS_MAX_TOTAL} bytes together, got {total}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        total = sum(len(k) + len(x.encode("utf-8", "surrogatepass")) for k, x in v.items())
        if total > ENV_MAX_TOTAL:
            raise ValueError(f"the environment is at most {ENV_MAX_TOTAL} bytes of names and "
                             f"values together, got {total}")
        return v

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _loc(e: Any) -> str:
    """``env.LD_PRELOAD`` for an error on a mapping key (pydantic adds a ``[key]`` part)."""
    return ".".join(str(x) for x in e["loc"] if x != "[key]") or "(manifest)"


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see docs/manifest.md)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{_loc(e)}: {msg}")
    return "; ".join(parts)


def _describe_redacted(err: ValidationError) -> tuple[str, str]:
    """Field names only where they are the manifest's own fields; never a value or a key
    taken from the file (the caller may not be able to read the file the kernel read)."""
    known = set(Manifest.model_fields)
    fields: list[str] = []
    unknown = 0
    for e in err.errors():
        top = str(e["loc"][0]) if e["loc"] else "(manifest)"
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1 or top not in known:
            unknown += 1
            continue
        sub = e["loc"][1] if len(e["loc"]) > 1 else None
        model = Manifest.model_fields[top].annotation
        sub_known = isinstance(sub, str) and sub in getattr(model, "model_fields", {})
        name = f"{top}.{sub}" if sub_known else top
        if name not in fields:
            fields.append(name)
    what = ", ".join(fields)
    if unknown:
        what += (", " if what else "") + f"{unknown} unknown field(s)"
    return what, (fields[0] if fields else "(manifest)")


def parse_manifest(data: Any, *, redact: bool = False) -> Manifest:
    """Validate decoded manifest data; raise InvalidRequest naming the bad field.

    ``redact`` (for a file the kernel read on the caller's behalf): the message names the
    manifest fields that are wrong and counts unknown ones, but echoes nothing of the data.
    """
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"a manifest must be a mapping of fields, got {type(data).__name__}",
            field="(manifest)",
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        if redact:
            what, field = _describe_redacted(err)
            raise InvalidRequest(
                f"invalid manifest: wrong fields: {what} (details are not shown for a file the "
                "kernel read; check it with `agentix spawn` from a shell that can read it)",
                field=field) from None
        first = err.errors()[0]
        raise InvalidRequest(f"invalid manifest: {_describe(err)}", field=_loc(first)) from None
    except RecursionError:
        raise InvalidRequest("invalid manifest: nested too deeply", field="(manifest)") from None


MAX_MANIFEST_TEXT = 1024 * 1024


def decode_manifest_text(text: str, *, redact: bool = False) -> Any:
    """Decode YAML or JSON manifest text (at most ``MAX_MANIFEST_TEXT`` characters)."""
    if len(text) > MAX_MANIFEST_TEXT:
        raise InvalidRequest(f"a manifest is at most {MAX_MANIFEST_TEXT} bytes", field="(manifest)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        if redact:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise InvalidRequest(f"manifest is not valid YAML or JSON{where}",
                                 field="(manifest)") from None
        raise InvalidRequest(f"manifest is not valid YAML or JSON: {err}", field="(manifest)") from None
    except RecursionError:
        raise InvalidRequest("manifest is nested too deeply", field="(manifest)") from None


def load_manifest_text(text: str, *, redact: bool = False) -> Manifest:
    """Decode YAML or JSON manifest text and validate it."""
    return parse_manifest(decode_manifest_text(text, redact=redact), redact=redact)
