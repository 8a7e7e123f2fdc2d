"""The ``Agentfile``: how an agent package is built (pure: text in, a typed model out).
(Over 400 lines: one parser: the schema, its checks and the errors that point at a line belong
together.)

An Agentfile is YAML or JSON (JSON is YAML, so one decoder serves both) with
``apiVersion: agentix/v1``::

    apiVersion: agentix/v1
    metadata:
      name: hello                 # the package's name (its agent's default name)
      version: 1.0.0              # semantic version; signatures bind it
      description: says hello
      authors: [Ada <ada@example.org>]
      license: Apache-2.0
    stages:                       # only the LAST stage's layers are the package
      - name: main
        steps:
          - copy: agent/          # a file or directory under the build context
            to: agent/            # where it lands in the package (default: the same path)
          # - run: [python3, gen.py]          a build command, sandboxed (packages/build.py)
          #   network: [pypi.org]             hosts it may reach (default: none), via the kernel's proxy
          # - {copy: out/, from: builder}     from an earlier stage's result
    dependencies:
      python: [six==1.17.0]       # pinned wheels, installed under deps/python
      packages: [team/lib:1.0.0]  # other agentix packages (verified, pinned), under deps/packages/NAME
    agent:
      program: agent/             # a .py file or a package directory (with __main__.py) in the package
      args: []
      env: {GREETING: hi}
    capabilities:                 # manifest grant strings: the CEILING the agent may ever hold
      - "file_write: /workspace/out/*"
    limits: {memory: 256M, wall_clock: 5m}

or, for an LLM agent, ``agent: {llm: {model: ..., system_prompt: ..., tools: [...]}}``.

``parse_agentfile_text`` decodes, validates once with pydantic, and raises
``InvalidRequest`` whose message and ``data`` name the *line* and the *field* that is
wrong. Nothing else in the package code re-validates.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_validator)

from agentix.core.errors import InvalidRequest
from agentix.core.hosts import parse_host_pattern
from agentix.core.manifest import NAME_RE, Budget, Limits
from agentix.core.refs import parse_ref

__all__ = [
    "API_VERSION",
    "AgentSpec",
    "Agentfile",
    "CopyStep",
    "Dependencies",
    "LlmSpec",
    "Metadata",
    "RunStep",
    "BuildStage",
    "parse_agentfile_text",
    "parse_semver",
]

API_VERSION = "agentix/v1"
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)
#: a relative path inside the build context or the package: no '..', no absolute paths
_REL_PART = re.compile(r"^[A-Za-z0-9_.@+-][A-Za-z0-9_.@+ -]*\Z")


def parse_semver(v: str) -> tuple[int, int, int, tuple[tuple[int, int | str], ...] | None]:
    """A sortable key for a semantic version (pre-releases sort before the release)."""
    m = SEMVER_RE.match(v)
    if not m:
        raise ValueError(f"{v!r} is not a semantic version such as 1.2.3")
    pre = None
    if m.group(4):
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in m.group(4).split("."))  # type: ignore[misc]
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), pre


def semver_key(v: str) -> tuple[Any, ...]:
    major, minor, patch, pre = parse_semver(v)
    # a release (no pre-release) sorts after all of its pre-releases
    return (major, minor, patch, 1 if pre is None else 0, pre or ())


def check_relative(path: str, what: str) -> str:
    """Normalise a relative POSIX path; refuse absolute paths, '..', empty parts."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{what} must be a non-empty relative path")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise ValueError(f"{what} {path!r} must be a relative path inside the build context")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for p in parts:
        if p == ".." or not _REL_PART.match(p):
            raise ValueError(f"{what} {path!r}: part {p!r} is not allowed (no '..', no control characters)")
    return "/".join(parts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Model):
    name: str
    version: str
    description: str | None = None
    authors: list[str] = Field(default_factory=list)
    license: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 characters of lowercase letters, digits, '_', '.' or '-', "
                             "starting with a letter or digit")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        parse_semver(v)
        return v


class CopyStep(_Model):
    """Copy a file or directory from the build context into the package."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="copy")
    to: str | None = None
    #: copy from an earlier stage's result instead of the build context (multi-stage builds)
    from_stage: str | None = Field(default=None, alias="from")

    @field_validator("source")
    @classmethod
    def _src(cls, v: str) -> str:
        return check_relative(v, "copy source") or "."

    @field_validator("to")
    @classmethod
    def _dest(cls, v: str | None) -> str | None:
        return None if v is None else check_relative(v, "copy destination")

    def destination(self) -> str:
        return self.to if self.to is not None else self.source

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"copy": self.source, "to": self.destination()}
        if self.from_stage is not None:
            d["from"] = self.from_stage
        return d


class RunStep(_Model):
    """A build command (argv, never a shell string), run inside the agentix sandbox with the
    build tree as /workspace and no network — unless ``network`` names hosts (``network:``
    grant patterns): then only those, through the kernel's build proxy (packages/build.py)."""

    run: list[str] = Field(min_length=1)
    timeout: float = Field(default=300.0, gt=0, le=3600)
    #: the hosts this step may reach (patterns as in a ``network:`` grant), sorted; empty: none
    network: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("network", mode="before")
    @classmethod
    def _hosts_text(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("network")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for text in v:
            try:
                out.append(str(parse_host_pattern(text)))
            except InvalidRequest as err:
                raise ValueError(str(err)) from None
        return sorted(set(out))

    @field_validator("run")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not v[0] or "/" in v[0]:
            raise ValueError("run[0] must be a program name found on the sandbox's PATH, not a path")
        return v

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"run": list(self.run), "timeout": self.timeout}
        if self.network:  # absent when empty: the digests of packages without it stay the same
            d["network"] = list(self.network)
        return d


