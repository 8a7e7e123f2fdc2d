"""Agent snapshots as OCI artifacts in the local package store (the same layout, blobs,
signatures, push and pull as packages; docs/packages.md, "Snapshots").

A snapshot is a manifest of artifact type ``application/vnd.agentix.snapshot.v1`` whose
config is the snapshot document (canonical JSON, ``core/snapshot_rules.py`` checks its shape:
manifest, grant groups, taint, saved state, memory records, pending messages, budget spent,
the workspace entries skipped) and whose one layer is the agent's workspace as a
reproducible plain tar (sorted entries, mtime 0, owners 0, fixed modes; ``PLAIN_TAR_TYPE``).

Same state, same digest: nothing in the document or the layer depends on the time of the
snapshot, the agent's id or the order a directory lists in.

The workspace is read by ``read_workspace`` through the kernel's safe walker
(``sandbox/safewalk.walk``, handed in by the kernel as ``walk``: ``packages`` may not import
``sandbox``): directory fds, ``O_NOFOLLOW``, look before opening (a FIFO or device is never
opened; an open is ``O_NONBLOCK``; the opened descriptor must be the inode looked at),
regular files and directories only — symlinks, FIFOs, sockets, devices and files with more
than one hard link (another name of such a file may be a host file) are *skipped* and named in
``workspace.skipped`` — and bounded (entries, depth and bytes, the bounds a restore unpacks
within). Each file is opened once and its bytes are read from that descriptor, so nothing
swapped in after the look (a symlink to ``/etc/shadow``, a directory turned into a link) is
ever read.

The layer is written in one pass (``_LayerOut``): tar headers (PAX, normalised as above)
and file bytes are gathered into 1 MiB batches, each written with one ``writev``, hashed as
it is written (SHA-256 on a worker thread, one hand-off per batch: hashlib releases the GIL)
and written back to disk as they go (``layout.start_writeback``); the layer is then fsynced
once (not per file) and moved into the store without being read again.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentix.core.canonical import bounded_loads
from agentix.core.errors import InvalidRequest, NotFound, PackageRejected
from agentix.core.package import Ref
from agentix.core.snapshot_rules import check_document
from agentix.packages.layout import (CHUNK, MANIFEST_TYPE, Descriptor, Layout, Sha256Thread, image_manifest,
                                     start_writeback)
from agentix.packages.tarhead import plain_header
from agentix.packages.unpack import PLAIN_TAR_TYPE, UnpackLimits, gzipped, unpack_layers

__all__ = ["SNAPSHOT_ARTIFACT_TYPE", "SNAPSHOT_CONFIG_TYPE", "SNAPSHOT_VERSION", "Snapshot", "WalkedEntry",
           "Walker", "read_snapshot", "read_workspace", "unpack_snapshot",
           "write_snapshot"]

SNAPSHOT_ARTIFACT_TYPE = "application/vnd.agentix.snapshot.v1"
SNAPSHOT_CONFIG_TYPE = "application/vnd.agentix.snapshot.config.v1+json"
#: the version a snapshot's signature statement names (snapshots are told apart by digest)
SNAPSHOT_VERSION = "0.0.0"
#: workspace layers are plain (uncompressed) tar, ``PLAIN_TAR_TYPE``: a snapshot is written
#: whole every time (no layer cache), and deflate — even level 1, on incompressible bytes —
#: made packing 3-4x slower; gzip *stored* blocks (no deflate, the previous format) still
#: cost a CRC-32 over every byte when packing and again when unpacking, and an inflate copy
#: (bench/packages.py: snapshot + restore is measured against `tar -cf` + `tar -xf`, goal
#: <= 2x). The price is size: a snapshot is as large as the workspace (as the stored gzip
#: was). Older snapshots (tar+gzip layers) restore as before: the unpacker follows the
#: layer's media type.
_BATCH = 1 << 20        # one writev and one hashing hand-off per MiB of layer
_MAX_PARTS = 512        # and at most this many pieces per writev (well under IOV_MAX)
_WRITEBACK = 8 << 20    # start writing the layer to disk every 8 MiB (layout.start_writeback)
_ZEROS = bytes(tarfile.BLOCKSIZE)
MAX_DOCUMENT = 64 << 20


@dataclass(frozen=True)
class Snapshot:
    ref: Ref | None
    digest: str
    document: dict[str, Any]
    layers: tuple[Descriptor, ...]


class WalkedEntry(Protocol):
    """What the walker yields (``sandbox/safewalk.WalkEntry``)."""

    @property
    def rel(self) -> str: ...
    @property
    def is_dir(self) -> bool: ...
    @property
    def mode(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def fd(self) -> int | None: ...


#: the kernel's safe walk of a workspace: (workspace, skipped, max_bytes, max_entries) ->
#: directories and opened regular files in a fixed order; what it skips is appended to
#: ``skipped``; over a bound or an unreadable root it raises ``AgentixError`` itself
Walker = Callable[[Path, list[str], int, int], Iterator[WalkedEntry]]


def read_workspace(workspace: Path, layout: Layout, limits: UnpackLimits,
                   walk: Walker) -> tuple[Descriptor, list[str]]:
    """The workspace as one layer in ``layout``, and the entries skipped (not regular files
    or directories, or hard-linked files). ``walk`` is the kernel's safe walker: the one way
    the workspace is read."""
    skipped: list[str] = []
    tmp = layout.temp_path("layer")
    try:
        with contextlib.closing(walk(workspace, skipped, limits.max_bytes, limits.max_entries)) as entries:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                out = _LayerOut(fd)
                try:
                    for e in entries:
                        _add(out, e)
                    out.write(_ZEROS * 2)  # the end of the archive, padded to a whole record, as
                    out.write(bytes(-out.pending_size % tarfile.RECORDSIZE))  # tarfile does
                    digest, size = out.close()
                finally:
                    out.abort()
                os.fsync(fd)
                # hashed as it was written, by us, into the store's private tmp/: no second read;
                # with the descriptor, the store remembers the file's stamp, so a restore while
                # the blob keeps it streams the layer without hashing it again
                layout.commit_file(tmp, digest, hashed=True, fd=fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
    return Descriptor(PLAIN_TAR_TYPE, digest, size), sorted(skipped)


def _add(out: _LayerOut, e: WalkedEntry) -> None:
    """One entry, normalised (mtime 0, owners 0, 0755/0644): a PAX header, then exactly
    ``e.size`` bytes read from the walker's descriptor, padded to a block."""
    out.write(plain_header(e.rel + ("/" if e.is_dir else ""), e.is_dir,
                      0o755 if e.is_dir or e.mode & 0o111 else 0o644, 0 if e.is_dir else e.size))
    if e.is_dir:
        return
    assert e.fd is not None
    left = e.size
    while left > 0:
        chunk = os.read(e.fd, min(left, CHUNK))
        if not chunk:
            raise InvalidRequest(f"{e.rel} shrank while the snapshot was read; snapshot again",
                                 field="workspace", path=e.rel)
        out.write(chunk)
        left -= len(chunk)
    if e.size % tarfile.BLOCKSIZE:
        out.write(_ZEROS[:-e.size % tarfile.BLOCKSIZE])


