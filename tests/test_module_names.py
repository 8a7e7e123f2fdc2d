"""Names are unique across the tree (issue #13): a reader who sees a module's file name or a
class's name knows which one is meant, without the package in front of it.

The rule for modules: a basename appears once under src/agentix, except

* ``__init__.py``, ``__main__.py`` and package-private ``_``-modules (``sdk/_tools.py``,
  ``adapters/_tools.py``): nothing outside their package imports them by name;
* the public SDK modules (``agentix.sdk.audit``, ``.errors``, ``.kernel``, ``.agent``: paths users
  import, documented in docs/sdk.md), which are named after what they face below them;
* the role names in ``ROLES``: the same job in each package that has one (a package's backend
  interface, a face's server), allowed only in the packages listed there;
* the files of an agent program directory (``demo/agents/<name>/``): programs copied into a
  sandbox, named for their part in that program (``worker.py``), never imported by the tree.

The rule for classes: a public (not ``_``-prefixed) module-level class name is defined once
under src/agentix; a second one must take another name (``KernelRoot`` beside the SDK's
``Kernel``; ``CallRow`` beside ``dispatch.Call``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "agentix"

#: basename -> {package: the job the module does there}; a role name elsewhere is a collision
ROLES: dict[str, dict[str, str]] = {
    "base.py": {"sandbox": "the Substrate interface every sandbox backend implements",
                "llm": "the Provider interface and the records every provider returns",
                "tools": "the tool interface (ToolSpec, ToolContext) and the registry"},
    "server.py": {"rpc": "the kernel's JSON-RPC server (Unix sockets)",
                  "a2a": "the A2A face's server", "mcp": "the MCP face's server"},
    "http.py": {"rpc": "the kernel's HTTP face", "mcp": "the MCP face over streamable HTTP"},
}


def _exempt(rel: Path) -> bool:
    name = rel.name
    if name in ("__init__.py", "__main__.py") or name.startswith("_"):
        return True
    if rel.parts[0] == "sdk":
        return True
    # demo/agents/<program>/<file>.py: a program directory's own files
    if rel.parts[:2] == ("demo", "agents") and len(rel.parts) >= 4:
        return True
    package = rel.parts[-2] if len(rel.parts) > 1 else ""
    return package in ROLES.get(name, {})


def module_collisions(src: Path) -> dict[str, list[str]]:
    """Each basename under ``src`` held by more than one module the rule does not exempt."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if "__pycache__" in rel.parts or _exempt(rel):
            continue
        seen[rel.name].append(str(rel))
    return {name: paths for name, paths in seen.items() if len(paths) > 1}


def class_collisions(src: Path) -> dict[str, list[str]]:
    """Each public module-level class name defined in more than one place under ``src``."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in sorted(src.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                seen[node.name].append(f"{path.relative_to(src)}:{node.lineno}")
    return {name: where for name, where in seen.items() if len(where) > 1}


def test_a_module_basename_means_one_module() -> None:
    found = module_collisions(SRC)
    assert not found, ("module names that repeat across packages (rename the internal one after "
                       f"its job, or add a role to ROLES saying why): {found}")


def test_a_public_class_name_means_one_class() -> None:
    found = class_collisions(SRC)
    assert not found, f"public class names defined twice (give one a name of its own): {found}"


def test_the_rules_see_a_collision(tmp_path: Path) -> None:
    """The checks themselves: a repeated basename or class is caught; the exemptions hold."""
    def put(rel: str, text: str = "") -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)

    put("core/snapshot.py", "class GrantGroup: ...\n")
    put("packages/snapshot.py", "class GrantGroup: ...\nclass _Private: ...\n")
    put("kernel/_private.py", "class _Private: ...\n")
    put("store/_private.py")
    put("core/errors.py")
    put("sdk/errors.py")
    put("llm/base.py")
    put("tools/base.py")
    put("demo/agents/team/worker.py")
    put("demo/agents/isolation/worker.py")
    assert module_collisions(tmp_path) == {"snapshot.py": ["core/snapshot.py", "packages/snapshot.py"]}
    assert list(class_collisions(tmp_path)) == ["GrantGroup"]
    put("cli/base.py")  # a role name outside the packages it is allowed in
    put("web/base.py")
    assert module_collisions(tmp_path)["base.py"] == ["cli/base.py", "web/base.py"]


def test_every_all_is_one_literal_list_assigned_once() -> None:
    """A module's public names are read in one place, at its top: ``__all__`` is assigned once, a
    literal list of string literals naming what the module defines, and never appended to,
    extended or reassigned further down (issue #13: ``__all__.append`` at module bottoms)."""
    #: modules whose ``__all__`` is another module's, re-exported (and why)
    reexports = {"agentix/sdk/errors.py": "the SDK's errors are core.errors' classes, under the SDK's name"}
    bad: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(SRC.parent)
        if rel.as_posix() in reexports:
            continue
        assigned = 0
        for node in ast.walk(tree):
            target_names = []
            if isinstance(node, ast.Assign):
                target_names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
                target_names = [node.target.id]
                if isinstance(node, ast.AugAssign) and node.target.id == "__all__":
                    bad.append(f"{rel}:{node.lineno}: __all__ extended with +=")
            if "__all__" in target_names:
                assigned += 1
                value = node.value
                if not (isinstance(value, (ast.List, ast.Tuple))
                        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts)):
                    bad.append(f"{rel}:{node.lineno}: __all__ is not a literal list of names")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "__all__"):
                bad.append(f"{rel}:{node.lineno}: __all__.{node.func.attr}(...)")
        if assigned > 1:
            bad.append(f"{rel}: __all__ assigned {assigned} times")
    assert not bad, "\n".join(bad)
