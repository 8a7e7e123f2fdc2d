"""Imports point down only, and no module imports another in a circle. Parses the AST of every
module under src/agentix (every import statement, including function-level and
``if TYPE_CHECKING:`` ones, and lazy ``"agentix.pkg.mod:attr"`` command tables) and checks each
against the layer table below; then looks for circles in the whole module graph.

    core                                   pure: no I/O modules, no other agentix package
    store rpc llm sandbox tools memory packages net   edges: core (and themselves) only
                                           (tools and packages: net too, the pinned connection)
    kernel                                 the composition root: anything below it
    sdk                                    client library: core and itself (never the kernel)
    agents                                 in-sandbox programs: sdk only
    demo                                   `agentix demo` and its agents: sdk and core
    cli web mcp                            faces: sdk (and themselves) only; cli runs the demo

A new top-level package fails this test until it is given a place in ``ALLOWED``. ``core``
may not import an I/O or concurrency module, ``os``, ``time`` or ``httpx``, nor read the
environment (the clock and the configuration are passed in). This is the one layering test
(it replaced tests/caps/test_layering.py and the inference core check).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "agentix"

EDGES = ("store", "rpc", "llm", "sandbox", "tools", "memory", "packages", "net")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    **{edge: {"core", edge} for edge in EDGES},
    # the memory tools are the tool face of the memory store (both edges; memory is lower);
    # net is the one resolve-check-connect rule for outbound requests (below tools and packages)
    "tools": {"core", "tools", "memory", "net"},
    "packages": {"core", "packages", "net"},
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
    ("agentix.agents.boot", "agentix.sandbox._launcher"): "a warm worker waits for its one message as the launcher does",
    # `agentix mcp` is the command that starts the MCP face (a face starting a face, no kernel)
    ("agentix.cli.mcp_cmd", "agentix.mcp.server"): "the CLI command that runs the MCP face",
    ("agentix.cli.mcp_cmd", "agentix.mcp.http"): "the CLI command that runs the MCP face over HTTP",
    ("agentix.cli.a2a_cmd", "agentix.a2a.server"): "the CLI command that runs the A2A face",
    # one pure rule (no I/O) for which Host names a server answers, shared with the HTTP API
    ("agentix.mcp.http", "agentix.core.hosts"): "the DNS-rebinding Host rule, the same for both HTTP faces",
    # one slow-client guard (a uvicorn protocol, no kernel) for every HTTP face we serve
    ("agentix.mcp.http", "agentix.rpc.slow_clients"): "the slowloris guard, the same for every HTTP face",
    ("agentix.cli.a2a_cmd", "agentix.rpc.slow_clients"): "the slowloris guard, the same for every HTTP face",
    ("agentix.cli.mcp_cmd", "agentix.rpc.slow_clients"): "the slowloris guard, the same for every HTTP face",
    # the trust state is tables of the kernel's store (DESIGN.md §9); the kernel passes its
    # Database in, and a package store used without a kernel (tests, bench) opens the same one
    ("agentix.packages.trust", "agentix.store.db"): "trust state lives in agentix.db, one writer",
    ("agentix.packages.pushed", "agentix.store.db"): "the record of pushed blobs lives in agentix.db, one writer "
                                                    "(a type only)",
    ("agentix.packages.service", "agentix.store.db"): "the kernel hands the package store its Database "
                                                     "for the trust state (a type only)",
    # the files older versions kept under registry/ are imported the one way (store/side_files.py)
    ("agentix.packages.trust", "agentix.store.side_files"): "old trust files retired after import, one pattern",
    ("agentix.packages.pushed", "agentix.store.side_files"): "old pushed-record files retired after import, "
                                                            "one pattern",
    # episodic memory's tables are tables of the same store (DESIGN.md §9): the kernel passes
    # its Database in; the vector search stays in memory/
    ("agentix.memory.store", "agentix.store.db"): "memory lives in agentix.db, one writer",
}
# modules that do I/O or concurrency (pure helpers such as urllib.parse stay allowed)
# (and ``os``/``time``: the clock and the environment are passed in; ``httpx``: no network)
CORE_FORBIDDEN = {"asyncio", "sqlite3", "socket", "subprocess", "threading", "multiprocessing",
                  "selectors", "concurrent.futures", "http.client", "http.server", "urllib.request",
                  "ssl", "shutil", "os", "time", "httpx"}
# circles known and owned by a branch that removes them; each names why it may stay for now
ALLOWED_CIRCLES: dict[frozenset[str], str] = {}


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


LAZY = re.compile(r"(agentix(?:\.[a-z_][a-z0-9_]*)+):[A-Za-z_][A-Za-z0-9_]*")


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """Absolute names of everything ``path`` imports (relative imports resolved; for
    ``from P import n`` both ``P`` and ``P.n``, and a lazy ``"agentix.pkg.mod:attr"`` string)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = LAZY.fullmatch(node.value)
            if m:
                out.append((m.group(1), node.lineno))
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
            # `from agentix import sdk` imports agentix.sdk; `from urllib import request` is
            # urllib.request; `from agentix.kernel import spawn` may name the module kernel.spawn
            out.extend((f"{mod}.{a.name}", node.lineno) for a in node.names if a.name != "*")
    return out


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    if parts[0] != "agentix" or len(parts) < 2:
        return None
    return parts[1]


