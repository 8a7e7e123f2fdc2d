"""Base packages (`from:`), stages that start from a stage, and Python dependencies resolved
into a layer — wheels fetched on the host side, installed by pip inside the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.agentfile import PINNED_REQUIREMENT, parse_agentfile_text
from agentix.core.errors import InvalidRequest, NotFound, PackageRejected
from agentix.core.package import parse_ref
from agentix.packages.service import PackageStore

from .conftest import make_context
from .test_run_e2e import cli, ok

LIB = """\
apiVersion: agentix/v1
metadata: {name: base, version: 1.0.0}
stages:
  - name: main
    steps:
      - copy: lib
agent: {program: lib/main.py, args: [from-base]}
capabilities: ["tool: echo", "network: *"]
"""

DERIVED = """\
apiVersion: agentix/v1
metadata: {name: derived, version: 2.0.0}
from: local/base:1.0.0
stages:
  - name: main
    steps:
      - copy: extra.txt
capabilities: ["tool: echo"]
"""


def base_context(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "main.py").write_text(
        "import sys\nfrom agentix.sdk import agent\n"
        "agent.connect().exit({'args': sys.argv[1:], 'extra': open('extra.txt').read()})\n")
    (root / "Agentfile").write_text(LIB)
    return root


def derived_context(root: Path, text: str = DERIVED) -> Path:
    root.mkdir(parents=True)
    (root / "extra.txt").write_text("from the derived package")
    (root / "Agentfile").write_text(text)
    return root


def manifest_of(store: PackageStore, ref: str) -> dict[str, Any]:
    return store._manifest(store.layout.resolve(parse_ref(ref)).digest)


@pytest.fixture
def with_base(tmp_path: Path) -> PackageStore:
    store = PackageStore(tmp_path / "home")
    store.build(base_context(tmp_path / "base"), "local/base:1.0.0")
    return store


def test_a_derived_package_starts_with_the_base_layers_and_runs_its_agent(with_base: PackageStore,
                                                                          tmp_path: Path) -> None:
    store = with_base
    store.trust_allow_unsigned("local/*")
    r = store.build(derived_context(tmp_path / "derived"), "local/derived:2.0.0")
    base_layers = [d["digest"] for d in manifest_of(store, "local/base:1.0.0")["layers"]]
    assert list(r.layers[:len(base_layers)]) == base_layers and len(r.layers) == len(base_layers) + 1
    cfg = r.config
    assert cfg["from"]["name"] == "local/base" and cfg["from"]["version"] == "1.0.0"
    assert cfg["from"]["digest"] == store.layout.resolve(parse_ref("local/base:1.0.0")).digest
    # the base's agent is inherited; its capabilities are not (a package declares its own ceiling)
    assert cfg["manifest"]["program"] == "lib/main.py" and cfg["manifest"]["args"] == ["from-base"]
    assert cfg["capabilities"] == ["tool: echo"] and cfg["manifest"]["capabilities"] == ["tool: echo"]
    # same inputs, same digest
    again = store.build(tmp_path / "derived", "local/derived:2.0.0")
    assert again.digest == r.digest and all(again.cached)


def test_an_unsigned_base_is_refused_unless_the_policy_allows_it_and_nothing_is_tagged(
        with_base: PackageStore, tmp_path: Path) -> None:
    store = with_base
    with pytest.raises(PackageRejected):
        store.build(derived_context(tmp_path / "derived"), "local/derived:2.0.0")
    with pytest.raises(NotFound):
        store.layout.resolve(parse_ref("local/derived:2.0.0"))


def test_a_base_not_in_the_local_store_names_the_pull(tmp_path: Path) -> None:
    store = PackageStore(tmp_path / "home")
    with pytest.raises(NotFound) as exc:
        store.build(derived_context(tmp_path / "derived"), "local/derived:2.0.0")
    assert "agentix pull local/base:1.0.0" in str(exc.value) and exc.value.data["field"] == "from"


def test_a_malformed_base_reference_is_refused(tmp_path: Path) -> None:
    ctx = derived_context(tmp_path / "derived", DERIVED.replace("local/base:1.0.0", "'Bad Ref!'"))
    with pytest.raises(InvalidRequest) as exc:
        PackageStore(tmp_path / "home").build(ctx, "local/derived:2.0.0")
    assert exc.value.data["field"] == "from"


def test_without_agent_and_without_base_the_agentfile_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text(DERIVED.replace("from: local/base:1.0.0\n", ""))
    assert "agent" in str(exc.value)


STAGED = """\
apiVersion: agentix/v1
metadata: {name: staged, version: 1.0.0}
stages:
  - name: one
    steps:
      - copy: a.txt
  - name: two
    from: one
    steps:
      - copy: b.txt
