"""The local package store: an OCI image layout under ``$AGENTIX_HOME/registry/``.
(Over 400 lines: the OCI image layout and the bounded, verifying reader over its blobs: one
format.)

    registry/
      oci-layout                 {"imageLayoutVersion": "1.0.0"}
      index.json                 one entry per tag: annotations name the full reference
      blobs/sha256/<hex>         content-addressed; written to a temporary file, verified,
                                 fsynced, then renamed into place (never partial)
      tmp/                       temporary files of writes and downloads in flight

Names never become paths: a package name lives only in ``index.json`` annotations, and
blob paths are built from a validated ``sha256:<64 hex>`` digest. A tag becomes visible
only when ``index.json`` is replaced (atomically, under a lock) after every blob it needs
is in place, so an interrupted build or pull leaves no partial package visible.

Every blob read is verified against its digest before a byte of it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agentix.core.canonical import bounded_loads, canonical_json
from agentix.core.errors import NotFound, PackageRejected
from agentix.core.package import Ref, check_digest, parse_ref, sha256_digest

__all__ = ["Checkpoint", "Descriptor", "Layout", "MANIFEST_TYPE", "REF_ANNOTATION", "Sha256Thread", "VerifyingReader",
           "file_stamp", "image_manifest", "start_writeback"]

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20
#: at most this many stamps of blobs hashed when stored are remembered (``Layout._hashed``)
MAX_HASHED = 4096


@dataclass(frozen=True)
class Checkpoint:
    """The local store at one moment (``Layout.checkpoint``): its blob file names and its tags."""

    blobs: frozenset[str]
    tags: dict[str, dict[str, Any]]   # reference -> its index.json entry


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None

    def to_data(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    @staticmethod
    def from_data(d: Any) -> Descriptor:
        try:
            size = d["size"]
            if not isinstance(size, int) or size < 0:
                raise ValueError
            return Descriptor(str(d["mediaType"]), check_digest(d["digest"]), size, d.get("annotations"))
        except (KeyError, TypeError, ValueError) as err:
            raise PackageRejected(f"a descriptor in the manifest is malformed ({err!r})",
                                  reason="malformed_manifest") from None


def _libc_sync_file_range() -> Any:
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
        return fn
    except (OSError, AttributeError):
        return None


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk now,
    without waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so the ``fsync`` that
    makes a big blob durable finds most of it written already. Durability still comes from
    that ``fsync`` alone; where the call is missing this does nothing."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class Sha256Thread:
    """SHA-256 on a worker thread, fed in order (hashlib releases the GIL on big updates, so
    hashing overlaps the reads, CRCs and writes of the caller). Fed immutable bytes only."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.q: queue.Queue[list[Any] | None] = queue.Queue(maxsize=32)
        self.t = threading.Thread(target=self._run, name="sha256", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while (parts := self.q.get()) is not None:
            for p in parts:
                self.h.update(p)

    def update(self, parts: list[Any]) -> None:
        self.q.put(parts)

    def hexdigest(self) -> str:
        self.stop()
        return self.h.hexdigest()

    def stop(self) -> None:
        if self.t.is_alive():
            self.q.put(None)
            self.t.join()


def file_stamp(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's content could have: device, inode, size, mtime and
    ctime (the kernel sets ctime on every write, chmod, link or rename; user space cannot)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifyingReader:
    """A blob read once: every byte handed out is hashed as it goes, and ``verify()`` reads
    what is left and checks the digest (and size). For consumers that write only into a
    private staging area and publish it after ``verify()`` (``unpack_layers``): the blob is
    streamed once instead of hashed in full first and read again. Nothing read from it may
    become visible, or be trusted, before ``verify()`` returned.

    With ``stamp`` (``Layout.open_verifying``: a blob this layout hashed itself as it stored
    it, whose opened file still has that ``file_stamp``), the bytes are not hashed again:
    ``verify()`` checks that the file still has that stamp (unchanged while it was read)."""

    def __init__(self, f: BinaryIO, digest: str, size: int | None = None,
                 stamp: tuple[int, ...] | None = None) -> None:
        self.f = f
        self.digest = digest
        self.size = size
        self.stamp = stamp
        # hashing overlaps the consumer's inflating and writing
        self.h = Sha256Thread() if stamp is None else None
        self.n = 0
        self.buf = b""
        self.pos = 0
        self.verified = False

    def read(self, size: int = -1) -> bytes:
        # whole chunks are read and hashed (one hand-off each), then served in the sizes asked
        # (gzip asks 8 KiB at a time)
        if not self.buf or self.pos >= len(self.buf):
            self.buf = self.f.read(max(size, CHUNK) if size >= 0 else -1) or b""
            self.pos = 0
            if self.buf:
                if self.h is not None:
                    self.h.update([self.buf])
                self.n += len(self.buf)
        end = len(self.buf) if size < 0 else self.pos + size
        data = self.buf[self.pos:end]
        self.pos += len(data)
        return data

    def stop(self) -> None:
        if self.h is not None:
            self.h.stop()

    def verify(self) -> None:
        """Hash the rest of the blob; a mismatch is ``PackageRejected(digest_mismatch)``."""
        if self.verified:
            return
        if self.stamp is not None:
            if file_stamp(os.fstat(self.f.fileno())) != self.stamp:
                raise PackageRejected(f"blob {self.digest} in the local store changed while it was read "
                                      "(it was altered)", reason="digest_mismatch", digest=self.digest)
            self.verified = True
            return
        assert self.h is not None
        while chunk := self.f.read(CHUNK):
            self.h.update([chunk])
            self.n += len(chunk)
        actual = "sha256:" + self.h.hexdigest()
        if actual != self.digest or (self.size is not None and self.n != self.size):
            raise PackageRejected(f"blob {self.digest} in the local store does not match its digest "
                                  "(it was altered)", reason="digest_mismatch", digest=self.digest)
        self.verified = True
def image_manifest(artifact_type: str, config: Descriptor, layers: list[Descriptor], *,
                   annotations: dict[str, str] | None = None, subject: Descriptor | None = None) -> dict[str, Any]:
    """The OCI image manifest (schema 2) of an artifact: packages, snapshots and signatures
    are all stored as one of these (absent keys stay absent, so digests do not move)."""
    m: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": artifact_type,
        "config": config.to_data(),
        "layers": [d.to_data() for d in layers],
    }
    if annotations is not None:
        m["annotations"] = annotations
    if subject is not None:
        m["subject"] = subject.to_data()
    return m


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: a temporary file untouched this long is a dead write's (``Layout.clear_stale_temp``)
STALE_TEMP_S = 3600.0


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "tmp"
        #: digest -> ``file_stamp`` of blobs this layout hashed as it stored them (in memory
        #: only: a record on disk could be rewritten with the blob); the oldest dropped
        self._hashed: dict[str, tuple[int, ...]] = {}

    def init(self) -> Layout:
        self.blobs.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(exist_ok=True, mode=0o700)
        if not (self.root / "oci-layout").exists():
            self._write_atomic(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.root / "index.json").exists():
            self._write_atomic(self.root / "index.json", canonical_json({"schemaVersion": 2, "manifests": []}))
        return self

    # ------------------------------------------------------------ blobs
    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)[len("sha256:"):]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def temp_path(self, what: str = "blob") -> Path:
        return self.tmp / f"{what}-{secrets.token_hex(8)}"

    def put_json(self, media_type: str, data: Any) -> Descriptor:
        """Store ``data`` as canonical JSON; its descriptor."""
        body = canonical_json(data)
        return Descriptor(media_type, self.put_bytes(body), len(body))

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise PackageRejected(f"content does not match its digest: expected {expected}, got {digest}",
                                  reason="digest_mismatch", expected=expected, actual=digest)
        if not self.has_blob(digest):
            tmp = self.temp_path()
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.blob_path(digest))
        return digest

    def commit_file(self, tmp: Path, expected: str, *, hashed: bool = False, fd: int | None = None) -> None:
        """Move a downloaded or built temporary file into place after checking its digest
        (``hashed``: the caller wrote it to ``tmp/`` itself, hashing every byte as it went,
        and fsynced it — a snapshot layer; then it is not read again). ``fd``: the caller's
        still open descriptor of that hashed file: its stamp is remembered (``open_verifying``
        then reads the blob without hashing it again while the file keeps that stamp)."""
        if hashed:
            os.replace(tmp, self.blob_path(expected))
            if fd is not None:  # after the rename: a rename sets the ctime too
                self._hashed[expected] = file_stamp(os.fstat(fd))
                while len(self._hashed) > MAX_HASHED:
                    del self._hashed[next(iter(self._hashed))]
            return
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
            os.fsync(f.fileno())
        actual = "sha256:" + h.hexdigest()
        if actual != expected:
            tmp.unlink(missing_ok=True)
            raise PackageRejected(f"content does not match its digest: expected {expected}, got {actual}",
                                  reason="digest_mismatch", expected=expected, actual=actual)
        os.replace(tmp, self.blob_path(expected))

    def read_blob(self, digest: str, max_size: int = 16 << 20) -> bytes:
        """The verified bytes of a (small) blob: manifests, configs, signatures."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(max_size + 1)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the local store", digest=digest) from None
        if len(data) > max_size:
            raise PackageRejected(f"blob {digest} is larger than {max_size} bytes", reason="too_large")
        if sha256_digest(data) != digest:
            raise PackageRejected(f"blob {digest} in the local store does not match its digest "
                                  "(it was altered)", reason="digest_mismatch", digest=digest)
        return data

    @contextlib.contextmanager
    def open_verified(self, digest: str) -> Iterator[BinaryIO]:
        """A file object over a blob whose digest was checked first (read twice: check, use)."""
        path = self.blob_path(digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the local store", digest=digest) from None
        with f:
            h = hashlib.sha256()
            while chunk := f.read(CHUNK):
                h.update(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise PackageRejected(f"blob {digest} in the local store does not match its digest "
                                      "(it was altered)", reason="digest_mismatch", digest=digest)
            f.seek(0)
            yield f

    @contextlib.contextmanager
    def open_verifying(self, desc: Descriptor) -> Iterator[VerifyingReader]:
        """A ``VerifyingReader`` over the blob ``desc``: hashed while it is consumed; the
        consumer calls ``verify()`` before it publishes anything it made from the bytes. A
        blob this layout hashed as it stored it (``commit_file(fd=)``: a pull) whose opened
        file still has the stamp it had then is not hashed again: the reader checks the stamp
        once more at ``verify()`` instead."""
        path = self.blob_path(desc.digest)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"blob {desc.digest} is not in the local store", digest=desc.digest) from None
        stamp = self._hashed.get(desc.digest)
        if stamp is not None and (file_stamp(os.fstat(f.fileno())) != stamp or stamp[2] != desc.size):
            stamp = None  # changed since (or another size named): hashed like any other
        reader = VerifyingReader(f, desc.digest, desc.size, stamp)  # type: ignore[arg-type]
        try:
            with f:
                yield reader
        finally:
            reader.stop()

    def read_json(self, digest: str) -> Any:
        try:
            return bounded_loads(self.read_blob(digest))
        except ValueError:
            raise PackageRejected(f"blob {digest} is not JSON", reason="malformed_manifest") from None

    # ------------------------------------------------------------ the index
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def _index(self) -> dict[str, Any]:
        with open(self.root / "index.json", "rb") as f:
            return json.loads(f.read())

    def entries(self) -> list[tuple[Ref, Descriptor]]:
        out = []
        for m in self._index().get("manifests", []):
            name = (m.get("annotations") or {}).get(REF_ANNOTATION)
            if not name:
                continue
            out.append((parse_ref(name), Descriptor.from_data(m)))
        return out

    def tag(self, ref: Ref, desc: Descriptor) -> bool:
        """Point ``ref`` (NAME:TAG) at ``desc``; return False if it already did (no duplicate)."""
        return bool(self.tag_all([(ref, desc)]))

    def tag_all(self, tags: list[tuple[Ref, Descriptor]]) -> int:
        """Point each ``ref`` (NAME:TAG) at its ``desc`` in one replacement of ``index.json``
        (one durable write: all of them appear, or none); return how many changed."""
        for ref, desc in tags:
            assert ref.tag is not None, "tag a NAME:TAG reference"
            if not self.has_blob(desc.digest):
                raise NotFound(f"cannot tag {ref}: manifest {desc.digest} is not stored")
        with self._locked():
            idx = self._index()
            manifests = list(idx.get("manifests", []))
            changed = 0
            for ref, desc in tags:
                keep = []
                for m in manifests:
                    if (m.get("annotations") or {}).get(REF_ANNOTATION) == str(ref):
                        if m.get("digest") == desc.digest:
                            break
                        continue
                    keep.append(m)
                else:
                    entry = Descriptor(desc.media_type, desc.digest, desc.size,
                                       {REF_ANNOTATION: str(ref)}).to_data()
                    manifests = [*keep, entry]
                    changed += 1
            if changed:
                idx["manifests"] = manifests
                self._write_atomic(self.root / "index.json", canonical_json(idx))
            return changed

    def untag(self, ref: Ref) -> bool:
        with self._locked():
            idx = self._index()
            before = len(idx.get("manifests", []))
            idx["manifests"] = [m for m in idx.get("manifests", [])
                                if (m.get("annotations") or {}).get(REF_ANNOTATION) != str(ref)]
            if len(idx["manifests"]) == before:
                return False
            self._write_atomic(self.root / "index.json", canonical_json(idx))
            return True

    def resolve(self, ref: Ref) -> Descriptor:
        """The manifest descriptor a reference names (by tag, or by a digest that is stored)."""
        if ref.digest is not None:
            for r, d in self.entries():
                if r.name == ref.name and d.digest == ref.digest:
                    return Descriptor(d.media_type, d.digest, d.size)
            if self.has_blob(ref.digest):
                data = self.read_blob(ref.digest)
                return Descriptor(MANIFEST_TYPE, ref.digest, len(data))
            raise NotFound(f"package {ref} is not in the local store; pull it first", ref=str(ref))
        for r, d in self.entries():
            if r == ref:
                return d
        raise NotFound(f"package {ref} is not in the local store (see `agentix packages ls`)",
                       ref=str(ref))

    def _reachable(self) -> set[str]:
        """The digests some tag reaches: the manifests tagged, their configs and layers."""
        live: set[str] = set()
        for _, d in self.entries():
            live.add(d.digest)
            try:
                m = self.read_json(d.digest)
            except (NotFound, PackageRejected):
                continue
            for x in [m.get("config"), *m.get("layers", [])]:
                if isinstance(x, dict) and isinstance(x.get("digest"), str):
                    live.add(x["digest"])
        return live

    def gc(self, only: frozenset[str] | None = None) -> int:
        """Remove blobs no tag reaches (cached layers included), or of those only the ones
        whose file names (hex digests) are in ``only``; return how many."""
        live = self._reachable()
        removed = 0
        with self._locked():
            for p in self.blobs.iterdir():
                if (only is None or p.name in only) and "sha256:" + p.name not in live:
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    def clear_stale_temp(self, now: float, older_than: float = STALE_TEMP_S) -> int:
        """Remove what is left in ``tmp/`` by a write or download that died (a crash mid-pull
        leaves its staged layers there): every entry not modified for ``older_than`` seconds
        before ``now`` (wall-clock, like the files' mtimes). A write in flight touches its file
        as it goes, so nothing live is that old. Returns how many were removed."""
        removed = 0
        for p in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if now - p.lstat().st_mtime > older_than and not p.is_dir():
                    p.unlink()
                    removed += 1
        return removed

    def checkpoint(self) -> Checkpoint:
        """What the store holds now (blob names and tags), for ``roll_back``."""
        entries = {}
        for m in self._index().get("manifests", []):
            name = (m.get("annotations") or {}).get(REF_ANNOTATION)
            if name:
                entries[name] = m
        return Checkpoint(frozenset(os.listdir(self.blobs)), entries)

    def roll_back(self, cp: Checkpoint, refs: frozenset[str] | None = None) -> int:
        """Undo what was written since ``cp`` by an operation that was then refused: the tags
        (all, or only ``refs``) point where they pointed at ``cp`` again (a tag made since is
        removed), and the blobs written since that no tag reaches are removed (a blob another
        operation tagged meanwhile stays). Returns how many blobs were removed. Callers hold
        the store's one writer (``PackageStore`` under the kernel's lock), so no other write is
        half done."""
        def ours(name: Any) -> bool:
            return isinstance(name, str) and (refs is None or name in refs)

        with self._locked():
            idx = self._index()
            now = idx.get("manifests", [])
            out: list[Any] = []
            for m in now:
                name = (m.get("annotations") or {}).get(REF_ANNOTATION)
                if not ours(name):
                    out.append(m)
                elif name in cp.tags:
                    out.append(cp.tags[name])  # where it pointed (in its place)
            present = {(m.get("annotations") or {}).get(REF_ANNOTATION) for m in out}
            out += [m for name, m in cp.tags.items() if ours(name) and name not in present]
            if out != now:
                idx["manifests"] = out
                self._write_atomic(self.root / "index.json", canonical_json(idx))
        return self.gc(only=frozenset(os.listdir(self.blobs)) - cp.blobs)
