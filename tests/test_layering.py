"""Imports point down only. Parses the AST of every module under src/agentix (every import
statement, including function-level and ``if TYPE_CHECKING:`` ones) and checks each against
the layer table below.

    core                                   pure: no I/O modules, no other agentix package
    store rpc llm sandbox tools memory packages   edges: core (and themselves) only
    kernel                                 the composition root: anything below it
    sdk                                    client library: core and itself (never the kernel)
    agents                                 in-sandbox programs: sdk only
    demo                                   `agentix demo` and its agents: sdk and core
    cli web mcp                            faces: sdk (and themselves) only; cli runs the demo

A new top-level package fails this test until it is given a place in ``ALLOWED``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "agentix"

EDGES = ("store", "rpc", "llm", "sandbox", "tools", "memory", "packages")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    **{edge: {"core", edge} for edge in EDGES},
    # the memory tools are the tool face of the memory store (both edges; memory is lower)
    "tools": {"core", "tools", "memory"},
    "kernel": {"core", "kernel", *EDGES},
    "sdk": {"core", "sdk"},
    # agent programs use the SDK, and pure core rules (plan validation, context math) —
    # core has no I/O, so this gives an agent no way around the kernel
    "agents": {"sdk", "agents", "core"},
    # the demo is a show above the SDK (and pure core figures such as weighted_jain)
    "demo": {"sdk", "core", "demo"},
    "cli": {"sdk", "cli", "demo"},
    "web": {"sdk", "web"},
    "mcp": {"sdk", "mcp"},
    # framework adapters run INSIDE agent processes, like agents/: the agent SDK only
    "adapters": {"sdk", "adapters"},
    # the A2A face: an operator client of the kernel, like mcp/
    "a2a": {"sdk", "a2a"},
}
# (importing module, imported module): each exception says why it is not a layering breach
EXCEPTIONS: dict[tuple[str, str], str] = {
    # the trusted in-sandbox bootstrap applies the confinement before any agent code runs
    ("agentix.agents.boot", "agentix.sandbox.confine"): "boot is the sandbox's trampoline",
    ("agentix.agents.boot", "agentix.sandbox"): "boot is the sandbox's trampoline",
    # `agentix mcp` is the command that starts the MCP face (a face starting a face, no kernel)
    ("agentix.cli.mcp", "agentix.mcp.server"): "the CLI command that runs the MCP face",
    ("agentix.cli.mcp", "agentix.mcp.http"): "the CLI command that runs the MCP face over HTTP",
    ("agentix.cli.a2a", "agentix.a2a.server"): "the CLI command that runs the A2A face",
    # the trust state is tables of the kernel's store (DESIGN.md §9); the kernel passes its
    # Database in, and a package store used without a kernel (tests, bench) opens the same one
    ("agentix.packages.trust", "agentix.store.db"): "trust state lives in agentix.db, one writer",
    # episodic memory's tables are tables of the same store (DESIGN.md §9): the kernel passes
    # its Database in; the vector search stays in memory/
    ("agentix.memory.store", "agentix.store.db"): "memory lives in agentix.db, one writer",
}
# modules that do I/O or concurrency (pure helpers such as urllib.parse stay allowed)
CORE_FORBIDDEN = {"asyncio", "sqlite3", "socket", "subprocess", "threading", "multiprocessing",
                  "selectors", "concurrent.futures", "http.client", "http.server", "urllib.request",
                  "ssl", "shutil"}


def forbidden_in_core(target: str) -> bool:
    return any(target == f or target.startswith(f + ".") for f in CORE_FORBIDDEN)


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            if mod == "agentix":  # `from agentix import sdk` imports the package agentix.sdk
                out.extend((f"agentix.{a.name}", node.lineno) for a in node.names)
            elif not mod.startswith("agentix"):  # `from urllib import request` is urllib.request
                out.extend((f"{mod}.{a.name}", node.lineno) for a in node.names)
    return out


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    if parts[0] != "agentix" or len(parts) < 2:
        return None
    return parts[1]


MODULES = modules()


def test_every_package_has_a_layer() -> None:
    unknown = sorted({layer(m) for m, p in MODULES if layer(m) and (SRC / layer(m)).is_dir()} - set(ALLOWED))
    assert not unknown, f"new packages need a place in tests/test_layering.py ALLOWED: {unknown}"


@pytest.mark.parametrize("mod,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down_only(mod: str, path: Path) -> None:
    own = layer(mod)
    if own is None or own not in ALLOWED:
        return  # agentix/__init__.py, or a top-level module (covered by the test above)
    bad = []
    for target, line in imports_of(mod, path):
        tl = layer(target)
        if target == "agentix" or tl is None:
            continue
        if not (SRC / tl).is_dir() and not (SRC / f"{tl}.py").exists():
            continue  # `from agentix import __version__` and the like
        if tl in ALLOWED[own] or (mod, target) in EXCEPTIONS:
            continue
        bad.append(f"{path.relative_to(SRC.parent)}:{line}: {mod} ({own}) imports {target} ({tl})")
    assert not bad, "imports must point down only:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("mod,path", [(m, p) for m, p in MODULES if layer(m) == "core"],
                         ids=[m for m, _ in MODULES if layer(m) == "core"])
def test_core_is_pure(mod: str, path: Path) -> None:
    bad = [f"line {line}: {target}" for target, line in imports_of(mod, path) if forbidden_in_core(target)]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # no environment reads: configuration is passed in
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            bad.append(f"line {node.lineno}: os.{node.attr}")
        if isinstance(node, ast.Name) and node.id in ("environ", "getenv"):
            bad.append(f"line {node.lineno}: {node.id}")
    assert not bad, f"{mod} must stay pure (no I/O modules, no environment): {bad}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import agentix.kernel.kernel\n    from ..kernel import api\n"
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agentix.cli import main\n")
    got = {t for t, _ in imports_of("agentix.core.m", f)}
    assert {"agentix.kernel.kernel", "agentix.kernel", "agentix.cli"} <= got
    assert forbidden_in_core("urllib.request") and forbidden_in_core("asyncio.subprocess")
    assert not forbidden_in_core("urllib.parse") and not forbidden_in_core("socketserver_like")