def _step_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        return "copy" if "copy" in v else "run" if "run" in v else None
    return "copy" if isinstance(v, CopyStep) else "run" if isinstance(v, RunStep) else None


Step = Annotated[Union[Annotated[CopyStep, Tag("copy")], Annotated[RunStep, Tag("run")]],
                 Discriminator(_step_kind)]


class BuildStage(_Model):
    """A named list of steps. A stage starts from an earlier stage's result (``from: STAGE``)
    or, without one, from the base package and the dependency layer (if any)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = "main"
    from_stage: str | None = Field(default=None, alias="from")
    steps: list[Step] = Field(default_factory=list)


#: a pinned Python requirement: a distribution name and an exact version (no options, no URLs)
PINNED_REQUIREMENT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?==[A-Za-z0-9][A-Za-z0-9.!+_-]*\Z")


class Dependencies(_Model):
    """What the package needs besides its own files, resolved into one layer at build time."""

    #: Python distributions, each pinned ``name==version`` (transitive ones listed too, as a
    #: lock file lists them): wheels only, installed under ``deps/python`` in the package
    python: list[str] = Field(default_factory=list, max_length=500)
    #: other agentix packages (``NAME:TAG`` or ``NAME@sha256:…``), sorted: each verified under the
    #: trust policy, pinned by digest in the config, its files under ``deps/packages/NAME``
    packages: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("packages")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                parse_ref(text, default_tag=None)
            except InvalidRequest as err:
                raise ValueError(str(err)) from None
        dup = sorted({r for r in v if v.count(r) > 1})
        if dup:
            raise ValueError(f"listed more than once: {dup}")
        return sorted(v)

    @field_validator("python")
    @classmethod
    def _pinned(cls, v: list[str]) -> list[str]:
        for req in v:
            if not isinstance(req, str) or not PINNED_REQUIREMENT.match(req):
                raise ValueError(f"{req!r}: give each Python dependency as NAME==VERSION (pinned, no "
                                 "options or URLs; list transitive dependencies too, as pip-compile does)")
        names = [r.split("==")[0].lower().replace("_", "-").replace(".", "-") for r in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"listed more than once: {dup}")
        return sorted(v, key=str.lower)


class LlmSpec(_Model):
    model: str | None = None
    system_prompt: str | None = None
    tools: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    max_iterations: int = Field(default=50, ge=1, le=10_000)


class AgentSpec(_Model):
    program: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    llm: LlmSpec | None = None

    @field_validator("program")
    @classmethod
    def _program(cls, v: str | None) -> str | None:
        return None if v is None else check_relative(v, "program")

    @model_validator(mode="after")
    def _one_kind(self) -> AgentSpec:
        if (self.program is None) == (self.llm is None):
            raise ValueError("give exactly one of `program:` (a file or directory in the package) or `llm:`")
        return self


class Agentfile(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    apiVersion: Literal["agentix/v1"]
    metadata: Metadata
    #: a base package (NAME:TAG or NAME@DIGEST): its layers come first, its agent is the default
    base: str | None = Field(default=None, alias="from")

    @field_validator("base")
    @classmethod
    def _base_ref(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_ref(v)
            except InvalidRequest as err:
                raise ValueError(str(err)) from None
        return v

    dependencies: Dependencies = Field(default_factory=Dependencies)
    stages: list[BuildStage] = Field(default_factory=list)
    agent: AgentSpec | None = None
    capabilities: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    budget: Budget = Field(default_factory=Budget)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _caps(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, dict):  # {file_read: [/a/*], tool: echo} like manifests
            out: list[str] = []
            for key, val in v.items():
                out.extend(f"{key}: {x}" for x in (val if isinstance(val, list) else [val]))
            return out
        return v

    @model_validator(mode="after")
    def _stage_names(self) -> Agentfile:
        names = [s.name for s in self.stages]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"stage names must be unique: {sorted(dup)}")
        if self.agent is None and self.base is None:
            raise ValueError("give `agent:` (a program or an llm) — only a package built `from:` a base "
                             "package may leave it out and run the base's agent")
        return self

    def manifest_data(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The agent manifest the package's config carries (capabilities = the ceiling).
        Without ``agent:``, the agent of ``base`` (the base package's manifest) is run — its
        program, arguments, environment and model; never its capabilities, limits or budget:
        a package declares its own ceiling."""
        m: dict[str, Any] = {"name": self.metadata.name, "description": self.metadata.description,
                             "capabilities": list(self.capabilities),
                             "limits": self.limits.model_dump(mode="json", exclude_defaults=True),
                             "budget": self.budget.model_dump(mode="json", exclude_defaults=True)}
        if self.agent is None:
            inherited = ("program", "args", "env", "model", "system_prompt", "max_iterations")
            m.update({k: v for k, v in (base or {}).items() if k in inherited})
            if "program" not in m:
                raise InvalidRequest("the base package has no agent program to inherit; give `agent:`",
                                     field="agent")
        else:
            m.update(args=list(self.agent.args), env=dict(self.agent.env))
            if self.agent.program is not None:
                m["program"] = self.agent.program
            else:
                assert self.agent.llm is not None
                llm = self.agent.llm
                m.update(program="module:agentix.agents.loop", model=llm.model,
                         system_prompt=llm.system_prompt, max_iterations=llm.max_iterations)
        return {k: v for k, v in m.items() if v is not None}