agent: {program: a.txt}
"""


def test_a_stage_from_an_earlier_stage_starts_with_its_layers(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    (ctx / "b.txt").write_text("b")
    (ctx / "Agentfile").write_text(STAGED)
    store = PackageStore(tmp_path / "home")
    r = store.build(ctx, "local/staged:1.0.0")
    assert len(r.layers) == 2   # stage one's layer, then stage two's
    # without `from: one`, stage two ships only its own layer
    (ctx / "Agentfile").write_text(STAGED.replace("    from: one\n", ""))
    assert len(store.build(ctx, "local/staged:1.0.0").layers) == 1


def test_a_stage_from_a_later_or_unknown_stage_names_the_line() -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text(STAGED.replace("from: one", "from: three"))
    assert exc.value.data["field"] == "stages.1.from" and exc.value.data["line"] == 8


# ------------------------------------------------------------------ Python dependencies
DEPS = """\
apiVersion: agentix/v1
metadata: {name: withdeps, version: 1.0.0}
dependencies:
  python: [six==1.17.0]
stages:
  - name: main
    steps:
      - copy: agent
agent: {program: agent}
capabilities: ["tool: echo"]
"""

USES_SIX = """\
import six
from agentix.sdk import agent

agent.connect().exit({"six": six.__version__, "from": six.__file__})
"""


@pytest.mark.parametrize("req", ["six", "six>=1.0", "-r /etc/passwd", "--index-url=http://evil/ six==1",
                                 "git+https://example.com/x.git", "six==1.0; os_name=='posix'", "../six==1",
                                 "six==1.0 --hash=sha256:00", "https://example.com/six.whl"])
def test_a_python_dependency_must_be_a_plain_pin(req: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text(DEPS.replace("six==1.17.0", json.dumps(req)))
    assert exc.value.data["field"].startswith("dependencies.python")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_no_requirement_text_can_carry_a_pip_option_or_url(text: str) -> None:
    if PINNED_REQUIREMENT.match(text):
        assert not text.startswith("-") and "/" not in text and ":" not in text and " " not in text
        assert text.count("==") == 1


def test_python_dependencies_are_refused_without_the_kernel(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", program=USES_SIX)
    (ctx / "Agentfile").write_text(DEPS)
    with pytest.raises(InvalidRequest) as exc:
        PackageStore(tmp_path / "home").build(ctx, "local/withdeps:1.0.0")
    assert "inside the agentix sandbox" in str(exc.value)


def test_python_dependencies_become_one_layer_the_agent_imports(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = make_context(tmp_path / "ctx", program=USES_SIX)
    (ctx / "Agentfile").write_text(DEPS)
    r = k.client.call("package.build", context=str(ctx), tag="local/withdeps:1.0.0")
    assert r["cached"] == [False, False]
    store = PackageStore(k.home)
    cfg = store._config(manifest_of(store, "local/withdeps:1.0.0"))
    assert cfg["dependencies"] == {"python": ["six==1.17.0"]}
    from .test_build_run import layer_files

    deps = layer_files(k.home, "local/withdeps:1.0.0", 0)
    assert "deps/python/six.py" in deps and not any(p.startswith(".wheels") for p in deps)
    again = k.client.call("package.build", context=str(ctx), tag="local/withdeps:1.0.0")
    assert again["digest"] == r["digest"] and again["cached"] == [True, True]
    # another kernel, another directory, later: the same digest, bit for bit
    k2 = start_kernel()
    ctx2 = make_context(tmp_path / "elsewhere" / "ctx", program=USES_SIX)
    (ctx2 / "Agentfile").write_text(DEPS)
    assert k2.client.call("package.build", context=str(ctx2), tag="local/withdeps:1.0.0")["digest"] == r["digest"]
    ok(cli(k, "trust", "allow-unsigned", "local/*"))
    out = json.loads(ok(cli(k, "run", "local/withdeps:1.0.0", "--accept", "all", "--json")))
    assert out["result"]["six"] == "1.17.0" and "/workspace/deps/python/" in out["result"]["from"]


def test_a_dependency_with_no_wheel_fails_the_build_and_tags_nothing(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = make_context(tmp_path / "ctx", program=USES_SIX)
    (ctx / "Agentfile").write_text(DEPS.replace("six==1.17.0", "no-such-distribution-agentix==9.9.9"))
    with pytest.raises(Exception) as exc:
        k.client.call("package.build", context=str(ctx), tag="local/withdeps:1.0.0")
    assert getattr(exc.value, "code", "") == "invalid_request" and "no source builds" in str(exc.value)
    with pytest.raises(NotFound):
        PackageStore(k.home).layout.resolve(parse_ref("local/withdeps:1.0.0"))
