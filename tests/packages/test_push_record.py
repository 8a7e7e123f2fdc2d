"""The record of pushed blobs (packages/pushed.py, in agentix.db) and the pushes it shortens, against
the real registry on loopback: a recorded blob is neither asked about nor sent again, a blob
recorded in another repository is mounted, and the record is only ever a hint — a registry
that lost a recorded blob gets it again, a mount the registry refuses or cannot do is an
ordinary upload, and a push that cannot complete tags nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import NotFound
from agentix.core.package import parse_ref
from agentix.packages.pushed import MAX_BLOBS, MAX_REPOS, PushRecord
from agentix.packages.service import PackageStore
from agentix.packages.trust import signature_ref
from agentix.store.db import Database

from .conftest import Registry
from .test_referrers import ReferrersFront


def publish(store: PackageStore, context: Path, ref: str) -> dict:
    store.build(context, ref)
    if not store.keys.list():
        store.keys.generate("publisher")
    store.sign(ref, "publisher")
    return store.push(ref)


def package_blobs(store: PackageStore, ref: str) -> list[str]:
    m = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))
    return [m["config"]["digest"], *[x["digest"] for x in m["layers"]]]


def stored_blobs(registry: Registry) -> set[str]:
    """The blobs whose bytes the registry holds (a mount adds a link, not bytes)."""
    return {p.parent.name for p in registry.root.rglob("data") if "blobs" in p.parts}


def has_blob(host: str, name: str, digest: str) -> bool:
    return httpx.head(f"http://{host}/v2/{name}/blobs/{digest}").status_code == 200


def pulls_and_runs(store: PackageStore, publisher: PackageStore, ref: str, pattern: str, tmp: Path) -> None:
    store.trust_add(publisher.keys.describe("publisher")["public_key"], pattern)
    assert store.pull(ref)["verdict"]["basis"] == "signed"
    p = store.prepare(ref, ["tool: echo"], tmp)
    assert (p.program_dir / "agent" / "notes.txt").read_text() == "remember the milk\n"


@pytest.fixture
def front(registry: Registry) -> Iterator[ReferrersFront]:
    f = ReferrersFront(registry.host)
    f.supported = False  # as the registry behind it: no referrers API
    yield f
    f.close()


def test_a_second_repository_mounts_the_blobs_instead_of_sending_them(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path) -> None:
    publish(store, context, registry.ref("team/mount-a:1.0.0"))
    before = stored_blobs(registry)
    ref = registry.ref("team/mount-b:1.0.0")
    r = publish(store, context, ref)
    blobs = package_blobs(store, ref)
    assert r["blobs_mounted"] >= len(blobs)   # the package's blobs (and the signature's empty config)
    assert r["blobs_sent"] == 1               # only the signature, which names the new repository
    new = stored_blobs(registry) - before  # the signature and its manifest: none of the package's bytes
    assert len(new) == 2 and not new & {b[7:] for b in blobs}
    assert all(has_blob(registry.host, "team/mount-b", b) for b in blobs)
    pulls_and_runs(other_store, store, ref, registry.ref("team/*"), tmp_path / "run")


def test_a_repush_asks_about_and_sends_nothing_it_recorded(
        store: PackageStore, context: Path, registry: Registry, front: ReferrersFront) -> None:
    ref = front.ref("team/recorded:1.0.0")
    first = publish(store, context, ref)
    assert first["blobs_known"] == 0 and first["blobs_sent"] >= 3
    front.requests.clear()
    again = store.push(ref)
    assert again["blobs_sent"] == again["blobs_mounted"] == 0
    assert again["blobs_known"] == first["blobs_sent"]
    assert [(m, p) for m, p in front.requests if "/blobs/" in p] == []  # no HEAD, no upload


def test_a_registry_that_lost_a_recorded_blob_gets_it_again(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("team/lost:1.0.0")
    publish(store, context, ref)
    layer = package_blobs(store, ref)[1]
    assert httpx.delete(f"http://{registry.host}/v2/team/lost/blobs/{layer}").status_code == 202
    assert not has_blob(registry.host, "team/lost", layer)
    r = store.push(ref)  # the record says it is there; the registry refuses the manifest; it is sent
    assert r["blobs_sent"] == 1 and r["blobs_known"] >= 2
    assert has_blob(registry.host, "team/lost", layer)
    assert PushRecord(store.trust.db, registry.host).has(layer, "team/lost")
    pulls_and_runs(other_store, store, ref, registry.ref("team/*"), tmp_path / "run")


def test_a_registry_that_lost_a_recorded_signature_blob_gets_it_again(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path) -> None:
    """The signature's manifest goes up beside the package's (on its own thread): its
    recovery works the same way."""
    ref = registry.ref("team/lostsig:1.0.0")
    publish(store, context, ref)
    sig = store.layout.resolve(signature_ref(parse_ref(ref), store.layout.resolve(parse_ref(ref)).digest))
    [sig_layer] = [x["digest"] for x in json.loads(store.layout.read_blob(sig.digest))["layers"]]
    assert httpx.delete(f"http://{registry.host}/v2/team/lostsig/blobs/{sig_layer}").status_code == 202
    r = store.push(ref)
    assert r["blobs_sent"] == 1 and r["signatures_as"] == "tag"
    assert has_blob(registry.host, "team/lostsig", sig_layer)
    pulls_and_runs(other_store, store, ref, registry.ref("team/*"), tmp_path / "run")


def test_a_registry_that_does_not_name_the_lost_blob_gets_every_recorded_one_again(
        store: PackageStore, context: Path, front: ReferrersFront) -> None:
    """``MANIFEST_BLOB_UNKNOWN`` without the digest in its detail (the spec leaves the detail
    free-form): every blob the record vouched for is sent (or found present) again."""
    ref = front.ref("team/vague:1.0.0")
    publish(store, context, ref)
    refused: list[str] = []

    def vague_once(method: str, path: str) -> tuple[int, object] | None:
        if method == "PUT" and path.endswith("/manifests/1.0.0") and not refused:
            refused.append(path)
            return 400, {"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}]}
        return None

    front.intercept = vague_once
    front.requests.clear()
    r = store.push(ref)
    assert refused
    blobs = package_blobs(store, ref)
    asked = [p for m, p in front.requests if m in ("HEAD", "POST") and "/blobs/" in p]
    assert len(asked) == len(blobs)  # each package blob asked about (HEAD) or sent (POST) again
    assert r["blobs_known"] == 2  # the signature's two stayed known
    assert [p for m, p in front.requests if m == "PUT" and p.endswith("/manifests/1.0.0")] == [refused[0]] * 2


def test_a_blob_lost_on_both_sides_is_refused_and_tags_nothing(
        store: PackageStore, context: Path, registry: Registry) -> None:
    publish(store, context, registry.ref("team/gone:1.0.0"))
    ref = registry.ref("team/gone:latest")
    store.build(context, ref)   # the same package under a tag the registry has not seen
    layer = package_blobs(store, ref)[1]
    assert httpx.delete(f"http://{registry.host}/v2/team/gone/blobs/{layer}").status_code == 202
    store.layout.blob_path(layer).unlink()
    with pytest.raises(NotFound):
        store.push(ref)
    assert httpx.get(f"http://{registry.host}/v2/team/gone/manifests/latest").status_code == 404
    assert not has_blob(registry.host, "team/gone", layer)
    # and the record no longer claims it
    assert not PushRecord(store.trust.db, registry.host).has(layer, "team/gone")


def test_a_mount_the_registry_refuses_is_an_ordinary_upload(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront, tmp_path: Path) -> None:
    """As from a registry whose credentials for us cannot read the ``from`` repository: it
    answers the mount with 403 DENIED (distribution behind a token service does so)."""
    first = publish(store, context, front.ref("team/private:1.0.0"))
    refused = []

    def deny_mounts(method: str, path: str) -> tuple[int, object] | None:
        if method == "POST" and "mount=" in path:
            refused.append(path)
            return 403, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
        return None

    front.intercept = deny_mounts
    ref = front.ref("team/public:1.0.0")
    r = publish(store, context, ref)
    assert refused and r["blobs_mounted"] == 0
    assert r["blobs_sent"] == first["blobs_sent"]  # every blob, as for the first push
    front.intercept = None
    pulls_and_runs(other_store, store, ref, front.ref("team/*"), tmp_path / "run")


def test_a_mount_from_a_repository_without_the_blob_is_an_ordinary_upload(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry, tmp_path: Path) -> None:
    first = publish(store, context, registry.ref("team/first:1.0.0"))
    record = PushRecord(store.trust.db, registry.host)
    for d in list(record.blobs):  # a wrong hint: the registry opens an upload instead of mounting (202)
        record.forget([d], "team/first")
        record.add([d], "team/nowhere")
    record.save()
    ref = registry.ref("team/second:1.0.0")
    r = publish(store, context, ref)
    assert r["blobs_mounted"] == 0 and r["blobs_sent"] == first["blobs_sent"]
    pulls_and_runs(other_store, store, ref, registry.ref("team/*"), tmp_path / "run")


# ---------------------------------------------------------------- the record itself
D = [f"sha256:{hashlib.sha256(bytes([i])).hexdigest()}" for i in range(8)]


def db_at(root: Path) -> Database:
    return Database(root / "agentix.db", checkpoint_every=0)


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"host": "elsewhere:5000", "blobs": {}}',
                                     b'{"host": "reg:5000", "blobs": {"../../etc": ["a"], "sha256:zz": ["a"]}}',
                                     b'{"host": "reg:5000", "blobs": {"' + D[0].encode() + b'": [1, null, ""]}}'])
def test_a_corrupt_or_foreign_old_record_file_is_empty_and_removed(tmp_path: Path, content: bytes) -> None:
    legacy = tmp_path / "pushed"
    legacy.mkdir()
    (legacy / f"{hashlib.sha256(b'reg:5000').hexdigest()[:32]}.json").write_bytes(content)
    with db_at(tmp_path) as db:
        rec = PushRecord(db, "reg:5000", legacy_root=legacy)
        assert rec.blobs == {}
        rec.save()
        assert not legacy.exists()
        assert PushRecord(db, "reg:5000").blobs == {}


def test_an_old_record_file_is_imported_into_the_database_once_and_removed(tmp_path: Path) -> None:
    """DESIGN.md §9: state lives in agentix.db, no side files. What an older agentix wrote
    to registry/pushed/<hash>.json comes along (order kept: the newest repository last)."""
    legacy = tmp_path / "pushed"
    legacy.mkdir()
    path = legacy / f"{hashlib.sha256(b'reg:5000').hexdigest()[:32]}.json"
    path.write_text(json.dumps({"host": "reg:5000", "blobs": {D[0]: ["a", "b/c"], D[1]: ["d"]}}))
    with db_at(tmp_path) as db:
        rec = PushRecord(db, "reg:5000", legacy_root=legacy)
        assert rec.blobs == {D[0]: ["a", "b/c"], D[1]: ["d"]}
        rec.save()
        assert not path.exists() and not legacy.exists()
        again = PushRecord(db, "reg:5000", legacy_root=legacy)
        assert again.blobs == rec.blobs and again.source(D[0], "x") == "b/c"
        rows = db.reader().execute("SELECT count(*) FROM pushed_blobs WHERE host='reg:5000'").fetchone()[0]
        assert rows == 3


def test_a_push_keeps_its_record_in_the_database_not_in_a_file(
        store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/indb:1.0.0")
    publish(store, context, ref)
    assert not (store.layout.root / "pushed").exists()
    rows = store.trust.db.reader().execute("SELECT digest, repo FROM pushed_blobs WHERE host=?",
                                           (registry.host,)).fetchall()
    assert {d for d, r in rows if r == "team/indb"} >= set(package_blobs(store, ref))


def test_the_record_is_bounded(tmp_path: Path) -> None:
    with db_at(tmp_path) as db:
        rec = PushRecord(db, "reg:5000")
        for i in range(MAX_REPOS + 3):
            rec.add([D[0]], f"team/r{i}")
        assert rec.blobs[D[0]] == [f"team/r{i}" for i in range(3, MAX_REPOS + 3)]
        many = [f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(MAX_BLOBS + 5)]
        rec.add(many, "team/x")
        assert len(rec.blobs) == MAX_BLOBS and many[-1] in rec.blobs and D[0] not in rec.blobs
        rec.save()
        assert PushRecord(db, "reg:5000").blobs == rec.blobs
        assert PushRecord(db, "other:5000").blobs == {}  # per host


def test_two_records_of_one_host_saved_in_turn_stay_within_the_bound(tmp_path: Path) -> None:
    with db_at(tmp_path) as db:
        a, b = PushRecord(db, "reg:5000"), PushRecord(db, "reg:5000")
        a.add([f"sha256:{hashlib.sha256(b'a' + str(i).encode()).hexdigest()}" for i in range(MAX_BLOBS)], "r")
        b.add([f"sha256:{hashlib.sha256(b'b' + str(i).encode()).hexdigest()}" for i in range(10)], "r")
        a.save()
        b.save()
        assert len(PushRecord(db, "reg:5000").blobs) == MAX_BLOBS
        assert all(PushRecord(db, "reg:5000").has(d, "r") for d in b.blobs)  # the last written stay


ops = st.lists(st.tuples(st.sampled_from(["add", "forget", "reload"]), st.lists(st.sampled_from(D), max_size=4),
                         st.sampled_from(["a", "b/c", "d"])), max_size=30)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_the_record_says_what_was_last_added_or_forgotten(tmp_path_factory: pytest.TempPathFactory,
                                                          steps: list[tuple[str, list[str], str]]) -> None:
    root = tmp_path_factory.mktemp("rec")
    with db_at(root) as db:
        rec = PushRecord(db, "reg:5000")
        model: set[tuple[str, str]] = set()
        for op, digests, repo in steps:
            if op == "add":
                rec.add(digests, repo)
                model |= {(d, repo) for d in digests}
            elif op == "forget":
                rec.forget(digests, repo)
                model -= {(d, repo) for d in digests}
            else:
                rec.save()
                rec = PushRecord(db, "reg:5000")
            for d in D:
                for r in ("a", "b/c", "d"):
                    assert rec.has(d, r) == ((d, r) in model)
                    src = rec.source(d, r)
                    assert src is None or (src != r and (d, src) in model)
                    assert (src is None) == (not any((d, o) in model for o in ("a", "b/c", "d") if o != r))
