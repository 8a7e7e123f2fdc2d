"""What an agent runs: its manifest as a request states it, and its program copied in.

``parse_spawn_manifest`` reads an ``agent.spawn`` request's manifest (inline, or a file the
kernel opens without blocking and never echoes); ``install_program`` copies a program file or
package directory into a new workspace through the safe walker (bounded by
``PROGRAM_BOUNDS``); ``check_host_limits`` refuses limits this kernel process cannot grant.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import stat
from pathlib import Path
from typing import Any

from agentix.core.errors import InvalidRequest
from agentix.core.manifest import MAX_MANIFEST_TEXT, Limits, Manifest, load_manifest_text, parse_manifest
from agentix.kernel.process import AgentRecord
from agentix.sandbox import safewalk

__all__ = ["BOOT_MODULE", "MODULE_PREFIX", "PROGRAM_BOUNDS", "builtin_program_exists", "check_host_limits",
           "install_program", "parse_spawn_manifest"]

BOOT_MODULE = "agentix.agents.boot"
MODULE_PREFIX = "module:"
#: what one spawn may copy into a workspace (a program file or package directory)
PROGRAM_BOUNDS = safewalk.Bounds(max_bytes=64 * 1024**2, max_entries=10_000, max_depth=32)


def install_program(program: str, workspace: Path, parent: AgentRecord | None, base: Path | None) -> str:
    """Copy the program into the workspace; return what boot runs (relative path or module:).

    Every copy goes through the safe walker (``sandbox/safewalk.py``): a child's program
    is opened below its parent's workspace one component at a time without following a
    link; an operator's program file or directory is opened without following a link as
    its last component. Only regular files and directories are copied; a symlink, FIFO,
    socket or device anywhere is refused, and so is a copy over ``PROGRAM_BOUNDS``.
    """
    if program.startswith(MODULE_PREFIX):
        module = program[len(MODULE_PREFIX):]
        if not module.startswith("agentix.agents.") or not all(
                p.isidentifier() for p in module.split(".")):
            raise InvalidRequest(
                f"program {program!r}: only built-in programs under agentix.agents can be "
                "named as modules", field="program")
        if not builtin_program_exists(module):
            raise InvalidRequest(
                f"program {program!r}: there is no built-in program {module}; built-in "
                "programs are modules under agentix.agents (e.g. module:agentix.agents.loop)",
                field="program")
        return program
    try:
        if parent is not None:
            # a path inside the parent's own workspace
            rel = program.removeprefix("/workspace/") if program.startswith("/workspace/") else program
            if program.startswith("/") and not program.startswith("/workspace/"):
                raise safewalk.WalkError(program, "must be a path inside your workspace")
            root = safewalk.open_dir(parent.workspace)
            try:
                fd, st = safewalk.open_beneath(root, rel)
            finally:
                os.close(root)
            shown = program
        else:
            src = Path(program)
            if not src.is_absolute():
                if base is None:
                    raise InvalidRequest(
                        f"program {program!r} must be an absolute path (the CLI and SDK resolve "
                        "relative paths for you)", field="program")
                src = base / src
            if src.name in ("", ".", ".."):
                raise safewalk.WalkError(str(src), "must name a file or directory")
            d = safewalk.open_dir(src.parent)
            try:
                fd, st = safewalk.open_beneath(d, src.name)
            finally:
                os.close(d)
            shown = str(src)
        try:
            name = shown.rstrip("/").rsplit("/", 1)[-1]
            if stat.S_ISREG(st.st_mode) and not name.endswith(".py"):
                raise InvalidRequest(f"program {shown} must be a .py file or a package directory",
                                     field="program")
            ws = safewalk.open_dir(workspace, follow=False)
            try:
                safewalk.copy_entry(fd, st, ws, name, bounds=PROGRAM_BOUNDS, special="refuse",
                                    skip_names=frozenset({"__pycache__"}), skip_suffixes=(".pyc",))
                if stat.S_ISDIR(st.st_mode):
                    try:
                        main = os.stat(f"{name}/__main__.py", dir_fd=ws, follow_symlinks=False)
                    except OSError:
                        main = None
                    if main is None or not stat.S_ISREG(main.st_mode):
                        raise InvalidRequest(f"program directory {shown} has no __main__.py",
                                             field="program")
            finally:
                os.close(ws)
        finally:
            os.close(fd)
    except safewalk.WalkError as err:
        where = f"{program}" if not err.path or err.path == program else f"{program} ({err.path})"
        raise InvalidRequest(f"program {where}: {err.why}; programs are copied as regular "
                             "files and directories only", field="program") from None
    return name


def builtin_program_exists(module: str) -> bool:
    """Whether ``module`` (under agentix.agents, already checked) can be run by boot."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def parse_spawn_manifest(params: dict[str, Any]) -> tuple[Manifest, Path | None]:
    """The manifest of an ``agent.spawn`` request: inline (an object, or YAML/JSON text in
    ``manifest_text``: what the dashboard's paste box sends), or read from ``manifest_path``.

    The SDK and CLI read a manifest file themselves (with the operator's own permissions)
    and send it inline. A ``manifest_path`` the kernel reads for a caller is opened without
    blocking (a FIFO or device is refused), read up to ``MAX_MANIFEST_TEXT`` bytes, and its
    errors never echo the file's content: the caller may not be able to read that file.
    """
    if params.get("manifest_text") is not None and (params.get("manifest") is not None
                                                    or params.get("manifest_path") is not None):
        raise InvalidRequest('give one of "manifest", "manifest_text" or "manifest_path", not several',
                             field="manifest_text")
    if "manifest" in params and params["manifest"] is not None:
        base = params.get("base_dir")
        if isinstance(base, str) and not os.path.isabs(base):
            raise InvalidRequest("base_dir must be absolute", field="base_dir")
        return parse_manifest(params["manifest"]), Path(base) if isinstance(base, str) else None
    text = params.get("manifest_text")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidRequest('"manifest_text" must be the manifest as YAML or JSON text',
                                 field="manifest_text")
        if len(text.encode()) > MAX_MANIFEST_TEXT:
            raise InvalidRequest(f'"manifest_text" is longer than {MAX_MANIFEST_TEXT} bytes',
                                 field="manifest_text")
        # no base: a relative program is refused (there is no file to resolve it against)
        return load_manifest_text(text), None
    path = params.get("manifest_path")
    if not isinstance(path, str):
        raise InvalidRequest('agent.spawn needs "manifest" (an object), "manifest_text" (YAML or JSON) '
                             'or "manifest_path"', field="manifest")
    if "\x00" in path or not os.path.isabs(path):
        raise InvalidRequest("manifest_path must be absolute", field="manifest_path")
    p = Path(path)
    try:
        data = safewalk.read_file(None, str(p), MAX_MANIFEST_TEXT)
    except safewalk.WalkError as err:
        raise InvalidRequest(f"cannot read manifest {p}: {err.why}", field="manifest_path") from None
    text = data.decode("utf-8", errors="replace")
    return load_manifest_text(text, redact=True), p.parent


def check_host_limits(limits: Limits) -> None:
    """Limits the manifest model cannot judge alone: what this kernel process can grant."""
    if limits.nofile is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and limits.nofile > hard:
            raise InvalidRequest(
                f"invalid manifest: limits.nofile: {limits.nofile} is above the kernel's own hard "
                f"limit of {hard} open files (an unprivileged sandbox cannot be granted more)",
                field="limits.nofile", limit=hard)