# ---------------------------------------------------------------- errors with lines
def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at ``loc`` (or its nearest ancestor); True if the exact node was found."""
    node = root
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    node = v
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node, False
    return node, True


def _key_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the field named by ``loc`` (its key when it has one)."""
    if root is None:
        return None
    parent, found = _node_at(root, loc[:-1]) if loc else (root, True)
    if loc and found and isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(loc[-1]):
                return k.start_mark.line + 1
    node, _ = _node_at(root, loc)
    return None if node is None else node.start_mark.line + 1


def _loc(e: dict[str, Any]) -> tuple[Any, ...]:
    """The error's field path, without the tag pydantic inserts after a step's index."""
    loc = list(e["loc"])
    out: list[Any] = []
    i = 0
    while i < len(loc):
        out.append(loc[i])
        if loc[i] == "steps" and i + 2 < len(loc) and isinstance(loc[i + 1], int) and loc[i + 2] in ("copy", "run"):
            out.append(loc[i + 1])
            i += 3
            continue
        i += 1
    return tuple(out)


def parse_agentfile_text(text: str, source: str = "Agentfile") -> Agentfile:
    """Decode YAML or JSON Agentfile text and validate it; errors name the line and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InvalidRequest(
            f"{source}{f':{line}' if line else ''}: not valid YAML or JSON: "
            f"{getattr(err, 'problem', None) or err}", field="(agentfile)", line=line) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{source}: an Agentfile must be a mapping of fields, got {type(data).__name__}",
                             field="(agentfile)", line=1)
    if data.get("apiVersion") != API_VERSION:
        line = _key_line(root, ("apiVersion",)) or 1
        raise InvalidRequest(
            f"{source}:{line}: apiVersion: must be {API_VERSION!r}, got {data.get('apiVersion')!r}",
            field="apiVersion", line=line)
    try:
        af = Agentfile.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        # a union of step kinds reports every member; keep the most specific one per place
        first = errors[0]
        loc = _loc(first)
        # a missing field is reported at the line of the mapping that lacks it
        line = _key_line(root, loc[:-1] if first["type"] == "missing" and len(loc) > 1 else loc)
        field = ".".join(str(x) for x in loc) or "(agentfile)"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see docs/packages.md)"
        elif first["type"] == "missing":
            msg = "required field is missing"
        elif first["type"] in ("union_tag_not_found", "union_tag_invalid"):
            msg = "a step must be a mapping with `copy:` or `run:`"
        raise InvalidRequest(f"{source}:{line}: {field}: {msg}", field=field, line=line) from None
    seen: list[str] = []
    for si, stage in enumerate(af.stages):
        if stage.from_stage is not None and stage.from_stage not in seen:
            loc = ("stages", si, "from")
            line = _key_line(root, loc)
            field = ".".join(str(x) for x in loc)
            raise InvalidRequest(f"{source}:{line}: {field}: {stage.from_stage!r} is not an earlier stage "
                                 f"(earlier stages: {', '.join(seen) or 'none'}; a base package is the "
                                 "top-level `from:`)", field=field, line=line)
        for i, step in enumerate(stage.steps):
            if isinstance(step, CopyStep) and step.from_stage is not None and step.from_stage not in seen:
                loc = ("stages", si, "steps", i, "from")
                line = _key_line(root, loc)
                field = ".".join(str(x) for x in loc)
                raise InvalidRequest(f"{source}:{line}: {field}: {step.from_stage!r} is not an earlier stage "
                                     f"(earlier stages: {', '.join(seen) or 'none'})", field=field, line=line)
        seen.append(stage.name)
    return af
