"""A refused pull leaves the local store exactly as it was: for every reason a pull is refused
(signature, rollback; trust, digest and an interruption: test_registry.py; and a `run` that pulled a package and
then refused to unpack it), the files under ``registry/`` — blobs, index.json, everything —
are byte for byte what they were before. And ``packages rm`` removes the blobs no tag needs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import AgentixError, PackageRejected, RegistryError
from agentix.core.package import Signature, parse_ref
from agentix.packages.layout import MANIFEST_TYPE, Descriptor
from agentix.packages.service import PackageStore
from agentix.packages.trust import add_signature, read_signatures, signature_ref

from .conftest import Registry, make_context, store_files as files
from .test_registry import publish
from .test_unpack import f, layer


def refused(store: PackageStore, ref: str, reason: str, **kw: Any) -> None:
    """Pull ``ref``; it must be refused for ``reason`` and leave the store's files unchanged."""
    before = files(store)
    with pytest.raises((PackageRejected, RegistryError)) as exc:
        store.pull(ref, **kw)
    assert exc.value.data["reason"] == reason, exc.value.message
    assert files(store) == before


def test_a_pull_refused_for_a_forged_signature_leaves_the_store_as_it_was(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/rp-forged:1.0.0")
    store.build(context, ref)
    store.keys.generate("publisher")
    store.sign(ref, "publisher")
    r = parse_ref(ref)
    desc = store.layout.resolve(r)
    [sig] = read_signatures(store.layout, r, desc.digest)
    store.layout.untag(signature_ref(r, desc.digest))
    add_signature(store.layout, r, desc, Signature(sig.keyid, sig.statement, bytes(64)))
    store.push(ref)
    other_store.trust_add(store.keys.describe("publisher")["public_key"], registry.ref("team/*"))
    refused(other_store, ref, "bad_signature")


def test_a_pull_refused_as_a_rollback_leaves_the_store_as_it_was(
        store: PackageStore, other_store: PackageStore, registry: Registry, tmp_path: Path) -> None:
    old, new = registry.ref("team/rp-rollback:1.0.0"), registry.ref("team/rp-rollback:2.0.0")
    pub = publish(store, make_context(tmp_path / "c1", "1.0.0"), old)
    publish(store, make_context(tmp_path / "c2", "2.0.0"), new)
    other_store.trust_add(pub, registry.ref("team/*"))
    other_store.pull(new)
    refused(other_store, old, "rollback")
    assert other_store.pull(old, allow_rollback=True)["verdict"]["rollback"] is True  # what was refused, not broken


def test_a_refused_pull_keeps_what_was_there_before_it(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    """The undo removes only what the refused pull wrote: a package pulled earlier that
    shares its layers keeps them, and its tags."""
    good, bad = registry.ref("team/rp-kept:1.0.0"), registry.ref("other/rp-kept:1.0.0")
    pub = publish(store, context, good)
    publish(store, context, bad)  # the same layers, a name the policy below does not trust
    other_store.trust_add(pub, registry.ref("team/*"))
    other_store.pull(good)
    other_store.keys.generate("mine")
    other_store.trust_add("mine", registry.ref("other/*"))
    refused(other_store, bad, "untrusted_key")
    assert other_store.verify(good).basis == "signed"
    other_store.prepare(good, "all", other_store.layout.tmp / "run-check")


def test_rm_removes_the_blobs_no_tag_needs_and_keeps_the_shared_ones(
        store: PackageStore, context: Path, tmp_path: Path) -> None:
    store.build(context, "team/a:1.0.0")
    store.build(context, "team/b:1.0.0")
    store.keys.generate("publisher")
    store.sign("team/a:1.0.0", "publisher")
    store.trust_allow_unsigned("team/b")
    shared = files(store)
    store.remove("team/a:1.0.0")   # b has the same content: every blob but a's signature's stays
    after = files(store)
    gone = sorted(set(shared) - set(after))
    assert len(gone) == 3 and all(p.startswith("blobs/") for p in gone)  # its signature: manifest, layer, {}
    assert [str(r) for r, _ in store.layout.entries()] == ["team/b:1.0.0"]  # no orphaned signature tag
    assert store.prepare("team/b:1.0.0", "all", store.layout.tmp / "run-b").digest  # b is whole
    store.remove("team/b:1.0.0")
    assert sorted(p for p in files(store) if p.startswith("blobs/")) == []


# ---------------------------------------------------------------- a run that pulled, then refused
def hostile(store: PackageStore, ref: str) -> None:
    """``ref`` rebuilt with a layer that writes outside its root (``../escape.txt``), signed
    by the store's publisher key: the signature is good, the unpack refuses it."""
    r = parse_ref(ref)
    m = json.loads(store.layout.read_blob(store.layout.resolve(r).digest))
    bad = layer(f("../escape.txt", b"out"))
    m["layers"] = [Descriptor(m["layers"][0]["mediaType"], store.layout.put_bytes(bad), len(bad)).to_data()]
    mdesc = store.layout.put_json(MANIFEST_TYPE, m)
    store.layout.untag(signature_ref(r, store.layout.resolve(r).digest))
    store.layout.tag(r, Descriptor(MANIFEST_TYPE, mdesc.digest, mdesc.size))
    store.sign(ref, "publisher")


def test_a_run_that_pulled_a_package_it_cannot_unpack_leaves_the_store_as_it_was(
        start_kernel: Any, store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/rp-hostile:1.0.0")
    store.build(context, ref)
    store.keys.generate("publisher")
    hostile(store, ref)
    store.push(ref)
    b = start_kernel()
    b.client.call("trust.add", key=store.keys.describe("publisher")["public_key"], pattern=registry.ref("team/*"))
    mine = PackageStore(b.home)  # reads the kernel's registry/ (its files only)
    before = files(mine)
    with pytest.raises(AgentixError) as exc:
        b.client.call("package.run", ref=ref, accept="all")
    assert exc.value.data.get("reason") == "dot_dot", exc.value
    assert files(mine) == before
    assert b.client.list() == []


def test_packages_gc_removes_what_no_tag_needs_and_keeps_every_package_whole(
        start_kernel: Any, tmp_path: Path) -> None:
    """A store an older agentix left untagged blobs in (its refused pulls did) and an unpacked
    tree of a package since removed: `agentix packages gc` removes those, keeps every tagged
    package runnable, and is audited."""
    import subprocess
    import sys

    k = start_kernel()

    def cli(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(k.home), *args],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    cli("build", str(make_context(tmp_path / "ctx")), "-t", "local/kept:1.0.0")
    cli("trust", "allow-unsigned", "local/*")
    store = PackageStore(k.home)  # the kernel's registry/, read (and one stray blob planted) from here
    stray = [store.layout.put_bytes(b"left by a refused pull %d" % i) for i in range(3)]
    orphan = store.layout.root / "unpacked" / ("0" * 64)
    orphan.mkdir(parents=True)
    (orphan / "seal.json").write_text("{}")
    # a crash mid-pull leaves its staged layer in tmp/; a write in flight is recent
    dead, live = store.layout.temp_path("pull"), store.layout.temp_path("pull")
    dead.write_bytes(b"staged by a pull that died")
    live.write_bytes(b"a download in flight")
    os.utime(dead, (time.time() - 2 * 3600,) * 2)
    kept = {p: h for p, h in files(store).items() if not any(p.endswith(s[7:]) for s in stray)
            and not p.startswith("unpacked/" + "0" * 64) and p != f"tmp/{dead.name}"}
    out = json.loads(cli("packages", "gc", "--json"))
    assert out == {"blobs_removed": 3, "unpacked_removed": 1, "temp_removed": 1}
    assert files(store) == kept and live.exists() and not dead.exists()
    assert json.loads(cli("packages", "gc", "--json")) == {"blobs_removed": 0, "unpacked_removed": 0,
                                                           "temp_removed": 0}
    assert k.client.call("package.verify", ref="local/kept:1.0.0")["basis"] == "unsigned_allowed"
    [ev, _] = [e for e in k.client.audit_tail(limit=500) if e["kind"] == "package.gc"]
    assert ev["data"]["blobs_removed"] == 3
