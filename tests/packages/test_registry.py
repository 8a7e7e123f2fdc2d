"""Push and pull through a real OCI registry on 127.0.0.1 (Debian's docker-registry), and
every registry failure the issue names: 401, 404, 5xx, timeouts, interrupted transfers,
names that try to escape, re-pushes."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentix.core.errors import InvalidRequest, NotFound, PackageRejected, RegistryError
from agentix.core.package import parse_ref
from agentix.packages.service import PackageStore
from tests.fakes.http_serving import serving

from .conftest import Registry, start_registry, stop_registry, store_files


def publish(store: PackageStore, context: Path, ref: str) -> str:
    store.build(context, ref)
    if not store.keys.list():
        store.keys.generate("publisher")
    store.sign(ref, "publisher")
    store.push(ref)
    return store.keys.describe("publisher")["public_key"]


def test_package_built_on_one_home_runs_on_another_after_push_and_pull(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("team/hello:1.0.0")
    pub = publish(store, context, ref)
    other_store.trust_add(pub, registry.ref("team/*"))
    r = other_store.pull(ref)
    assert r["digest"] == store.layout.resolve(parse_ref(ref)).digest
    assert r["verdict"]["basis"] == "signed"
    p = other_store.prepare(ref, ["tool: echo"], tmp_path / "run")
    assert (p.program_dir / "agent" / "notes.txt").read_text() == "remember the milk\n"
    assert p.manifest["capabilities"] == ["tool: echo"]


def test_pulling_an_untrusted_package_stores_nothing_visible(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/untrusted:1.0.0")
    publish(store, context, ref)
    other_store.keys.generate("mine")
    other_store.trust_add("mine", registry.ref("team/*"))
    before = store_files(other_store)
    with pytest.raises(PackageRejected) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "untrusted_key"
    assert other_store.list() == []
    assert store_files(other_store) == before  # no blob, no signature tag left behind
    with pytest.raises(NotFound):
        other_store.layout.resolve(parse_ref(ref))


def test_pull_of_an_unsigned_package_is_refused(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/unsigned:1.0.0")
    store.build(context, ref)
    store.push(ref)
    before = store_files(other_store)
    with pytest.raises(PackageRejected) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "unsigned"
    assert other_store.list() == []
    assert store_files(other_store) == before  # not its manifest, not its config


def test_repush_does_not_duplicate(store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/again:1.0.0")
    publish(store, context, ref)
    before = registry.files()
    again = store.push(ref)
    assert again["blobs_sent"] == 0
    assert registry.files() == before


@pytest.mark.parametrize("how", ["flipped", "truncated", "grown"])
def test_pushing_a_locally_altered_blob_is_refused_and_tags_nothing(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, how: str) -> None:
    """The push does not hash a blob it sends (the registry checks it against the digest in
    the PUT); when the registry refuses it, the push hashes the local blob: an altered one is
    still named as such, the registry never stores it under its digest, and no tag appears.
    A blob of the wrong size is refused before a byte is sent (no hang on a short body)."""
    ref = registry.ref(f"team/altered-{how}:1.0.0")
    store.build(context, ref)
    m = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))
    blob = store.layout.blob_path(m["layers"][0]["digest"])
    data = blob.read_bytes()
    blob.write_bytes({"flipped": data[:-9] + bytes([data[-9] ^ 1]) + data[-8:], "truncated": data[:-100],
                      "grown": data + b"x"}[how])
    with pytest.raises(PackageRejected) as exc:
        store.push(ref)
    assert exc.value.data["reason"] == "digest_mismatch"
    with pytest.raises(RegistryError) as exc2:
        other_store.pull(ref)
    assert exc2.value.data["reason"] == "not_found"
    # whatever the registry holds under that digest (other tests pushed the same content) is intact
    import hashlib

    for p in registry.root.rglob("data"):
        if p.parent.name == m["layers"][0]["digest"][7:]:
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.parent.name


def test_tampered_blob_on_the_registry_is_refused_before_anything_is_written(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/tampered:1.0.0")
    pub = publish(store, context, ref)
    other_store.trust_add(pub, registry.ref("team/*"))
    m = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))
    digest = m["layers"][0]["digest"][7:]
    [data] = [p for p in registry.root.rglob("data") if p.parent.name == digest]
    original = data.read_bytes()
    data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    before = store_files(other_store)
    try:
        with pytest.raises(PackageRejected) as exc:
            other_store.pull(ref)
        assert exc.value.data["reason"] == "digest_mismatch"
        assert other_store.list() == []
        assert not other_store.layout.has_blob(m["layers"][0]["digest"])
        assert list(other_store.layout.tmp.iterdir()) == []
        assert store_files(other_store) == before  # nor its manifest, config or signatures
    finally:
        data.write_bytes(original)


def test_a_404_is_a_clear_error(other_store: PackageStore, registry: Registry) -> None:
    with pytest.raises(RegistryError) as exc:
        other_store.pull(registry.ref("team/missing:1.0.0"))
    assert exc.value.data["reason"] == "not_found" and exc.value.data["status"] == 404
    assert "not found" in exc.value.message and registry.host in exc.value.message
    assert other_store.list() == []


@pytest.mark.parametrize("name", ["../../etc/passwd:1.0.0", "team/../x:1.0.0", "team//x:1", "team/./x:1",
                                  "Team/X:1", "team\\x:1", "/abs/x:1", "team/x:../1", "team/x@sha256:../../x"])
def test_names_that_would_escape_are_refused(store: PackageStore, registry: Registry, name: str) -> None:
    with pytest.raises(InvalidRequest):
        store.pull(registry.ref(name))
    with pytest.raises(InvalidRequest):
        parse_ref(name)
    assert sorted(p.name for p in store.layout.root.iterdir()) == ["blobs", "index.json", "oci-layout", "tmp"]


# ---------------------------------------------------------------- failures of a registry
def test_401_from_a_registry_that_wants_credentials(tmp_path: Path, store: PackageStore, context: Path) -> None:
    reg = start_registry(tmp_path / "auth", extra="auth:\n  silly:\n    realm: agentix-test\n    service: test\n")
    try:
        ref = reg.ref("team/hello:1.0.0")
        store.build(context, ref)
        for op in (store.push, store.pull):
            with pytest.raises(RegistryError) as exc:
                op(ref)
            assert exc.value.data["reason"] == "unauthorized", exc.value.message
        assert reg.files() == []  # nothing reached the registry
        # with credentials from registry/credentials.json the same push goes through
        (store.layout.root / "credentials.json").write_text(json.dumps(
            {reg.host: {"username": "ci", "password": "secret"}}))
        assert store.push(ref)["blobs_sent"] == 3
        store.trust_allow_unsigned(reg.ref("team/*"))
        assert store.pull(ref)["verdict"]["basis"] == "unsigned_allowed"
    finally:
        stop_registry(reg)


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "500"

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.mode == "hang":
            time.sleep(3)
        self.send_response(500 if self.mode == "500" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_POST = do_PUT = do_GET


@pytest.fixture
def broken_registry(request: pytest.FixtureRequest) -> Iterator[str]:
    with serving(type("H", (_Handler,), {"mode": request.param})) as host:
        yield host


@pytest.mark.parametrize("broken_registry", ["500"], indirect=True)
def test_5xx_is_a_clear_error_and_stores_nothing(tmp_path: Path, broken_registry: str) -> None:
    s = PackageStore(tmp_path / "h", timeout=2.0)
    with pytest.raises(RegistryError) as exc:
        s.pull(f"{broken_registry}/team/x:1.0.0")
    assert exc.value.data["reason"] == "server_error" and exc.value.data["status"] == 500
    assert s.list() == []


@pytest.mark.parametrize("broken_registry", ["hang"], indirect=True)
def test_a_registry_that_does_not_answer_times_out(tmp_path: Path, broken_registry: str) -> None:
    s = PackageStore(tmp_path / "h", timeout=0.5)
    with pytest.raises(RegistryError) as exc:
        s.pull(f"{broken_registry}/team/x:1.0.0")
    assert exc.value.data["reason"] == "timeout"
    assert s.list() == []


def test_an_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    from .conftest import free_port

    s = PackageStore(tmp_path / "h", timeout=2.0)
    with pytest.raises(RegistryError) as exc:
        s.pull(f"127.0.0.1:{free_port()}/team/x:1.0.0")
    assert exc.value.data["reason"] == "unreachable"


def test_interrupted_pull_leaves_no_partial_package(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref = registry.ref("team/interrupted:1.0.0")
    pub = publish(store, context, ref)
    other_store.trust_add(pub, registry.ref("team/*"))
    from agentix.packages import remote

    real = remote.RemoteRegistry.stage_blob  # every blob a pull fetches comes through here
    calls = {"n": 0}
    lock = threading.Lock()  # the layers download at once

    def dies_on_the_second_layer(self, ref_, desc, layout, *a):  # type: ignore[no-untyped-def]
        if desc.media_type.endswith("tar+gzip"):
            with lock:
                calls["n"] += 1
                n = calls["n"]
            if n == 2:
                raise RegistryError("connection reset", reason="unreachable")
        return real(self, ref_, desc, layout, *a)

    monkeypatch.setattr(remote.RemoteRegistry, "stage_blob", dies_on_the_second_layer)
    before = store_files(other_store)
    with pytest.raises(RegistryError):
        other_store.pull(ref)
    assert other_store.list() == []
    assert store_files(other_store) == before  # not even the blobs it fetched before it died
    assert calls["n"] == 2  # both layers were asked for
    monkeypatch.setattr(remote.RemoteRegistry, "stage_blob", real)
    assert other_store.pull(ref)["verdict"]["basis"] == "signed"  # and a retry completes it


def test_interrupted_push_leaves_no_tag_on_the_registry(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref = registry.ref("team/halfpushed:1.0.0")
    store.build(context, ref)
    from agentix.packages import remote

    real = remote.RemoteRegistry.push_blob
    calls = {"n": 0}

    def dies_after_one_blob(self, ref_, desc, layout, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RegistryError("connection reset", reason="unreachable")
        return real(self, ref_, desc, layout, **kw)

    monkeypatch.setattr(remote.RemoteRegistry, "push_blob", dies_after_one_blob)
    with pytest.raises(RegistryError):
        store.push(ref)
    with pytest.raises(RegistryError) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "not_found"


def test_pull_by_digest_checks_the_digest(store: PackageStore, other_store: PackageStore, context: Path,
                                          registry: Registry) -> None:
    ref = registry.ref("team/bydigest:1.0.0")
    pub = publish(store, context, ref)
    other_store.trust_add(pub, registry.ref("team/*"))
    digest = store.layout.resolve(parse_ref(ref)).digest
    name = registry.ref("team/bydigest")
    assert other_store.pull(f"{name}@{digest}")["digest"] == digest
    with pytest.raises(RegistryError):  # a digest the registry does not have
        other_store.pull(f"{name}@sha256:{'0' * 64}")


def _index(store: PackageStore) -> bytes:
    return (store.layout.root / "index.json").read_bytes()


@pytest.mark.parametrize("dies_at", ["config", "signature", "layer", "index"])
def test_a_pull_interrupted_at_any_step_tags_nothing_not_even_the_signatures(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch, dies_at: str) -> None:
    """The package's tag and its signatures' are written together, last, in one replacement of
    index.json: wherever a pull stops, the local index is exactly what it was."""
    ref = registry.ref("team/steps:1.0.0")
    pub = publish(store, context, ref)
    other_store.trust_add(pub, registry.ref("team/*"))
    before = _index(other_store)
    from agentix.packages import layout as layout_mod
    from agentix.packages import remote

    real_fetch, real_write = remote.RemoteRegistry.stage_blob, layout_mod.Layout._write_atomic
    kinds = {"config": "config.v1+json", "signature": "signature.v1+json", "layer": "tar+gzip"}

    def fetch(self, ref_, desc, layout, *a):  # type: ignore[no-untyped-def]
        if dies_at in kinds and desc.media_type.endswith(kinds[dies_at]):
            raise RegistryError("connection reset", reason="unreachable")
        return real_fetch(self, ref_, desc, layout, *a)

    def write(self, path, data):  # type: ignore[no-untyped-def]
        if dies_at == "index" and path.name == "index.json":
            raise OSError(28, "No space left on device")
        return real_write(self, path, data)

    monkeypatch.setattr(remote.RemoteRegistry, "stage_blob", fetch)
    monkeypatch.setattr(layout_mod.Layout, "_write_atomic", write)
    with pytest.raises((RegistryError, OSError)):
        other_store.pull(ref)
    assert _index(other_store) == before
    assert other_store.layout.entries() == []   # no package tag, no signature tag
    assert other_store.trust.highest("team/steps") is None
    monkeypatch.undo()
    assert other_store.pull(ref)["verdict"]["basis"] == "signed"  # and a retry completes it
    assert {str(r).rsplit(":", 1)[-1].endswith(".sig") for r, _ in other_store.layout.entries()} == {True, False}


def test_a_pull_writes_the_index_once_and_a_refused_pull_not_at_all(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref = registry.ref("team/once:1.0.0")
    pub = publish(store, context, ref)
    from agentix.packages import layout as layout_mod

    real_write = layout_mod.Layout._write_atomic
    writes: list[str] = []

    def write(self, path, data):  # type: ignore[no-untyped-def]
        writes.append(path.name)
        return real_write(self, path, data)

    monkeypatch.setattr(layout_mod.Layout, "_write_atomic", write)
    other_store.keys.generate("mine")
    other_store.trust_add("mine", registry.ref("team/*"))
    with pytest.raises(PackageRejected) as exc:   # signed, but not by a key this store trusts
        other_store.pull(ref)
    assert exc.value.data["reason"] == "untrusted_key"
    assert writes == [] and other_store.layout.entries() == []  # not even the signature's tag
    other_store.trust_add(pub, registry.ref("team/*"))
    other_store.pull(ref)
    assert writes == ["index.json"]   # the package and its signatures: one durable write
    assert len(other_store.layout.entries()) == 2


def test_a_big_blob_the_registry_has_is_found_while_its_upload_opens_and_that_upload_is_cancelled(
        tmp_path: Path, registry: Registry) -> None:
    """A blob over ASK_FIRST is asked about (HEAD, on a second client) while its upload session
    opens (POST): one round trip before the bytes, not two. When the registry has it, nothing
    is sent and the session is cancelled: the registry keeps no upload open."""
    import os

    from agentix.packages.layout import Descriptor, Layout
    from agentix.packages.remote import ASK_FIRST, RemoteRegistry

    layout = Layout(tmp_path / "local").init()
    data = os.urandom(ASK_FIRST + 1)
    desc = Descriptor("application/octet-stream", layout.put_bytes(data), len(data))
    ref = parse_ref(registry.ref("team/big:1.0.0"))
    remote = RemoteRegistry(registry.host)
    assert remote.push_blob(ref, desc, layout) == "sent"
    layout.blob_path(desc.digest).write_bytes(b"x" * len(data))  # were it sent again, it would be refused
    assert remote.push_blob(ref, desc, layout) == "present"
    assert remote.push_blob(ref, desc, layout) == "present"
    # an open session is a directory with `startedat` (distribution 2.8; a cancelled one keeps
    # only its hash state)
    assert list(registry.root.rglob("repositories/team/big/_uploads/*/startedat")) == []


def _pulled(store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
            name: str) -> tuple[str, Path]:
    ref = registry.ref(name)
    other_store.trust_add(publish(store, context, ref), registry.ref("team/*"))
    other_store.pull(ref)
    m = json.loads(other_store.layout.read_blob(other_store.layout.resolve(parse_ref(ref)).digest))
    return ref, other_store.layout.blob_path(m["layers"][0]["digest"])


def _hashers(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    from agentix.packages import layout as layout_mod

    made: list[object] = []
    real = layout_mod.Sha256Thread

    def counted() -> object:
        made.append(1)
        return real()

    monkeypatch.setattr(layout_mod, "Sha256Thread", counted)
    return made


def test_a_run_does_not_hash_again_a_layer_its_pull_hashed(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref, _ = _pulled(store, other_store, context, registry, "team/hashedonce:1.0.0")
    made = _hashers(monkeypatch)
    p = other_store.prepare(ref, "all", tmp_path / "run")
    assert made == []  # streamed without a second hash: the pull hashed it, its file is unchanged
    assert (p.program_dir / "agent" / "notes.txt").read_text() == "remember the milk\n"
    # a store that did not hash the blob itself (here: built it) hashes it while it unpacks
    store.trust_add("publisher", registry.ref("team/*"))
    store.prepare(ref, "all", tmp_path / "run2")
    layers = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))["layers"]
    assert len(made) == len(layers) >= 1


@pytest.mark.parametrize("how", ["rewritten_in_place", "replaced"])
def test_a_pulled_layer_altered_at_rest_is_hashed_again_and_refused(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path,
        how: str) -> None:
    ref, blob = _pulled(store, other_store, context, registry, f"team/altered-{how.replace('_', '-')}:1.0.0")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    if how == "rewritten_in_place":   # same inode, same size
        with open(blob, "r+b") as f:
            f.write(bytes(data))
    else:
        (blob.parent / "new").write_bytes(bytes(data))
        (blob.parent / "new").replace(blob)
    with pytest.raises(PackageRejected) as exc:
        other_store.prepare(ref, "all", tmp_path / "run")
    assert exc.value.data["reason"] == "digest_mismatch"
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".unpack-")] == []


def test_a_pulled_layer_altered_while_a_run_reads_it_is_refused(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agentix.packages import layout as layout_mod

    ref, blob = _pulled(store, other_store, context, registry, "team/racing:1.0.0")
    real = layout_mod.VerifyingReader.read

    def read_then_alter(self, size=-1):  # type: ignore[no-untyped-def]
        data = real(self, size)
        if self.digest == "sha256:" + blob.name and self.stamp is not None:
            os.utime(blob)   # a write after the open: the file's times move
        return data

    monkeypatch.setattr(layout_mod.VerifyingReader, "read", read_then_alter)
    with pytest.raises(PackageRejected) as exc:
        other_store.prepare(ref, "all", tmp_path / "run")
    assert exc.value.data["reason"] == "digest_mismatch" and "altered" in exc.value.message
    assert not (tmp_path / "run").exists()