class _LayerOut:
    """The layer's bytes written to ``fd`` in large pieces: what ``write`` gets is gathered
    (no copy) and sent with one ``writev`` per ``_BATCH`` bytes, each batch handed whole to
    the hashing thread and counted. (Handing the thread 8 MiB at a time instead was slower
    under heavy load, not faster: with fine-grained hand-offs both threads stay runnable.)"""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0          # bytes written to fd
        self.flushed = 0       # bytes asked to be written back
        self.parts: list[bytes] = []
        self.batch = 0         # bytes in ``parts``
        self.sha = Sha256Thread()

    @property
    def pending_size(self) -> int:
        """Bytes written so far (sent or gathered)."""
        return self.size + self.batch

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.batch += len(data)
        if self.batch >= _BATCH or len(self.parts) >= _MAX_PARTS:
            self._send()

    def _send(self) -> None:
        parts, total = self.parts, self.batch
        self.parts, self.batch = [], 0
        if not total:
            return
        self.sha.update(parts)  # immutable bytes: the thread may hash them while they are written
        done = os.writev(self.fd, parts)
        if done != total:  # a short write (rare on regular files): finish it piece by piece
            view = memoryview(b"".join(parts))[done:]
            while view:
                view = view[os.write(self.fd, view):]
        self.size += total
        if self.size - self.flushed >= _WRITEBACK:  # the final fsync then waits for little
            start_writeback(self.fd, self.flushed, self.size - self.flushed)
            self.flushed = self.size

    def close(self) -> tuple[str, int]:
        """Send what is gathered; returns (digest, bytes written)."""
        self._send()
        return "sha256:" + self.sha.hexdigest(), self.size

    def abort(self) -> None:
        self.sha.stop()


def write_snapshot(layout: Layout, document: dict[str, Any], layer: Descriptor) -> tuple[str, int]:
    """Store the document and the manifest; return (manifest digest, size). Tags nothing."""
    check_document(document)
    m = layout.put_json(MANIFEST_TYPE, image_manifest(
        SNAPSHOT_ARTIFACT_TYPE, layout.put_json(SNAPSHOT_CONFIG_TYPE, document), [layer],
        annotations={"org.opencontainers.image.title": str(document["metadata"].get("agent", ""))}))
    return m.digest, m.size


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
        doc = bounded_loads(layout.read_blob(cd.digest, MAX_DOCUMENT))
    except ValueError as err:
        raise PackageRejected(f"the snapshot document is not JSON ({err})", reason="malformed_manifest",
                              field="document") from None
    layers = tuple(Descriptor.from_data(x) for x in m.get("layers", []))
    return Snapshot(ref, digest, check_document(doc), layers)


def unpack_snapshot(layout: Layout, snap: Snapshot, dest: Path, limits: UnpackLimits) -> Path:
    """Unpack the workspace into the new directory ``dest`` (every layer verified as it
    streams, before ``dest`` appears; the unpacker's refusals — links, devices, '..', bombs —
    apply)."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(layout.open_verifying(d)) for d in snap.layers]
        return unpack_layers(files, dest, limits, compressed=[gzipped(d.media_type) for d in snap.layers])
