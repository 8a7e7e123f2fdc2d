"""Skill discovery and skill_read, confined to each skill's folder.

Skills are found in, by rising precedence (a later one with the same name wins):
the skills shipped in ``agentix/skills/``, ``<project>/.agents/skills/``, and each
directory of ``$AGENTIX_SKILLS_DIR`` (``:``-separated). A folder whose SKILL.md is
invalid is skipped and reported in ``SkillCatalog.errors``; it never enters the
catalogue.

``skill_read {skill_name, file?}`` returns the SKILL.md body, or a file of the skill's
folder. The file path is relative to the folder: absolute paths, ``..`` and symlinks
anywhere on the path (checked on the object opened, ``O_NOFOLLOW`` per component) are
refused with ``capability_denied``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentix.core.errors import AgentixError, CapabilityDenied, InvalidRequest, NotFound
from agentix.core.skill_rules import Skill, catalogue, parse_skill_md
from agentix.tools.base import ToolContext, ToolSpec

__all__ = ["SHIPPED_SKILLS", "SkillCatalog", "default_skill_dirs", "make_specs"]

log = logging.getLogger(__name__)

SHIPPED_SKILLS = Path(__file__).resolve().parent.parent / "skills"
MAX_FILE = 512 * 1024


def default_skill_dirs(environ: dict[str, str] | None = None, project: Path | None = None) -> list[Path]:
    """Shipped skills, then ``<project>/.agents/skills``, then ``$AGENTIX_SKILLS_DIR``."""
    env = os.environ if environ is None else environ
    dirs = [SHIPPED_SKILLS]
    if project is not None:
        dirs.append(project / ".agents" / "skills")
    dirs += [Path(p).expanduser() for p in env.get("AGENTIX_SKILLS_DIR", "").split(":") if p]
    return dirs


@dataclass
class SkillCatalog:
    skills: dict[str, Skill] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def discover(cls, dirs: list[Path]) -> SkillCatalog:
        cat = cls()
        for d in dirs:
            if not d.is_dir():
                continue
            for sub in sorted(d.iterdir()):
                if sub.is_symlink() or not sub.is_dir():
                    continue
                md = sub / "SKILL.md"
                if not md.is_file() or md.is_symlink():
                    continue
                try:
                    skill = parse_skill_md(md.read_text(encoding="utf-8"), folder=sub.name)
                except (AgentixError, OSError, UnicodeDecodeError) as err:
                    msg = getattr(err, "message", str(err))
                    log.warning("skipping skill %s: %s", sub, msg)
                    cat.errors.append({"path": str(sub), "error": msg})
                    continue
                cat.skills[skill.name] = skill
                cat.folders[skill.name] = sub.resolve()
        return cat

    def catalogue(self) -> str:
        return catalogue(list(self.skills.values()))

    def list(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "description": s.description,
                 "allowed_tools": list(s.allowed_tools) if s.allowed_tools is not None else None}
                for s in sorted(self.skills.values(), key=lambda s: s.name)]

    def get(self, name: str) -> Skill:
        if not isinstance(name, str) or name not in self.skills:
            raise NotFound(f"no skill named {name!r}; the catalogue lists: "
                           f"{', '.join(sorted(self.skills)) or '(none)'}", field="skill_name")
        return self.skills[name]

    def read(self, name: str, file: str | None = None) -> dict[str, Any]:
        skill = self.get(name)
        if file is None or file in ("", "SKILL.md"):
            return {"skill": name, "file": "SKILL.md", "content": skill.body,
                    "allowed_tools": list(skill.allowed_tools) if skill.allowed_tools is not None else None}
        return {"skill": name, "file": file, "content": _read_confined(self.folders[name], file)}


def _read_confined(root: Path, rel: str) -> str:
    if not isinstance(rel, str) or "\x00" in rel:
        raise InvalidRequest("file must be a string", field="file")
    if rel.startswith("/") or rel.startswith("\\"):
        raise CapabilityDenied(f"{rel}: absolute paths are refused; name a file inside the skill's folder",
                               reason="absolute", path=rel)
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CapabilityDenied(f"{rel}: '..' is refused; skill files stay inside the skill's folder",
                               reason="dotdot", path=rel)
    if not parts:
        raise InvalidRequest("file must name a file", field="file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            nfd = os.open(name, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(parts[-1], flags, dir_fd=fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CapabilityDenied(f"{rel}: symlinks are not followed in skill folders",
                                   reason="symlink", path=rel) from None
        if isinstance(err, FileNotFoundError):
            raise NotFound(f"{rel}: no such file in the skill's folder", path=rel) from None
        raise InvalidRequest(f"{rel}: {err.strerror}", field="file") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(ffd).st_mode):
        os.close(ffd)
        raise InvalidRequest(f"{rel}: not a regular file", field="file")
    with os.fdopen(ffd, "rb") as f:
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise InvalidRequest(f"{rel}: larger than {MAX_FILE} bytes", field="file")
    return data.decode("utf-8", errors="replace")


def make_specs(catalog: SkillCatalog) -> list[ToolSpec]:
    async def skill_read(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(catalog.read, args["skill_name"], args.get("file"))

    async def skill_list(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return {"skills": catalog.list(), "catalogue": catalog.catalogue()}

    return [
        ToolSpec("skill_read", "Load a skill's instructions (SKILL.md body) or one of its reference files.",
                 {"type": "object", "properties": {
                     "skill_name": {"type": "string"},
                     "file": {"type": "string", "description": "a path inside the skill's folder"}},
                  "required": ["skill_name"], "additionalProperties": False}, skill_read,
                 durability="no_effect"),
        ToolSpec("skill_list", "List the skills available (name, description, allowed tools).",
                 {"type": "object", "properties": {}, "additionalProperties": False}, skill_list,
                 durability="no_effect"),
    ]
