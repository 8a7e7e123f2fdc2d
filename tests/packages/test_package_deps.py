"""Other agentix packages as dependencies (`dependencies.packages`): resolved from the local
store or pulled from a (real, loopback) registry, verified under the trust policy exactly as
`run` verifies, pinned by digest, their files under deps/packages/NAME, their capabilities
never added to the dependent's ceiling; cycles and missing references refused, nothing tagged."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agentix.core.agentfile import parse_agentfile_text
from agentix.core.errors import InvalidRequest, NotFound, PackageRejected
from agentix.core.package import parse_ref
from agentix.packages.service import PackageStore

from .conftest import Registry
from .test_run_e2e import cli, events, ok

LIB = """\
apiVersion: agentix/v1
metadata: {{name: {name}, version: {version}}}
{deps}stages:
  - name: main
    steps:
      - copy: lib
agent: {{program: lib/main.py}}
capabilities: ["tool: echo", "network: *", "exec: *"]
"""

APP = """\
apiVersion: agentix/v1
metadata: {{name: app, version: 1.0.0}}
dependencies:
  packages: {deps}
stages:
  - name: main
    steps:
      - copy: agent
agent: {{program: agent}}
capabilities: ["tool: echo"]
"""

APP_PROGRAM = """\
from agentix.sdk import agent

