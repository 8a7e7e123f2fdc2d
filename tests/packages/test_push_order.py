"""A push sends the largest blob first, alone until its upload session is open (its POST is not
queued behind the small blobs'), then the others at once; when the largest fails before its
bytes go, no other blob is sent and nothing is tagged."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from agentix.core.errors import RegistryError
from agentix.core.package import parse_ref
from agentix.packages import remote
from agentix.packages.service import PackageStore

from .conftest import Registry

#: how long the largest blob's upload session takes to open here: a window wide enough for
#: any other upload that does not wait for it to start inside it
HELD = 0.5


def _sizes(store: PackageStore, ref: str) -> dict[str, int]:
    m = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))
    return {d["digest"]: d["size"] for d in [m["config"], *m["layers"]]}


def test_the_largest_blob_opens_its_upload_before_any_other_blob_starts(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref = registry.ref("team/order:1.0.0")
    store.build(context, ref)
    sizes = _sizes(store, ref)
    largest = max(sizes, key=lambda d: sizes[d])
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    real_push, real_open = remote.RemoteRegistry.push_blob, remote.RemoteRegistry._open_upload

    def push_blob(self, ref_, desc, layout, **kw):  # type: ignore[no-untyped-def]
        with lock:
            events.append(("start", desc.digest))
        return real_push(self, ref_, desc, layout, **kw)

    def open_upload(self, what, uploads, ref_, desc):  # type: ignore[no-untyped-def]
        if desc.digest == largest:
            time.sleep(HELD)
        r = real_open(self, what, uploads, ref_, desc)
        with lock:
            events.append(("opened", desc.digest))
        return r

    monkeypatch.setattr(remote.RemoteRegistry, "push_blob", push_blob)
    monkeypatch.setattr(remote.RemoteRegistry, "_open_upload", open_upload)
    out = store.push(ref)
    assert out["blobs_sent"] == len(sizes)
    assert events[:2] == [("start", largest), ("opened", largest)]
    assert {d for e, d in events if e == "start"} == set(sizes)  # then every other blob
    monkeypatch.undo()
    other_store.trust_allow_unsigned(registry.ref("team/*"))  # published whole
    assert other_store.pull(ref)["digest"] == store.layout.resolve(parse_ref(ref)).digest


def test_when_the_largest_blob_fails_no_other_blob_is_sent_and_nothing_is_tagged(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref = registry.ref("team/order-fails:1.0.0")
    store.build(context, ref)
    sizes = _sizes(store, ref)
    largest = max(sizes, key=lambda d: sizes[d])
    started: list[str] = []
    real_push, real_open = remote.RemoteRegistry.push_blob, remote.RemoteRegistry._open_upload

    def push_blob(self, ref_, desc, layout, **kw):  # type: ignore[no-untyped-def]
        started.append(desc.digest)
        return real_push(self, ref_, desc, layout, **kw)

    def open_upload(self, what, uploads, ref_, desc):  # type: ignore[no-untyped-def]
        if desc.digest == largest:
            time.sleep(HELD)  # any upload not waiting for this one starts meanwhile
            raise RegistryError("connection reset", reason="unreachable")
        return real_open(self, what, uploads, ref_, desc)

    before = registry.files()
    monkeypatch.setattr(remote.RemoteRegistry, "push_blob", push_blob)
    monkeypatch.setattr(remote.RemoteRegistry, "_open_upload", open_upload)
    with pytest.raises(RegistryError):
        store.push(ref)
    assert started == [largest]
    assert registry.files() == before  # not a blob, not a tag
    with pytest.raises(RegistryError) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "not_found"
