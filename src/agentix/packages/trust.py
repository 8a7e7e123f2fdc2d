"""Signing keys, the trust policy and the highest version seen (in the store), and signature
storage.

Signing keys live in ``$AGENTIX_HOME/keys/signing/NAME.key`` (PKCS#8 PEM, mode 0600); the
public half is printed as ``ed25519:<base64>``. The trust policy and the highest version
seen per name live in ``agentix.db`` (``TrustState``), written through the store's one
writer.

Signatures are stored beside the artifact they sign, as an OCI artifact in the same
repository: locally under the tag ``sha256-<hex>.sig`` (the scheme cosign uses); on a registry
as an OCI referrer (its ``subject`` is the package) where the registry has the referrers API,
else under that tag, which every registry accepts (``PackageStore.push``/``pull``). Its layers
are signature documents (``application/vnd.agentix.signature.v1+json``); signing again adds a
layer.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentix.core.canonical import bounded_loads, canonical_json
from agentix.core.errors import InvalidRequest, NotFound, PackageRejected
from agentix.core.manifest import NAME_RE
from agentix.core.package import (Ref, Signature, SignedStatement, TrustPolicy, format_public_key, key_id,
                                  newer)
from agentix.packages.layout import MANIFEST_TYPE, Descriptor, Layout, image_manifest
from agentix.store.side_files import retire

if TYPE_CHECKING:
    from agentix.store.db import Database

__all__ = ["Keyring", "TrustState", "read_signatures", "signatures_in", "signature_ref", "add_signature",
           "EMPTY_CONFIG", "SIGNATURE_TYPE", "SIGNATURE_ARTIFACT_TYPE"]

SIGNATURE_TYPE = "application/vnd.agentix.signature.v1+json"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.agentix.signature.v1"
EMPTY_CONFIG = Descriptor("application/vnd.oci.empty.v1+json",
                          "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", 2)
MAX_SIGNATURES = 16


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Keyring:
    def __init__(self, root: Path) -> None:
        self.root = root  # $AGENTIX_HOME/keys/signing

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidRequest(f"key name {name!r}: lowercase letters, digits, '_', '.', '-'", field="name")
        return self.root / f"{name}.key"

    def generate(self, name: str) -> dict[str, str]:
        path = self._path(name)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            raise InvalidRequest(f"a signing key named {name!r} exists already ({path}); "
                                 "pick another name", field="name")
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write_private(path, pem)
        return self.describe(name)

    def private(self, name: str) -> Ed25519PrivateKey:
        path = self._path(name)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise NotFound(f"no signing key named {name!r}; create one with `agentix keys generate "
                           f"{name}`", key=name) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidRequest(f"{path} is not an Ed25519 key", field="key")
        return key

    def describe(self, name: str) -> dict[str, str]:
        raw = self.private(name).public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
        return {"name": name, "keyid": key_id(raw), "public_key": format_public_key(raw)}

    def list(self) -> list[dict[str, str]]:
        if not self.root.is_dir():
            return []
        return [self.describe(p.stem) for p in sorted(self.root.glob("*.key"))]

    def sign(self, name: str, statement: SignedStatement) -> Signature:
        key = self.private(name)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Signature(key_id(raw), statement, key.sign(statement.payload()))


class TrustState:
    """The trust policy and the highest version seen per name, in the kernel's store.

    Tables ``trust_keys``, ``trust_unsigned`` and ``versions_seen`` of ``agentix.db``
    (migration v3), written through the store's one writer; ``remember`` compares and
    writes in one transaction, so two pulls cannot both think they raised the mark.
    Policy files an older agentix left under ``registry/`` (``trust.json``,
    ``versions.json``) are imported once, at the first use, and then removed (DESIGN.md
    §9: one database, no side files). ``db`` is the kernel's ``Database``, or a path
    (opened here, lazily, for a store used without a kernel: then this state owns it, and
    closes it at ``close`` or, at the latest, when it is itself collected: its writer thread
    and connections are not left open for the life of the process)."""

    LEGACY = ("trust.json", "versions.json")

    def __init__(self, db: Database | Path, legacy_root: Path | None = None) -> None:
        self._db = db
        self._legacy_root = legacy_root  # $AGENTIX_HOME/registry (files of older versions)
        self._ready = False
        self._owned: Any = None  # the finalizer that closes a database opened here

    def close(self) -> None:
        """Close the database this state opened itself (never the kernel's)."""
        if self._owned is not None:
            self._owned()

    @property
    def db(self) -> Database:
        from agentix.store.db import Database

        if not isinstance(self._db, Database):
            import weakref

            self._db = Database(self._db)
            self._owned = weakref.finalize(self, self._db.close)
        if not self._ready:
            self._import_legacy()
            self._ready = True
        return self._db

    def _import_legacy(self) -> None:
        root = self._legacy_root
        if root is None:
            return
        files = [root / n for n in self.LEGACY if (root / n).is_file()]
        if not files:
            return
        try:
            policy = TrustPolicy.from_data(json.loads((root / "trust.json").read_bytes())) \
                if (root / "trust.json").is_file() else None
            seen = json.loads((root / "versions.json").read_bytes()) if (root / "versions.json").is_file() else {}
        except (ValueError, InvalidRequest, KeyError, TypeError) as err:
            raise InvalidRequest(f"the old trust files under {root} are malformed ({err}); fix or remove "
                                 "them (they are imported into agentix.db once)", field="trust") from None

        def op(t: Any) -> None:
            if policy is not None and not self._has_policy(t.conn):
                self._write_policy(t.conn, policy)
            for name, version in sorted((seen or {}).items()):
                row = t.conn.execute("SELECT version FROM versions_seen WHERE name=?", (name,)).fetchone()
                if newer(str(version), row[0] if row else None):
                    t.conn.execute("INSERT OR REPLACE INTO versions_seen VALUES (?,?)", (name, str(version)))

        self._db.submit(op).result()
        retire(files)

    @staticmethod
    def _has_policy(conn: Any) -> bool:
        return bool(conn.execute("SELECT 1 FROM trust_keys LIMIT 1").fetchone()
                    or conn.execute("SELECT 1 FROM trust_unsigned LIMIT 1").fetchone())

    @staticmethod
    def _write_policy(conn: Any, policy: TrustPolicy) -> None:
        conn.execute("DELETE FROM trust_keys")
        conn.execute("DELETE FROM trust_unsigned")
        seq = 0
        for r in policy.rules:
            for p in r.patterns:
                conn.execute("INSERT INTO trust_keys VALUES (?,?,?,?)",
                             (r.keyid, format_public_key(r.public_key), p, seq))
                seq += 1
        for i, p in enumerate(policy.allow_unsigned):
            conn.execute("INSERT INTO trust_unsigned VALUES (?,?)", (p, i))

    def policy(self) -> TrustPolicy:
        conn = self.db.reader()
        rules: dict[str, dict[str, Any]] = {}
        for keyid, pub, pattern in conn.execute(
                "SELECT keyid, public_key, pattern FROM trust_keys ORDER BY seq"):
            rules.setdefault(keyid, {"public_key": pub, "patterns": []})["patterns"].append(pattern)
        unsigned = [p for (p,) in conn.execute("SELECT pattern FROM trust_unsigned ORDER BY seq")]
        return TrustPolicy.from_data({"rules": list(rules.values()), "allow_unsigned": unsigned})

    def save_policy(self, policy: TrustPolicy) -> None:
        self.db.submit(lambda t: self._write_policy(t.conn, policy)).result()

    def highest(self, name: str) -> str | None:
        row = self.db.reader().execute("SELECT version FROM versions_seen WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def remember(self, name: str, version: str) -> bool:
        def op(t: Any) -> bool:
            row = t.conn.execute("SELECT version FROM versions_seen WHERE name=?", (name,)).fetchone()
            if not newer(version, row[0] if row else None):
                return False
            t.conn.execute("INSERT OR REPLACE INTO versions_seen VALUES (?,?)", (name, version))
            return True

        return bool(self.db.submit(op).result())


def signature_ref(ref: Ref, digest: str) -> Ref:
    return Ref(ref.registry, ref.path, f"sha256-{digest.removeprefix('sha256:')}.sig", None)


def read_signatures(layout: Layout, ref: Ref, digest: str) -> list[Signature]:
    """The signatures stored locally beside ``ref``'s package ``digest`` (verified blobs)."""
    try:
        desc = layout.resolve(signature_ref(ref, digest))
    except NotFound:
        return []
    return signatures_in(layout, desc.digest)


def signatures_in(layout: Layout, manifest_digest: str) -> list[Signature]:
    """The signatures a stored signature manifest holds (verified blobs; a layer that is not a
    signature document is skipped)."""
    m = layout.read_json(manifest_digest)
    out = []
    for layer in (m.get("layers") or [])[:MAX_SIGNATURES]:
        d = Descriptor.from_data(layer)
        if d.media_type != SIGNATURE_TYPE:
            continue
        try:
            out.append(Signature.from_data(bounded_loads(layout.read_blob(d.digest, 64 << 10))))
        except (ValueError, PackageRejected):
            continue
    return out


def signature_manifest(layers: list[Descriptor], subject: Descriptor) -> bytes:
    """The canonical bytes of the signature manifest of ``subject`` holding ``layers``."""
    return canonical_json(image_manifest(SIGNATURE_ARTIFACT_TYPE, EMPTY_CONFIG, layers,
                                         subject=Descriptor(subject.media_type, subject.digest, subject.size)))


def add_signature(layout: Layout, ref: Ref, subject: Descriptor, sig: Signature) -> Descriptor:
    """Store ``sig`` beside ``subject`` (replacing one by the same key); return the sig manifest."""
    existing: list[Descriptor] = []
    try:
        desc = layout.resolve(signature_ref(ref, subject.digest))
        for layer in layout.read_json(desc.digest).get("layers") or []:
            d = Descriptor.from_data(layer)
            try:
                old = Signature.from_data(bounded_loads(layout.read_blob(d.digest, 64 << 10)))
            except (ValueError, PackageRejected, NotFound):
                continue
            if old.keyid != sig.keyid:
                existing.append(d)
    except NotFound:
        pass
    layer = layout.put_json(SIGNATURE_TYPE, sig.to_data())
    layout.put_bytes(b"{}", EMPTY_CONFIG.digest)
    mbytes = signature_manifest([*existing, layer][-MAX_SIGNATURES:], subject)
    mdesc = Descriptor(MANIFEST_TYPE, layout.put_bytes(mbytes), len(mbytes))
    layout.tag(signature_ref(ref, subject.digest), mdesc)
    return mdesc


def check_key_name(name: str) -> str:
    if not re.match(NAME_RE, name):
        raise InvalidRequest(f"key name {name!r} is not valid", field="name")
    return name