MODULES = modules()
NAMES = {m for m, _ in MODULES}


def graph(mods: list[tuple[str, Path]]) -> dict[str, set[str]]:
    """``module -> the agentix modules it imports`` (a name that is not a module counts as
    its package: ``from agentix.kernel.process import AgentRecord`` is agentix.kernel.process)."""
    names = {m for m, _ in mods}
    out: dict[str, set[str]] = {}
    for mod, path in mods:
        edges = set()
        for target, _ in imports_of(mod, path):
            while target and target not in names:
                target = target.rpartition(".")[0]
            # a module of a package imports the package's __init__ anyway: not an edge
            if target and target != mod and not mod.startswith(target + "."):
                edges.add(target)
        out[mod] = edges
    return out


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


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
        if target not in NAMES and target.rpartition(".")[0] in NAMES:
            continue  # `from P import name`: the import of P is checked on its own
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
    assert forbidden_in_core("os.path") and forbidden_in_core("time") and forbidden_in_core("httpx")
    assert not forbidden_in_core("urllib.parse") and not forbidden_in_core("socketserver_like")


def test_no_module_imports_another_in_a_circle() -> None:
    found = [c for c in circles(graph(MODULES)) if frozenset(c) not in ALLOWED_CIRCLES]
    assert not found, ("modules import each other in a circle (function-level and TYPE_CHECKING "
                       "imports count); move what both need into a lower module, or pass it in:\n  "
                       + "\n  ".join(" <-> ".join(c) for c in found))


def test_allowed_circles_still_exist() -> None:
    """An entry of ALLOWED_CIRCLES whose circle is gone must be deleted (it would hide a new one)."""
    now = {frozenset(c) for c in circles(graph(MODULES))}
    stale = [sorted(c) for c in ALLOWED_CIRCLES if c not in now]
    assert not stale, f"these circles are gone; delete them from ALLOWED_CIRCLES: {stale}"


def test_the_circle_finder_sees_function_level_type_checking_and_lazy_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "agentix" / "kernel"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from agentix.kernel import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from agentix.kernel.a import f\n")
    (pkg / "c.py").write_text('TABLE = {"x": "agentix.kernel.d:cmd"}\n')
    (pkg / "d.py").write_text("from . import c\n")
    (pkg / "e.py").write_text("from agentix.kernel.a import f\n")  # into a circle, not in it
    mods = [("agentix.kernel" + ("" if p.stem == "__init__" else "." + p.stem), p)
            for p in sorted(pkg.glob("*.py"))]
    got = circles(graph(mods))
    assert sorted(got) == [["agentix.kernel.a", "agentix.kernel.b"], ["agentix.kernel.c", "agentix.kernel.d"]]
