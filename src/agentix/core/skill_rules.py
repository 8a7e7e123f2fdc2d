"""AgentSkills: parse a SKILL.md, build the catalogue, narrow tools while a skill applies.

A skill is a folder holding ``SKILL.md``: YAML frontmatter between ``---`` lines, then a
Markdown body. The frontmatter must have ``name`` (1-64 characters of lowercase letters,
digits and single hyphens, equal to the folder's name) and ``description`` (1-1024
characters, what the skill does and when to use it). Optional: ``allowed-tools`` (a list,
or a space/comma separated string) — while the skill applies, the agent's tools are
narrowed to these (intersected with what it already has, never widened); ``license``,
``compatibility``, ``metadata`` are kept as given. A SKILL.md that breaks these rules is
refused with ``InvalidRequest`` naming the field.

The catalogue is one line per skill, ``- name: description``, for the system prompt;
agents load a body on demand with ``skill_read`` (progressive disclosure).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentix.core.errors import InvalidRequest

__all__ = ["Skill", "catalogue", "narrow_tools", "parse_skill_md"]

SKILL_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_SKILL_MD = 256 * 1024
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    body: str
    allowed_tools: tuple[str, ...] | None = None   # None: no narrowing
    extra: dict[str, Any] = field(default_factory=dict)

    def catalogue_line(self) -> str:
        desc = " ".join(self.description.split())
        return f"- {self.name}: {desc}"


def _tools(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        items = [x for x in re.split(r"[\s,]+", value) if x]
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        items = [x.strip() for x in value if x.strip()]
    else:
        raise InvalidRequest("SKILL.md: allowed-tools must be a list of tool names or a "
                             "space-separated string", field="allowed-tools")
    return tuple(dict.fromkeys(items))


def parse_skill_md(text: str, folder: str | None = None) -> Skill:
    """Parse SKILL.md text; ``folder`` (the directory name) must equal ``name`` when given."""
    if len(text) > MAX_SKILL_MD:
        raise InvalidRequest(f"SKILL.md is larger than {MAX_SKILL_MD} characters", field="SKILL.md")
    m = _FRONT.match(text.lstrip("\ufeff"))
    if not m:
        raise InvalidRequest("SKILL.md must start with YAML frontmatter between '---' lines "
                             "holding name and description", field="frontmatter")
    try:
        front = yaml.safe_load(m.group(1))
    except yaml.YAMLError as err:
        raise InvalidRequest(f"SKILL.md frontmatter is not valid YAML: {err}", field="frontmatter") from None
    if not isinstance(front, dict):
        raise InvalidRequest("SKILL.md frontmatter must be a mapping", field="frontmatter")
    name, desc = front.get("name"), front.get("description")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("SKILL.md frontmatter: 'name' is required", field="name")
    if len(name) > MAX_NAME or not SKILL_NAME_RE.match(name):
        raise InvalidRequest(f"SKILL.md: name {name!r} must be 1-{MAX_NAME} lowercase letters, digits "
                             "and single hyphens", field="name")
    if folder is not None and folder != name:
        raise InvalidRequest(f"SKILL.md: name {name!r} must match its folder {folder!r}", field="name")
    if not isinstance(desc, str) or not desc.strip():
        raise InvalidRequest(f"SKILL.md of {name}: 'description' is required", field="description")
    if len(desc) > MAX_DESCRIPTION:
        raise InvalidRequest(f"SKILL.md of {name}: description is longer than {MAX_DESCRIPTION} characters",
                             field="description")
    allowed = _tools(front.get("allowed-tools", front.get("allowed_tools")))
    extra = {k: v for k, v in front.items()
             if k not in ("name", "description", "allowed-tools", "allowed_tools")}
    return Skill(name, desc.strip(), text[m.end():].lstrip("\n"), allowed, extra)


def catalogue(skills: list[Skill]) -> str:
    """The system-prompt block listing skills, one line each (empty when there are none)."""
    if not skills:
        return ""
    lines = ["Skills available (load one with skill_read {\"skill_name\": NAME} when a task matches it):"]
    lines += [s.catalogue_line() for s in sorted(skills, key=lambda s: s.name)]
    return "\n".join(lines)


def narrow_tools(tools: list[str], skill: Skill | None, always: tuple[str, ...] = ("skill_read",)) -> list[str]:
    """The tools an agent may use while ``skill`` applies: never more than it has."""
    if skill is None or skill.allowed_tools is None:
        return list(tools)
    keep = set(skill.allowed_tools) | set(always)
    return [t for t in tools if t in keep]
