"""Agent snapshots as OCI artifacts in the local package store (the same layout, blobs,
signatures, push and pull as packages; docs/packages.md, "Snapshots").

A snapshot is a manifest of artifact type ``application/vnd.agentix.snapshot.v1`` whose
config is the snapshot document (canonical JSON, ``core/snapshot.py`` checks its shape:
manifest, grant groups, taint, saved state, memory records, pending messages, budget spent,
the workspace entries skipped) and whose one layer is the agent's workspace as a
reproducible tar+gzip (sorted entries, mtime 0, owners 0, fixed modes).

Same state, same digest: nothing in the document or the layer depends on the time of the
snapshot, the agent's id or the order a directory lists in.

The workspace is read by ``read_workspace`` — the one call to swap for the kernel's safe
walker (``sandbox/safewalk.py``, which has only a copying walk so far: the swap needs an
iterating one there, handed in by the kernel, since ``packages`` may not import ``sandbox``).
Today it is the package builder's walker: directory fds, ``O_NOFOLLOW``, look before opening (a FIFO or device is
never opened; an open is ``O_NONBLOCK``), regular files and directories only — symlinks,
FIFOs, sockets and devices are *skipped* and named in ``workspace.skipped`` — and bounded
(entries and bytes, the same bounds a restore unpacks within).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentix.core.canonical import canonical_json
from agentix.core.errors import NotFound, PackageRejected
from agentix.core.package import Ref
from agentix.core.snapshot import check_document
from agentix.packages.build import WalkOptions, write_tree_layer
from agentix.packages.layout import MANIFEST_TYPE, Descriptor, Layout
from agentix.packages.unpack import UnpackLimits, unpack_layers

__all__ = ["SNAPSHOT_ARTIFACT_TYPE", "SNAPSHOT_CONFIG_TYPE", "SNAPSHOT_VERSION", "Snapshot", "made_here",
           "mark_made", "read_snapshot", "read_workspace", "unpack_snapshot", "write_snapshot"]

SNAPSHOT_ARTIFACT_TYPE = "application/vnd.agentix.snapshot.v1"
SNAPSHOT_CONFIG_TYPE = "application/vnd.agentix.snapshot.config.v1+json"
#: the version a snapshot's signature statement names (snapshots are told apart by digest)
SNAPSHOT_VERSION = "0.0.0"
#: workspace layers are gzip *stored* (level 0: framing and CRC, no deflate): a snapshot is
#: written whole every time (no layer cache), and deflate — even level 1, on incompressible
#: bytes — made packing 3-4x slower (bench/packages.py: snapshot + restore is measured against
#: `tar -cf` + `tar -xf`, goal <= 2x; level 0 gave 1.7x-3.8x, level 1 about 10x).
#: The price is size: a snapshot is as large as the workspace.
SNAPSHOT_GZIP_LEVEL = 0
MAX_DOCUMENT = 64 << 20


@dataclass(frozen=True)
class Snapshot:
    ref: Ref | None
    digest: str
    document: dict[str, Any]
    layers: tuple[Descriptor, ...]


def read_workspace(workspace: Path, layout: Layout, limits: UnpackLimits) -> tuple[Descriptor, list[str]]:
    """The workspace as one layer in ``layout``, and the entries skipped (not regular files
    or directories). The one place the workspace is read: swap in the safe walker here."""
    skipped: list[str] = []
    opts = WalkOptions(special="skip", skipped=skipped, hash_files=False, skip_bytecode=False,
                       max_bytes=limits.max_bytes, max_entries=limits.max_entries)
    desc = write_tree_layer(workspace, layout, opts, SNAPSHOT_GZIP_LEVEL)
    return desc, sorted(skipped)


def write_snapshot(layout: Layout, document: dict[str, Any], layer: Descriptor) -> tuple[str, int]:
    """Store the document and the manifest; return (manifest digest, size). Tags nothing."""
    check_document(document)
    body = canonical_json(document)
    config = Descriptor(SNAPSHOT_CONFIG_TYPE, layout.put_bytes(body), len(body))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": SNAPSHOT_ARTIFACT_TYPE,
        "config": config.to_data(),
        "layers": [layer.to_data()],
        "annotations": {"org.opencontainers.image.title": str(document["metadata"].get("agent", ""))},
    }
    mbytes = canonical_json(manifest)
    return layout.put_bytes(mbytes), len(mbytes)


def _made_path(layout: Layout, digest: str) -> Path:
    hexpart = digest.removeprefix("sha256:")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise PackageRejected(f"{digest!r} is not a sha256 digest", reason="malformed_manifest")
    return layout.root / "made" / hexpart


def mark_made(layout: Layout, digest: str) -> None:
    """Remember that this kernel wrote the snapshot ``digest`` itself (its grants were held by
    one of its own agents). A pulled snapshot is never marked: its grants are only what the
    publisher *says* the agent held."""
    path = _made_path(layout, digest)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        layout._write_atomic(path, b"")


def made_here(layout: Layout, digest: str) -> bool:
    return _made_path(layout, digest).exists()


def read_snapshot(layout: Layout, ref: Ref | None, digest: str) -> Snapshot:
    """The snapshot whose manifest is ``digest``: every blob read is checked against its digest."""
    try:
        m = layout.read_json(digest)
    except NotFound:
        raise NotFound(f"snapshot {digest} is not in the local store", digest=digest) from None
    if not isinstance(m, dict) or m.get("artifactType") != SNAPSHOT_ARTIFACT_TYPE:
        raise PackageRejected(f"{ref or digest} is not an agentix snapshot", reason="not_a_snapshot")
    cd = Descriptor.from_data(m.get("config"))
    if cd.media_type != SNAPSHOT_CONFIG_TYPE:
        raise PackageRejected(f"{ref or digest} is not an agentix snapshot (config {cd.media_type})",
                              reason="not_a_snapshot")
    try:
        doc = json.loads(layout.read_blob(cd.digest, MAX_DOCUMENT))
    except ValueError:
        raise PackageRejected("the snapshot document is not JSON", reason="malformed_manifest") from None
    layers = tuple(Descriptor.from_data(x) for x in m.get("layers", []))
    return Snapshot(ref, digest, check_document(doc), layers)


def unpack_snapshot(layout: Layout, snap: Snapshot, dest: Path, limits: UnpackLimits) -> Path:
    """Unpack the workspace into the new directory ``dest`` (every layer verified as it
    streams, before ``dest`` appears; the unpacker's refusals — links, devices, '..', bombs —
    apply)."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(layout.open_verifying(d)) for d in snap.layers]
        return unpack_layers(files, dest, limits)