agent.connect().exit({"lib": open("deps/packages/lib/lib/util.py").read()})
"""


def lib_context(root: Path, name: str = "lib", version: str = "1.0.0", deps: list[str] | None = None,
                text: str = "VALUE = 1\n") -> Path:
    (root / "lib").mkdir(parents=True, exist_ok=True)
    (root / "lib" / "util.py").write_text(text)
    (root / "lib" / "main.py").write_text("print('lib')\n")
    dep_text = f"dependencies:\n  packages: {json.dumps(deps)}\n" if deps else ""
    (root / "Agentfile").write_text(LIB.format(name=name, version=version, deps=dep_text))
    return root


def app_context(root: Path, deps: list[str], name: str = "app", version: str = "1.0.0") -> Path:
    (root / "agent").mkdir(parents=True, exist_ok=True)
    (root / "agent" / "__main__.py").write_text(APP_PROGRAM)
    text = APP.format(deps=json.dumps(deps)).replace("name: app, version: 1.0.0", f"name: {name}, version: {version}")
    (root / "Agentfile").write_text(text)
    return root


def layer_names(store: PackageStore, digest: str) -> dict[str, bytes]:
    raw = store.layout.read_blob(digest, 1 << 30)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        return {t.name: (tar.extractfile(t).read() if t.isfile() else b"<dir>")  # type: ignore[union-attr]
                for t in tar.getmembers()}


def digest_of(store: PackageStore, ref: str) -> str:
    return store.layout.resolve(parse_ref(ref)).digest


def nothing_tagged(store: PackageStore, ref: str) -> bool:
    try:
        store.layout.resolve(parse_ref(ref))
    except NotFound:
        return True
    return False


@pytest.fixture
def with_lib(tmp_path: Path) -> PackageStore:
    store = PackageStore(tmp_path / "home")
    store.build(lib_context(tmp_path / "lib"), "local/lib:1.0.0")
    return store


def test_a_dependency_is_pinned_by_digest_and_its_files_land_under_deps_packages(
        with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    store.trust_allow_unsigned("local/*")
    r = store.build(app_context(tmp_path / "app", ["local/lib:1.0.0"]), "local/app:1.0.0")
    lib_digest = digest_of(store, "local/lib:1.0.0")
    [dep] = r.config["dependencies"]["packages"]
    assert dep == {"ref": "local/lib:1.0.0", "digest": lib_digest, "name": "local/lib", "version": "1.0.0",
                   "path": "deps/packages/lib"}
    files = layer_names(store, r.layers[0])
    assert files["deps/packages/lib/lib/util.py"] == b"VALUE = 1\n"
    assert all(p.startswith("deps") for p in files)
    # the dependency's capabilities are not the dependent's: it declares its own ceiling
    assert r.config["capabilities"] == ["tool: echo"] and r.config["manifest"]["capabilities"] == ["tool: echo"]
    assert [v.statement.name for v in r.verdicts] == ["local/lib"]
    assert store.inspect("local/app:1.0.0")["dependencies"]["packages"] == [dep]
    # the same inputs give the same digest, from the cache
    again = store.build(tmp_path / "app", "local/app:1.0.0")
    assert again.digest == r.digest and all(again.cached)
    # another home, another directory: the same digest bit for bit
    other = PackageStore(tmp_path / "home2")
    other.build(lib_context(tmp_path / "elsewhere" / "lib"), "local/lib:1.0.0")
    other.trust_allow_unsigned("local/*")
    assert other.build(app_context(tmp_path / "elsewhere" / "app", ["local/lib:1.0.0"]),
                       "local/app:1.0.0").digest == r.digest


def test_a_dependency_by_digest_is_that_exact_package(with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    store.trust_allow_unsigned("local/*")
    digest = digest_of(store, "local/lib:1.0.0")
    for text in (f"local/lib@{digest}", f"local/lib:1.0.0@{digest}"):
        r = store.build(app_context(tmp_path / "app", [text]), "local/app:1.0.0")
        assert r.config["dependencies"]["packages"][0]["digest"] == digest
        assert r.config["dependencies"]["packages"][0]["ref"] == text
    with pytest.raises(NotFound):
        store.build(app_context(tmp_path / "app", ["local/lib@sha256:" + "0" * 64]), "local/app:1.0.0")


def test_a_changed_dependency_changes_the_dependents_digest(with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    store.trust_allow_unsigned("local/*")
    first = store.build(app_context(tmp_path / "app", ["local/lib:1.0.0"]), "local/app:1.0.0")
    store.build(lib_context(tmp_path / "lib", text="VALUE = 2\n"), "local/lib:1.0.0")  # the tag moves
    second = store.build(tmp_path / "app", "local/app:1.0.0")
    assert second.digest != first.digest
    assert second.config["dependencies"]["packages"][0]["digest"] == digest_of(store, "local/lib:1.0.0")


def test_an_unsigned_dependency_is_refused_unless_the_policy_allows_it_and_nothing_is_tagged(
        with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    before = sorted(p.name for p in (store.layout.root / "blobs" / "sha256").iterdir())
    with pytest.raises(PackageRejected) as exc:
        store.build(app_context(tmp_path / "app", ["local/lib:1.0.0"]), "local/app:1.0.0")
    assert exc.value.data["reason"] == "unsigned" and exc.value.data["name"] == "local/lib"
    assert nothing_tagged(store, "local/app:1.0.0")
    assert sorted(p.name for p in (store.layout.root / "blobs" / "sha256").iterdir()) == before


def test_a_dependency_signed_by_a_trusted_key_is_accepted_and_an_untrusted_one_refused(
        with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    store.keys.generate("publisher")
    store.sign("local/lib:1.0.0", "publisher")
    store.keys.generate("other")
    store.trust_add("other", "local/*")
    with pytest.raises(PackageRejected) as exc:
        store.build(app_context(tmp_path / "app", ["local/lib:1.0.0"]), "local/app:1.0.0")
    assert exc.value.data["reason"] == "untrusted_key"
    assert nothing_tagged(store, "local/app:1.0.0")
    store.trust_add("publisher", "local/lib")
    r = store.build(tmp_path / "app", "local/app:1.0.0")
    assert r.verdicts[0].basis == "signed"


def test_a_dependency_older_than_one_seen_is_a_refused_rollback(with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    store.trust_allow_unsigned("local/*")
    store.trust.remember("local/lib", "2.0.0")
    with pytest.raises(PackageRejected) as exc:
        store.build(app_context(tmp_path / "app", ["local/lib:1.0.0"]), "local/app:1.0.0")
    assert exc.value.data["reason"] == "rollback"
    assert nothing_tagged(store, "local/app:1.0.0")


def test_a_missing_dependency_names_the_field_and_what_to_do(tmp_path: Path) -> None:
    store = PackageStore(tmp_path / "home")
    with pytest.raises(NotFound) as exc:
        store.build(app_context(tmp_path / "app", ["local/nosuch:1.0.0"]), "local/app:1.0.0")
    assert exc.value.data["field"] == "dependencies.packages.0" and "not in the local store" in str(exc.value)
    assert nothing_tagged(store, "local/app:1.0.0")


def test_a_dependency_on_the_package_itself_or_through_another_is_a_cycle(tmp_path: Path) -> None:
    store = PackageStore(tmp_path / "home")
    store.trust_allow_unsigned("local/*")
    store.build(lib_context(tmp_path / "a", name="a"), "local/a:1.0.0")
    store.build(lib_context(tmp_path / "b", name="b", deps=["local/a:1.0.0"]), "local/b:1.0.0")
    # a 2.0.0 that needs a 1.0.0: itself
    with pytest.raises(InvalidRequest) as exc:
        store.build(lib_context(tmp_path / "a2", name="a", version="2.0.0", deps=["local/a:1.0.0"]), "local/a:2.0.0")
    assert exc.value.data["reason"] == "cycle" and exc.value.data["cycle"] == ["local/a", "local/a"]
    # a 2.0.0 that needs b, which needs a
    with pytest.raises(InvalidRequest) as exc:
        store.build(lib_context(tmp_path / "a3", name="a", version="2.0.0", deps=["local/b:1.0.0"]), "local/a:2.0.0")
    assert exc.value.data["cycle"] == ["local/a", "local/b", "local/a"] and "cycle" in str(exc.value)
    assert nothing_tagged(store, "local/a:2.0.0")
    # a transitive dependency is nested in the config (what the cycle check reads)
    c = store.build(app_context(tmp_path / "c", ["local/b:1.0.0"], name="c"), "local/c:1.0.0")
    assert c.config["dependencies"]["packages"][0]["packages"][0]["name"] == "local/a"
    files = layer_names(store, c.layers[0])
    assert "deps/packages/b/deps/packages/a/lib/util.py" in files


def test_two_dependencies_with_one_name_are_refused(with_lib: PackageStore, tmp_path: Path) -> None:
    store = with_lib
    store.trust_allow_unsigned("local/*")
    store.trust_allow_unsigned("other/*")
    store.build(lib_context(tmp_path / "lib2"), "other/lib:1.0.0")
    with pytest.raises(InvalidRequest) as exc:
        store.build(app_context(tmp_path / "app", ["local/lib:1.0.0", "other/lib:1.0.0"]), "local/app:1.0.0")
    assert exc.value.data["path"] == "deps/packages/lib"
    assert nothing_tagged(store, "local/app:1.0.0")


def test_a_snapshot_is_not_a_dependency(with_lib: PackageStore, tmp_path: Path) -> None:
    from agentix.packages.snapshot import SNAPSHOT_CONFIG_TYPE

    store = with_lib
    store.trust_allow_unsigned("*")
    m = json.loads(store.layout.read_blob(digest_of(store, "local/lib:1.0.0")))
    cfg = b'{"kind": "snapshot", "metadata": {"name": "lib", "version": "0.0.0"}}'
    m["config"] = {"mediaType": SNAPSHOT_CONFIG_TYPE, "digest": store.layout.put_bytes(cfg), "size": len(cfg)}
    mb = json.dumps(m).encode()
    from agentix.packages.layout import MANIFEST_TYPE, Descriptor

    store.layout.tag(parse_ref("snapshots/lib:one"), Descriptor(MANIFEST_TYPE, store.layout.put_bytes(mb), len(mb)))
    with pytest.raises(PackageRejected) as exc:
        store.build(app_context(tmp_path / "app", ["snapshots/lib:one"]), "local/app:1.0.0")
    assert exc.value.data["reason"] == "not_a_package"


@pytest.mark.parametrize("deps, msg", [
    (["local/lib"], "needs a :TAG or @sha256"),
    (["../lib:1.0.0"], "must be lowercase parts"),
    (["Local/Lib:1.0.0"], "must be lowercase parts"),
    (["local/lib:1.0.0", "local/lib:1.0.0"], "listed more than once"),
    (["local/lib@sha256:1234"], "is not a sha256 digest"),
    ([""], "non-empty string"),
    ([7], "valid string"),
])
def test_a_malformed_dependency_reference_names_the_line_and_field(deps: list[Any], msg: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text(APP.format(deps=json.dumps(deps)))
    assert exc.value.data["field"].startswith("dependencies.packages") and exc.value.data["line"] == 4
    assert msg in str(exc.value)


def test_a_malformed_base_reference_now_names_the_line() -> None:
    text = APP.format(deps="[]").replace("dependencies:", "from: '../x:1'\ndependencies:")
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text(text)
    assert exc.value.data["field"] == "from" and exc.value.data["line"] == 3


# ------------------------------------------------------------------ from a registry
def test_a_dependency_is_pulled_from_the_registry_verified_and_the_app_runs_with_its_own_ceiling(
        start_kernel: Any, registry: Registry, tmp_path: Path) -> None:
    publisher = start_kernel()
    lib_ref = registry.ref(f"team/lib-{tmp_path.name[-10:].lower().replace('_', '-')}:1.0.0")
    ok(cli(publisher, "build", str(lib_context(tmp_path / "lib")), "-t", lib_ref))
    pub = ok(cli(publisher, "keys", "generate", "default")).strip().splitlines()[-1]
    ok(cli(publisher, "sign", lib_ref))
    ok(cli(publisher, "push", lib_ref))

    k = start_kernel()
    ctx = app_context(tmp_path / "app", [lib_ref])
    # not trusted yet: refused, and neither the dependency nor the app is visible
    with pytest.raises(Exception) as exc:
        k.client.call("package.build", context=str(ctx), tag="local/app:1.0.0")
    assert getattr(exc.value, "data", {}).get("reason") == "untrusted_key"
    assert k.client.call("package.list")["packages"] == []
    ok(cli(k, "trust", "add", pub, "--for", registry.ref("team/*")))
    r = k.client.call("package.build", context=str(ctx), tag="local/app:1.0.0")
    assert r["dependencies"][0]["name"] == lib_ref.rsplit(":", 1)[0]
    assert r["dependencies"][0]["digest"] == PackageStore(publisher.home).layout.resolve(parse_ref(lib_ref)).digest
    # the app is unsigned and local: allowed by policy, and that acceptance is audited
    ok(cli(k, "trust", "allow-unsigned", "local/*"))
    out = json.loads(ok(cli(k, "run", "local/app:1.0.0", "--accept", "all", "--json")))
    assert out["result"] == {"lib": "VALUE = 1\n"}
    [accepted] = events(k, "package.accepted")
    assert accepted["data"]["granted"] == ["tool: echo"]   # never the dependency's network: * or exec: *
    [built] = [e for e in events(k, "package.build") if e["data"].get("digest") == r["digest"]]
    assert built["data"]["dependencies"][0]["digest"] == r["dependencies"][0]["digest"]


def test_an_unsigned_dependency_allowed_by_policy_is_audited(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    k.client.call("package.build", context=str(lib_context(tmp_path / "lib")), tag="local/lib:1.0.0")
    ok(cli(k, "trust", "allow-unsigned", "local/lib"))
    k.client.call("package.build", context=str(app_context(tmp_path / "app", ["local/lib:1.0.0"])),
                  tag="local/app:1.0.0")
    assert [e["data"]["name"] for e in events(k, "package.unsigned_accepted")] == ["local/lib"]
    assert k.client.audit_verify()["ok"] is True
