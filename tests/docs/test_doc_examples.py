"""Every example in README.md and docs/*.md marked runnable runs as written, against a real kernel.

The convention, in a fenced block's info string (the first word stays the language, so the
page renders as usual):

    ```python file=hello.py      the block is written to hello.py (relative to the page's
    ```yaml file=team.yaml       working directory; folders are made) — any language
    ```sh run                    the block runs with ``bash -euo pipefail`` in that directory;
                                 every command must succeed (write ``cmd || echo …`` to show
                                 a refusal)
    ```python run                the block runs with the venv's Python in that directory
    ```yaml manifest             the block is a manifest: it must validate, grants included
    ```sh norun                  shown, never run (set-up such as ``make demo``)

Each page gets a fresh working directory and a fresh, short ``AGENTIX_HOME``; its blocks run
in page order with the venv's ``bin`` first on ``PATH`` (so ``agentix`` is this tree's), and
a kernel the page started is stopped at the end even if a block failed. Every page
must mark every ``sh``/``python``/``yaml`` block one way or the other, so an
example cannot silently stop being run.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ISOLATION, short_tmp

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
#: pages where every code block in a runnable language must carry a marker
#: pages a new user starts from: each must have at least one runnable example
STARTING_PAGES = ("README.md", "docs/quickstart.md")
MARKED_LANGS = ("sh", "bash", "python", "yaml")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    attrs: dict[str, str]
    body: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path, root: Path = ROOT) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        lang = words[0] if words else ""
        attrs = {}
        for w in words[1:]:
            key, _, val = w.partition("=")
            attrs[key] = val
        out.append(Block(str(page.relative_to(root)), text.count("\n", 0, m.start()) + 1, lang, attrs,
                         m.group(2)))
    return out


def runnable(page: Path) -> bool:
    return any({"run", "file", "manifest"} & set(b.attrs) for b in blocks(page))


def test_the_convention_is_used_where_a_new_user_starts() -> None:
    for rel in STARTING_PAGES:
        assert any("run" in b.attrs for b in blocks(ROOT / rel)), f"{rel} has no runnable example"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_is_marked(page: Path) -> None:
    """No page can hold an example that silently stops being run: every sh/python/yaml
    block says whether it runs (``run``, ``file=``, ``manifest``) or why not (``norun``)."""
    for b in blocks(page):
        if b.lang in MARKED_LANGS:
            assert {"run", "file", "norun", "manifest"} & set(b.attrs), (
                f"{b.where}: mark this {b.lang} block `run`, `file=NAME`, `manifest` or `norun` "
                "(see tests/docs/test_doc_examples.py)")


def test_the_parser_sees_markers() -> None:
    """The extraction itself: a page with one block of each kind."""
    tmp = short_tmp()
    try:
        page = tmp / "p.md"
        page.write_text("x\n```python file=a/b.py\nprint(1)\n```\n\n```sh run\necho hi\n```\n"
                        "```toml\nx = 1\n```\n")
        got = blocks(page, tmp)
        assert [(b.lang, b.attrs, b.body, b.line) for b in got] == [
            ("python", {"file": "a/b.py"}, "print(1)\n", 2), ("sh", {"run": ""}, "echo hi\n", 6),
            ("toml", {}, "x = 1\n", 9)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LOOPBACK_PORT = re.compile(r"(?<=127\.0\.0\.1:)(\d{4,5})\b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_ports(page_blocks: list[Block]) -> list[Block]:
    """The page's blocks with every fixed loopback port (``127.0.0.1:8470``) moved to a free
    one, the same free port for the same written port across the page. Pages show a memorable
    port; the test must not collide with whatever else runs on this host (other kernels,
    another checkout's tests), so it never binds the written one."""
    written = {m.group(1) for b in page_blocks for m in LOOPBACK_PORT.finditer(b.body)}
    moved = {port: str(_free_port()) for port in sorted(written)}
    return [Block(b.page, b.line, b.lang, b.attrs, LOOPBACK_PORT.sub(lambda m: moved[m.group(1)], b.body))
            for b in page_blocks]


def test_fixed_ports_are_moved_consistently() -> None:
    page = [Block("p", 1, "yaml", {"file": "c.yml"}, "addr: 127.0.0.1:5055\n"),
            Block("p", 5, "sh", {"run": ""}, "push 127.0.0.1:5055/x && curl 127.0.0.1:8470/ 10.0.0.1:5055\n")]
    a, b = _own_ports(page)
    port = a.body.split(":")[2].strip()
    assert port != "5055" and f"127.0.0.1:{port}/x" in b.body and "127.0.0.1:8470" not in b.body
    assert "10.0.0.1:5055" in b.body  # only loopback addresses are the test's to move


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIX_")}
    env.update(AGENTIX_HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def _check_manifest(b: Block) -> None:
    import yaml

    from agentix.core.grants import parse_grants
    from agentix.core.manifest import CapabilityEntry, parse_manifest

    m = parse_manifest(yaml.safe_load(b.body))
    caps = [m.capabilities] if isinstance(m.capabilities, str) else m.capabilities
    for c in caps:
        parse_grants(c.grant_strings() if isinstance(c, CapabilityEntry) else [c], workspace="/workspace")


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_marked_example_runs_as_written(page: Path) -> None:
    tmp = short_tmp("axdoc-")
    home, work = tmp / "h", tmp / "work"
    home.mkdir()
    work.mkdir()
    if ISOLATION == "degraded":
        (home / "config.toml").write_text('[kernel]\nisolation = "degraded"\n')
    env = _env(home)
    try:
        for b in _own_ports(blocks(page)):
            if "file" in b.attrs:
                dest = work / b.attrs["file"]
                assert dest.resolve().is_relative_to(work.resolve()), b.where
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(b.body)
            elif "manifest" in b.attrs:
                _check_manifest(b)
            elif "run" in b.attrs:
                if b.lang in ("sh", "bash"):
                    cmd = ["bash", "-euo", "pipefail", "-c", b.body]
                elif b.lang == "python":
                    cmd = [sys.executable, "-c", b.body]
                else:
                    raise AssertionError(f"{b.where}: cannot run a {b.lang!r} block")
                r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                                   timeout=180, stdin=subprocess.DEVNULL)
                assert r.returncode == 0, (
                    f"{b.where}: the example failed (exit {r.returncode})\n--- block\n{b.body}"
                    f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
    finally:
        # the page's kernel, and any other a page started under its working directory (a page
        # that failed half-way never reached its own clean-up block)
        for sock in [home / "agentixd.sock", *work.glob("**/agentixd.sock")]:
            if sock.exists():
                subprocess.run([str(BIN / "agentix"), "--home", str(sock.parent), "down"], env=env,
                               capture_output=True, timeout=60)
        for pidfile in work.glob("*.pid"):  # background servers a page started (`echo $! > x.pid`)
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ValueError, OSError):
                pass
        shutil.rmtree(tmp, ignore_errors=True)
