"""A pull downloads the layers while it finds the signatures and decides trust (the layers go
to the store's private ``tmp/``, verified, and are stored only once the package is trusted):
the layers are asked for before the verdict; a refused or failed pull leaves nothing of them —
no blob, no staged file — and a download still running when the pull is refused stops."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agentix.core.errors import PackageRejected, RegistryError
from agentix.core.package import parse_ref
from agentix.packages import remote
from agentix.packages.layout import Descriptor
from agentix.packages.service import PackageStore

from .conftest import Registry, store_files
from .test_registry import publish

#: how long the signature lookup waits for a layer download (only a broken pull waits it out)
PATIENCE = 20.0


def _layers(store: PackageStore, ref: str) -> list[str]:
    m = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))
    return [x["digest"] for x in m["layers"]]


@pytest.mark.parametrize("trusted", [True, False])
def test_the_layers_download_while_the_signatures_are_found_and_only_a_trusted_pull_keeps_them(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch, trusted: bool) -> None:
    """The signature lookup waits until every layer of the package has been downloaded and
    verified into ``tmp/``: a pull that fetched the layers only after the verdict would find
    none there. Trusted: the pull completes with those layers. Refused: the staged files go,
    and the store is byte for byte what it was."""
    ref = registry.ref(f"team/staged-{'yes' if trusted else 'no'}:1.0.0")
    pub = publish(store, context, ref)
    layers = _layers(store, ref)
    assert len(layers) >= 2
    if trusted:
        other_store.trust_add(pub, registry.ref("team/*"))
    else:
        other_store.keys.generate("mine")
        other_store.trust_add("mine", registry.ref("team/*"))
    staged: list[str] = []
    all_staged = threading.Event()
    in_time: list[bool] = []
    real_stage, real_sigs = remote.RemoteRegistry.stage_blob, PackageStore._remote_signatures

    def stage(self, ref_, desc, layout, *a):  # type: ignore[no-untyped-def]
        blob = real_stage(self, ref_, desc, layout, *a)
        if desc.digest in layers:
            assert blob.path.parent == layout.tmp and not layout.has_blob(desc.digest)  # not stored yet
            staged.append(desc.digest)
            if set(staged) == set(layers):
                all_staged.set()
        return blob

    def signatures(self, *a):  # type: ignore[no-untyped-def]
        in_time.append(all_staged.wait(PATIENCE))
        return real_sigs(self, *a)

    monkeypatch.setattr(remote.RemoteRegistry, "stage_blob", stage)
    monkeypatch.setattr(PackageStore, "_remote_signatures", signatures)
    before = store_files(other_store)
    if trusted:
        assert other_store.pull(ref)["verdict"]["basis"] == "signed"
        assert all(other_store.layout.has_blob(d) for d in layers)
        assert list(other_store.layout.tmp.iterdir()) == []
    else:
        with pytest.raises(PackageRejected) as exc:
            other_store.pull(ref)
        assert exc.value.data["reason"] == "untrusted_key"
        assert store_files(other_store) == before  # no layer, no staged file, no tag
    assert in_time == [True]  # every layer was downloaded while the signatures were looked for
    assert sorted(staged) == sorted(layers)


def test_a_layer_download_stops_when_the_pull_is_refused(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer still downloading when the verdict refuses the package is stopped at its next
    chunk (it does not run to its end) and leaves no file behind."""
    ref = registry.ref("team/staged-stop:1.0.0")
    publish(store, context, ref)  # no key of this publisher is trusted below
    other_store.keys.generate("mine")
    other_store.trust_add("mine", registry.ref("team/*"))
    started = threading.Event()
    outcomes: list[str] = []
    real_stage, real_decide = remote.RemoteRegistry.stage_blob, PackageStore._decide

    class InFlight(threading.Event):
        """The ``stop`` a layer download sees: at its first chunk it says the download is
        under way and waits there until the pull sets the real ``stop`` (or gives up after
        ``PATIENCE``: then the download runs to its end, and the test fails)."""

        def __init__(self, stop: threading.Event) -> None:
            super().__init__()
            self.stop = stop

        def is_set(self) -> bool:
            started.set()
            self.stop.wait(PATIENCE)
            return self.stop.is_set()

    def stage(self, ref_, desc, layout, max_size, stop=None):  # type: ignore[no-untyped-def]
        if not desc.media_type.endswith("tar+gzip"):
            return real_stage(self, ref_, desc, layout, max_size, stop)
        try:
            blob = real_stage(self, ref_, desc, layout, max_size, InFlight(stop))
        except PackageRejected as err:
            outcomes.append(err.data["reason"])
            raise
        outcomes.append("staged")
        return blob

    def decide(self, *a, **kw):  # type: ignore[no-untyped-def]
        assert started.wait(PATIENCE)  # a layer is downloading when the verdict comes
        return real_decide(self, *a, **kw)

    monkeypatch.setattr(remote.RemoteRegistry, "stage_blob", stage)
    monkeypatch.setattr(PackageStore, "_decide", decide)
    before = store_files(other_store)
    with pytest.raises(PackageRejected) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "untrusted_key"
    assert outcomes and set(outcomes) == {"stopped"}  # each layer's download ended early
    assert store_files(other_store) == before


def test_a_staged_blob_is_verified_and_invisible_until_committed(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/staged-unit:1.0.0")
    publish(store, context, ref)
    digest = _layers(store, ref)[0]
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest,
                      store.layout.blob_path(digest).stat().st_size)
    client = remote.RemoteRegistry(parse_ref(ref).registry or "")
    lay = other_store.layout
    with client.stage_blob(parse_ref(ref), desc, lay, 1 << 30) as blob:
        assert blob.path.read_bytes() == store.layout.blob_path(digest).read_bytes()
        assert not lay.has_blob(digest)
    assert list(lay.tmp.iterdir()) == []  # discarded: as if never fetched
    assert not lay.has_blob(digest)
    blob = client.stage_blob(parse_ref(ref), desc, lay, 1 << 30)
    blob.commit()
    assert lay.has_blob(digest) and list(lay.tmp.iterdir()) == []
    stop = threading.Event()
    stop.set()
    with pytest.raises(PackageRejected) as exc:  # stopped before its first chunk is kept
        client.stage_blob(parse_ref(ref), desc, other_store.layout, 1 << 30, stop)
    assert exc.value.data["reason"] == "stopped"
    assert list(lay.tmp.iterdir()) == []
    wrong = Descriptor(desc.media_type, "sha256:" + "0" * 64, desc.size)
    with pytest.raises(RegistryError):  # the registry has no such blob
        client.stage_blob(parse_ref(ref), wrong, lay, 1 << 30)
    assert list(lay.tmp.iterdir()) == []
