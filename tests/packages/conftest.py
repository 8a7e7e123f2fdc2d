"""Fixtures for the package tests: build contexts, stores, and a real OCI registry on loopback.

The registry is Debian's ``docker-registry`` (the CNCF distribution registry, installed by
``make setup``), started with a temporary filesystem root on a free 127.0.0.1 port.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentix.packages.service import PackageStore
from _ports import free_port  # noqa: F401 (the tests of this folder import it from here)

AGENTFILE = """\
apiVersion: agentix/v1
metadata:
  name: hello
  version: {version}
  description: says hello
  authors: [Ada <ada@example.org>]
  license: Apache-2.0
stages:
  - name: main
    steps:
      - copy: agent
      - copy: data/notes.txt
        to: agent/notes.txt
agent:
  program: agent
  env: {{GREETING: hi}}
capabilities:
  - "tool: echo"
  - "file_write: /workspace/out/*"
limits:
  memory: 256M
"""

PROGRAM = """\
import os

from agentix.sdk import agent

k = agent.connect()
info = k.info()
res = {"grants": info.get("grants"), "notes": open("agent/notes.txt").read().strip(),
       "workspace": sorted(os.listdir("."))}
for key, fn in (("echo", lambda: k.tools.echo(message="hello from a package")),
                ("write", lambda: k.tools.file_write(path="/workspace/out/x.txt", content="x")),
                ("fetch", lambda: k.tools.web_fetch(url="http://example.com/"))):
    try:
        fn()
        res[key] = "ok"
    except Exception as err:
        res[key] = getattr(err, "code", repr(err))
k.exit(res)
"""


def make_context(root: Path, version: str = "1.0.0", program: str = PROGRAM) -> Path:
    (root / "agent").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "agent" / "__main__.py").write_text(program)
    (root / "agent" / "util.py").write_text("X = 1\n")
    (root / "data" / "notes.txt").write_text("remember the milk\n")
    (root / "Agentfile").write_text(AGENTFILE.format(version=version))
    return root


def store_files(store: PackageStore) -> dict[str, str]:
    """Every file under the store's registry/ and the SHA-256 of its content (``.lock`` is
    the lock file the writer takes, not state): a refusal must leave this unchanged."""
    root = store.layout.root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def context(tmp_path: Path) -> Path:
    return make_context(tmp_path / "ctx")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PackageStore]:
    with PackageStore(tmp_path / "home", timeout=5.0) as s:  # its database closed after the test
        yield s


@pytest.fixture
def signed(store: PackageStore, context: Path) -> PackageStore:
    """``store`` holding team/hello:1.0.0 built from ``context``, signed by a trusted key."""
    store.build(context, "team/hello:1.0.0")
    store.keys.generate("publisher")
    store.sign("team/hello:1.0.0", "publisher")
    store.trust_add("publisher", "team/*")
    return store


@pytest.fixture
def other_store(tmp_path: Path) -> Iterator[PackageStore]:
    """A second $AGENTIX_HOME: 'another machine'."""
    with PackageStore(tmp_path / "home2", timeout=5.0) as s:
        yield s


@dataclass
class Registry:
    host: str
    root: Path
    proc: subprocess.Popen

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())


def start_registry(tmp: Path, extra: str = "") -> Registry:
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.fail("docker-registry is not installed: run `make setup` (it installs the Debian "
                    "package docker-registry)")
    root = tmp / "registry-root"
    root.mkdir(parents=True)
    for _ in range(3):
        port = free_port()
        cfg = tmp / "registry.yml"
        cfg.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                       f"    rootdirectory: {root}\n  delete:\n    enabled: true\n"
                       f"http:\n  addr: 127.0.0.1:{port}\n{extra}")
        log = open(tmp / "registry.log", "ab")
        proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=0.5)
                return Registry(f"127.0.0.1:{port}", root, proc)
            except httpx.HTTPError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    pytest.fail(f"docker-registry did not start: {(tmp / 'registry.log').read_text()[-2000:]}")


def stop_registry(reg: Registry) -> None:
    reg.proc.terminate()
    try:
        reg.proc.wait(5)
    except subprocess.TimeoutExpired:
        reg.proc.kill()
        reg.proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    stop_registry(reg)
