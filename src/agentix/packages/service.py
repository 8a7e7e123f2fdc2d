"""Packages as one service over ``$AGENTIX_HOME``: build, sign, verify, push, pull, inspect,
remove, and prepare a package to run. Synchronous (the kernel calls it in a thread).
(Over 400 lines: the one facade over layout, keys, trust and remotes; each operation is short,
and they share the store's paths and checks.)

Verification is python-tuf's order: fetch → check digests → decide trust (``core.package
.decide``, pure) → only then record anything (the highest version seen) or unpack. A pull
verifies before it tags, so an untrusted package never becomes visible locally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentix.core.agentfile import SEMVER_RE, parse_agentfile_text
from agentix.core.canonical import bounded_loads, canonical_json
from agentix.core.errors import InvalidRequest, NotFound, PackageRejected, RegistryError, Timeout
from agentix.core.manifest import NAME_RE
from agentix.core.package import (MAX_LAYERS, Ref, Signature, SignedStatement, Verdict, capability_ceiling, decide,
                                  parse_public_key, parse_ref)
from agentix.packages.build import (ARTIFACT_TYPE, CONFIG_TYPE, PACKAGE_DEPS_DIR, Base, BuildResult, PackageDep,
                                    Runner, build)
from agentix.packages.layout import MANIFEST_TYPE, Checkpoint, Descriptor, Layout
from agentix.packages.pushed import PushRecord
from agentix.packages.trust import (EMPTY_CONFIG, MAX_SIGNATURES, SIGNATURE_ARTIFACT_TYPE, SIGNATURE_TYPE, Keyring,
                                    TrustState, add_signature, read_signatures, signature_manifest, signature_ref,
                                    signatures_in)
from agentix.packages.unpack import UnpackLimits, copy_tree, seal_tree, unpack_layers

if TYPE_CHECKING:  # the registry client (oras, requests) loads on the first push or pull:
    from agentix.packages.remote import RemoteRegistry, StagedBlob  # a third of the kernel's import time
    from agentix.store.db import Database

__all__ = ["PackageStore", "Prepared", "AGENTFILE_NAMES"]

log = logging.getLogger(__name__)

AGENTFILE_NAMES = ("Agentfile", "Agentfile.yaml", "Agentfile.yml", "Agentfile.json")
MAX_CONFIG = 1 << 20
PUSH_CONCURRENCY = 4
#: a pull downloads at most this many layers at once
PULL_CONCURRENCY = 4
MAX_RAN_ONCE = 1024
PACKAGE_MANIFEST_FIELDS = frozenset({"name", "description", "program", "args", "env", "model", "system_prompt",
                                     "max_iterations", "limits", "budget"})


@dataclass(frozen=True)
class Prepared:
    """A verified, unpacked package ready to spawn."""

    ref: Ref
    digest: str
    verdict: Verdict
    manifest: dict[str, Any]       # the agent manifest, capabilities = declared ∩ accepted
    declared: list[str]
    program_dir: Path              # the unpacked package (the program paths are relative to it)


class PackageStore:
    def __init__(self, home: Path, *, timeout: float = 30.0, limits: UnpackLimits = UnpackLimits(),
                 db: Database | None = None) -> None:
        """``db``: the kernel's store (``agentix.db``, which holds the trust state); without
        one, ``home/agentix.db`` is opened when the trust state is first used."""
        self.home = home
        self.layout = Layout(home / "registry").init()
        self.keys = Keyring(home / "keys" / "signing")
        self.trust = TrustState(db if db is not None else home / "agentix.db", home / "registry")
        self.timeout = timeout
        self.limits = limits
        #: the unpacked-tree keys (``_unpacked_key``) of content run once by this store and not
        #: kept: the next run of it keeps its tree (``prepare``); oldest dropped past MAX_RAN_ONCE
        self._ran_once: dict[str, None] = {}

    def close(self) -> None:
        """Close what this store opened itself (the trust state's database, without a kernel)."""
        self.trust.close()

    def __enter__(self) -> PackageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ build
    def build(self, context: Path, tag: str, agentfile: Path | None = None,
              runner: Runner | None = None) -> BuildResult:
        context = context.resolve()
        if agentfile is None:
            for n in AGENTFILE_NAMES:
                if (context / n).is_file():
                    agentfile = context / n
                    break
            else:
                raise InvalidRequest(f"no Agentfile in {context} (looked for {', '.join(AGENTFILE_NAMES)})",
                                     field="agentfile")
        try:
            text = agentfile.read_text()
        except OSError as err:
            raise InvalidRequest(f"cannot read {agentfile}: {err.strerror}", field="agentfile") from None
        af = parse_agentfile_text(text, source=agentfile.name)
        ref = parse_ref(tag, default_tag=af.metadata.version)
        if ref.digest is not None:
            raise InvalidRequest("build -t takes NAME:TAG, not a digest", field="tag")
        assert ref.tag is not None
        if SEMVER_RE.match(ref.tag) and ref.tag != af.metadata.version:
            raise InvalidRequest(f"tag {ref.tag} is a version but the Agentfile says version "
                                 f"{af.metadata.version}; tag it {af.metadata.version} (or a name such "
                                 "as latest)", field="tag")
        verdicts: list[Verdict] = []
        base = self._base(af.base, agentfile.name, verdicts) if af.base is not None else None
        deps = self._package_deps(af.dependencies.packages, ref, agentfile.name, verdicts)
        r = build(context, af, ref, self.layout, runner, base, fetch_wheels if runner is not None else None,
                  deps)
        return dataclasses.replace(r, verdicts=tuple(verdicts))

    def _package_deps(self, texts: list[str], ref: Ref, source: str,
                      verdicts: list[Verdict]) -> tuple[PackageDep, ...]:
        """The Agentfile's ``dependencies.packages``, each from the local store or pulled from
        its registry, verified under the trust policy exactly as `run` verifies a package,
        pinned by digest. A dependency that (through its own dependencies) is this package
        again is a cycle."""
        out: list[PackageDep] = []
        seen_names: dict[str, str] = {}
        for i, text in enumerate(texts):
            field = f"dependencies.packages.{i}"
            dref = parse_ref(text, default_tag=None)
            try:
                desc = self.layout.resolve(dref)
            except NotFound:
                if dref.registry is None:
                    raise NotFound(f"{source}: {field}: package {dref} is not in the local store and names no "
                                   f"registry to pull it from; build it, or give HOST/NAME:TAG",
                                   field=field, ref=str(dref)) from None
                self.pull(text)   # verified (trust, rollback, digests) before anything is tagged
                desc = self.layout.resolve(dref)
            verdict = self._decide(dref, desc, read_signatures(self.layout, dref, desc.digest), False)
            m = self._manifest(desc.digest)
            cfg = self._config(m, snapshots=False)
            local = str(cfg["metadata"].get("name", ""))
            if not NAME_RE.match(local):
                raise PackageRejected(f"{source}: {field}: {dref} has no valid metadata name",
                                      reason="malformed_manifest", field=field)
            if local in seen_names:
                raise InvalidRequest(f"{source}: {field}: {dref} and {seen_names[local]} are both named "
                                     f"{local!r}: they would share {PACKAGE_DEPS_DIR}/{local}",
                                     field=field, path=f"{PACKAGE_DEPS_DIR}/{local}")
            seen_names[local] = str(dref)
            requires = (cfg.get("dependencies") or {}).get("packages") or []
            if not isinstance(requires, list):
                raise PackageRejected(f"{source}: {field}: {dref} records malformed dependencies",
                                      reason="malformed_manifest", field=field)
            chain = _dependency_chain(verdict.statement.name, requires, ref.name)
            if chain is not None:
                raise InvalidRequest(f"{source}: {field}: a dependency cycle: {ref.name} -> "
                                     + " -> ".join(chain) + f" (which is {ref.name} again)",
                                     field=field, reason="cycle", cycle=[ref.name, *chain])
            verdicts.append(verdict)
            out.append(PackageDep(text, desc.digest, verdict.statement.name, verdict.statement.version,
                                  local, tuple(Descriptor.from_data(x) for x in m.get("layers", [])),
                                  tuple(requires)))
        return tuple(out)

    def _base(self, text: str, source: str, verdicts: list[Verdict]) -> Base:
        """The Agentfile's base package, from the local store (pull it first), verified
        under the trust policy exactly as `run` verifies a package."""
        try:
            bref = parse_ref(text)
        except InvalidRequest as err:
            raise InvalidRequest(f"{source}: from: {err}", field="from") from None
        try:
            desc = self.layout.resolve(bref)
        except NotFound:
            raise NotFound(f"{source}: from: base package {bref} is not in the local store; "
                           f"`agentix pull {bref}` first", field="from") from None
        verdict = self._decide(bref, desc, read_signatures(self.layout, bref, desc.digest), False)
        verdicts.append(verdict)
        m = self._manifest(desc.digest)
        cfg = self._config(m, snapshots=False)
        return Base(str(bref), desc.digest, verdict.statement.name, verdict.statement.version,
                    tuple(Descriptor.from_data(x) for x in m.get("layers", [])), dict(cfg.get("manifest") or {}))

    # ------------------------------------------------------------ reading the local store
    def _manifest(self, digest: str) -> dict[str, Any]:
        return _manifest_shape(self.layout.read_json(digest), digest)

    def _config(self, manifest: dict[str, Any], *, snapshots: bool = True) -> dict[str, Any]:
        """The config of a package (or, with ``snapshots``, of a snapshot: signed, pushed and
        pulled the same way; only ``prepare`` wants a package and nothing else)."""
        from agentix.packages.snapshot import SNAPSHOT_CONFIG_TYPE

        cd = Descriptor.from_data(manifest["config"])
        if cd.media_type != CONFIG_TYPE and not (snapshots and cd.media_type == SNAPSHOT_CONFIG_TYPE):
            raise PackageRejected(f"not an agentix package (config type {cd.media_type})",
                                  reason="not_a_package")
        try:
            cfg = bounded_loads(self.layout.read_blob(cd.digest, MAX_CONFIG))
        except ValueError:  # a pulled config is checked here before any signature is (untrusted)
            cfg = None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("metadata"), dict):
            raise PackageRejected("the package config is malformed", reason="malformed_manifest")
        return cfg

    def inspect(self, ref_text: str) -> dict[str, Any]:
        ref = parse_ref(ref_text)
        desc = self.layout.resolve(ref)
        m = self._manifest(desc.digest)
        cfg = self._config(m)
        sigs = read_signatures(self.layout, ref, desc.digest)
        if cfg.get("kind") == "snapshot":  # what a restore would bring back (docs/packages.md)
            return {"ref": str(ref), "digest": desc.digest, "name": ref.name, "kind": "snapshot",
                    "agent": cfg["metadata"].get("agent"), "manifest": cfg.get("manifest"),
                    "grants": cfg.get("grants", []), "taint": cfg.get("taint", []),
                    "state_keys": [x.get("key") for x in cfg.get("state", [])],
                    "pending_messages": len(cfg.get("mailbox", [])), "memory_records": len(cfg.get("memory", [])),
                    "budget": cfg.get("budget"), "skipped": (cfg.get("workspace") or {}).get("skipped", []),
                    "layers": [{"digest": x["digest"], "size": x["size"]} for x in m.get("layers", [])],
                    "size": sum(int(x["size"]) for x in m.get("layers", [])),
                    "signatures": [{"keyid": s.keyid, **s.statement.to_data()} for s in sigs]}
        return {"ref": str(ref), "digest": desc.digest, "name": ref.name,
                "version": cfg["metadata"].get("version"), "metadata": cfg["metadata"],
                "capabilities": cfg.get("capabilities", []), "manifest": cfg.get("manifest"),
                "steps": cfg.get("steps", []), "dependencies": cfg.get("dependencies", {}),
                "layers": [{"digest": x["digest"], "size": x["size"]} for x in m.get("layers", [])],
                "size": sum(int(x["size"]) for x in m.get("layers", [])),
                "signatures": [{"keyid": s.keyid, **s.statement.to_data()} for s in sigs]}

    def list(self) -> list[dict[str, Any]]:
        out = []
        for ref, desc in self.layout.entries():
            if ref.tag and ref.tag.startswith("sha256-") and ref.tag.endswith(".sig"):
                continue
            sigs = read_signatures(self.layout, ref, desc.digest)
            out.append({"ref": str(ref), "digest": desc.digest, "signed": bool(sigs)})
        return sorted(out, key=lambda x: x["ref"])

    def remove(self, ref_text: str) -> dict[str, Any]:
        ref = parse_ref(ref_text)
        desc = self.layout.resolve(ref)
        self.layout.untag(ref)
        if not any(d.digest == desc.digest for r, d in self.layout.entries()  # its repository's other tags
                   if r.registry == ref.registry and r.path == ref.path and not (r.tag or "").endswith(".sig")):
            self.layout.untag(signature_ref(ref, desc.digest))
        removed = self.layout.gc()
        self._prune_unpacked()
        return {"ref": str(ref), "digest": desc.digest, "blobs_removed": removed}

    def gc(self) -> dict[str, int]:
        """Remove every blob no tag reaches and every unpacked tree no tagged package needs:
        what `rm` removes with a tag, for a store an interrupted or refused operation of an
        older agentix left blobs in. (Every writer of blobs holds the store's one writer, as
        this does, so no operation's untagged blobs are in flight.) Also the temporary files
        of writes and downloads that died (untouched for an hour: ``Layout.clear_stale_temp``)."""
        return {"blobs_removed": self.layout.gc(), "unpacked_removed": self._prune_unpacked(),
                "temp_removed": self.layout.clear_stale_temp(time.time())}

    # ------------------------------------------------------------ signing and trust
    def sign(self, ref_text: str, key: str) -> dict[str, Any]:
        ref = parse_ref(ref_text)
        desc = self.layout.resolve(ref)
        cfg = self._config(self._manifest(desc.digest))
        statement = SignedStatement(ref.name, str(cfg["metadata"]["version"]), desc.digest)
        sig = self.keys.sign(key, statement)
        add_signature(self.layout, ref, desc, sig)
        return {"ref": str(ref), "keyid": sig.keyid, **statement.to_data()}

    def trust_add(self, key: str, pattern: str) -> dict[str, Any]:
        raw = self._public_key(key)
        policy = self.trust.policy().with_key(raw, pattern)
        self.trust.save_policy(policy)
        return policy.to_data()

    def trust_allow_unsigned(self, pattern: str) -> dict[str, Any]:
        policy = self.trust.policy().with_unsigned(pattern)
        self.trust.save_policy(policy)
        return policy.to_data()

    def _public_key(self, key: str) -> bytes:
        if key.startswith("ed25519:"):
            return parse_public_key(key)
        p = Path(key)
        if p.is_file():
            return parse_public_key(p.read_text())
        return parse_public_key(self.keys.describe(key)["public_key"])  # a local key by name

    def verify(self, ref_text: str, *, allow_rollback: bool = False) -> Verdict:
        """Decide whether the local package ``ref`` is trusted (reads; records nothing)."""
        ref = parse_ref(ref_text)
        desc = self.layout.resolve(ref)
        return self._decide(ref, desc, read_signatures(self.layout, ref, desc.digest), allow_rollback)

    def _decide(self, ref: Ref, desc: Descriptor, sigs: list[Signature], allow_rollback: bool) -> Verdict:
        cfg = self._config(self._manifest(desc.digest))
        version = str(cfg["metadata"].get("version"))
        if ref.tag and SEMVER_RE.match(ref.tag) and ref.tag != version:
            raise PackageRejected(f"{ref} points at a package of version {version}: a tag that lies "
                                  "about its version", reason="wrong_statement", name=ref.name,
                                  version=version, tag=ref.tag)
        expected = SignedStatement(ref.name, version, desc.digest)
        return decide(self.trust.policy(), expected, sigs, self.trust.highest(ref.name),
                      allow_rollback=allow_rollback)

    # ------------------------------------------------------------ remote
    def _remote(self, ref: Ref) -> RemoteRegistry:
        if ref.registry is None:
            raise InvalidRequest(f"{ref} names no registry: use HOST[:PORT]/NAME:TAG to push or pull",
                                 field="ref")
        from agentix.packages.remote import Credentials, RemoteRegistry

        creds = Credentials.load(self.layout.root / "credentials.json", ref.registry)
        return RemoteRegistry(ref.registry, creds, timeout=self.timeout)

    def push(self, ref_text: str) -> dict[str, Any]:
        """Every blob (the package's and its signature's) first, several at once; then the
        manifest (the tag appears only now) and the signature's manifest. What the registry
        is known to hold (``packages/pushed.py``, in ``agentix.db``, updated here) is not asked about or sent
        again, or is mounted from another repository of the registry."""
        ref = parse_ref(ref_text)
        desc = self.layout.resolve(ref)
        remote = self._remote(ref)
        m = self._manifest(desc.digest)
        blobs = [Descriptor.from_data(d) for d in [m["config"], *m.get("layers", [])]]
        try:
            sdesc: Descriptor | None = self.layout.resolve(signature_ref(ref, desc.digest))
        except NotFound:
            sdesc = None
        sm: dict[str, Any] = self.layout.read_json(sdesc.digest) if sdesc is not None else {}
        sblobs = [Descriptor.from_data(d) for d in [sm["config"], *sm.get("layers", [])]] if sm else []
        assert ref.registry is not None
        record = PushRecord(self.trust.db, ref.registry, legacy_root=self.layout.root / "pushed")
        try:
            return self._push(ref, remote, record, desc, blobs, sdesc, sblobs)
        finally:
            try:
                record.save()
            except Exception as err:  # a cache: the push itself does not depend on it
                log.warning("cannot save the record of the blobs pushed to %s: %r", record.host, err)

    def _push(self, ref: Ref, remote: RemoteRegistry, record: PushRecord, desc: Descriptor,
              blobs: list[Descriptor], sdesc: Descriptor | None, sblobs: list[Descriptor]) -> dict[str, Any]:
        everything = _unique(blobs + sblobs)
        known = [d for d in everything if record.has(d.digest, ref.path)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="referrers") as side:
            # whether the registry lists referrers (and this signature already), asked while
            # the blobs go up: one round trip less after the manifest
            listed_f = side.submit(lambda: remote.sibling().referrers(ref, desc.digest, SIGNATURE_ARTIFACT_TYPE)
                                   if sdesc is not None else None)
            outcomes = self._push_blobs(ref, remote, [d for d in everything if d not in known], record)
        listed = listed_f.result()

        fallback = threading.Lock()

        def publish(put: Callable[[], Any], named: list[Descriptor]) -> Any:
            """``put`` a manifest naming ``named``; if the registry says it lacks a blob the
            record said it had (it lost it: garbage collection, a new volume), forget what the
            record said, send those blobs the ordinary way and publish again. (The package's
            and the signature's manifests go up at once: one of them recovers at a time.)"""
            try:
                return put()
            except RegistryError as err:
                if "MANIFEST_BLOB_UNKNOWN" not in err.data.get("codes", ()):
                    raise
                with fallback:
                    named_lost = set(err.data.get("digests", ()))  # distribution names them; else all
                    lost = [d for d in known if d in named and (not named_lost or d.digest in named_lost)]
                    if not lost:
                        raise
                    record.forget([d.digest for d in lost], ref.path)
                    for d in lost:
                        known.remove(d)
                    outcomes.extend(self._push_blobs(ref, remote.sibling(), lost, None))
                return put()

        def publish_signature() -> str | None:
            """The signature's manifest: an OCI referrer (by digest, found through its subject)
            where the registry has the referrers API and indexes the subject; else the tag
            schema (sha256-<hex>.sig). On a client of its own (this runs on a thread)."""
            assert sdesc is not None
            client = remote.sibling()
            sbytes = self.layout.read_blob(sdesc.digest)
            if listed is not None and (any(d.digest == sdesc.digest for d in listed) or publish(
                    lambda: client.put_referrer(ref, MANIFEST_TYPE, sbytes, desc.digest), sblobs)):
                return "referrer"
            publish(lambda: client.put_manifest(signature_ref(ref, desc.digest), MANIFEST_TYPE, sbytes), sblobs)
            return "tag"

        mbytes = self.layout.read_blob(desc.digest)
        tag_ref = ref if ref.tag else ref.with_digest(desc.digest)
        # the package's manifest and its signature's at once (one round trip less): a signature
        # published for a manifest that then fails to publish names a digest no tag points to
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="signature") as side:
            sig_f = side.submit(publish_signature) if sdesc is not None else None
            publish(lambda: remote.put_manifest(tag_ref, MANIFEST_TYPE, mbytes), blobs)
        record.add([d.digest for d in blobs], ref.path)  # a manifest naming them was accepted
        stored_as = sig_f.result() if sig_f is not None else None
        record.add([d.digest for d in sblobs], ref.path)
        signatures = max(len(sblobs) - 1, 0)  # the layers (the first is the config)
        return {"ref": str(ref), "digest": desc.digest, "blobs_sent": outcomes.count("sent"),
                "blobs_mounted": outcomes.count("mounted"), "blobs_known": len(known),
                "signatures": signatures, "signatures_as": stored_as}

    def _push_blobs(self, ref: Ref, remote: RemoteRegistry, blobs: list[Descriptor],
                    record: PushRecord | None) -> list[str]:
        """Make sure the registry holds ``blobs`` in ``ref``'s repository (``push_blob``: mounted
        from another repository the record names, present, or sent), up to
        ``PUSH_CONCURRENCY`` at once, the largest first (it is the longest wait). Each worker
        thread has a client of its own (an oras session, and the token it answers a challenge
        with, is not shared between threads) and keeps its connection for every blob it
        sends. Every upload finishes or fails before this returns; the first failure is
        raised, and then nothing gets tagged."""
        def source(d: Descriptor) -> str | None:
            return record.source(d.digest, ref.path) if record is not None else None  # None: no mounts

        if len(blobs) <= 1:
            return [remote.push_blob(ref, d, self.layout, mount_from=source(d)) for d in blobs]
        local = threading.local()

        def push(d: Descriptor) -> str:
            if not hasattr(local, "remote"):
                local.remote = remote.sibling()
            return local.remote.push_blob(ref, d, self.layout, mount_from=source(d))

        order = sorted(range(len(blobs)), key=lambda i: -blobs[i].size)
        with ThreadPoolExecutor(max_workers=min(PUSH_CONCURRENCY, len(blobs)), thread_name_prefix="push") as pool:
            futures = {i: pool.submit(push, blobs[i]) for i in order}
        return [futures[i].result() for i in range(len(blobs))]

    def pull(self, ref_text: str, *, allow_rollback: bool = False) -> dict[str, Any]:
        """Fetch, verify digests, decide trust, then store and tag (in that order): the
        manifest; its config while the signatures beside it are looked for (on a client of
        their own) and the layers download into the store's private ``tmp/`` (verified, not
        stored: ``_staging_layers``); the verdict; only then are the layers stored; last, one
        write of the index tags the package and its signatures together (an interrupted pull
        tags nothing). A pull
        that fails or is refused (signature, trust, rollback, digest, a registry error, an
        interruption) leaves the store as it was: no tag, and no blob it wrote is left behind."""
        ref = parse_ref(ref_text)
        cp = self.layout.checkpoint()
        try:
            return self._pull(ref, allow_rollback)
        except BaseException:
            try:
                self.undo_pull(cp, ref)
            except Exception:  # the refusal is the answer; a store left untidy is logged
                log.exception("could not undo the refused pull of %s", ref)
            raise

    def undo_pull(self, cp: Checkpoint, ref: Ref) -> int:
        """Put the store back as it was at ``cp`` (``Layout.checkpoint``) for what a pull of
        ``ref`` wrote: the tags of ``ref``'s repository (its own, its signatures', by digest)
        point where they pointed, and every blob written since that no tag reaches is removed;
        unpacked trees no package needs any more go too. Returns the blobs removed. (The
        caller holds the store's one writer: no other change to that repository is in flight.)"""
        def same_repo(text: str) -> bool:
            r = parse_ref(text)
            return r.registry == ref.registry and r.path == ref.path

        refs = {str(r) for r, _ in self.layout.entries() if r.registry == ref.registry and r.path == ref.path}
        refs |= {t for t in cp.tags if same_repo(t)}
        removed = self.layout.roll_back(cp, frozenset(refs))
        self._prune_unpacked()
        return removed

    def _pull(self, ref: Ref, allow_rollback: bool) -> dict[str, Any]:
        remote = self._remote(ref)
        desc, mbytes = remote.get_manifest(ref)
        try:
            m = bounded_loads(mbytes)
        except ValueError:  # untrusted bytes: one error family (PackageRejected), never a crash
            raise PackageRejected(f"{ref}: the registry's manifest is not JSON",
                                  reason="malformed_manifest") from None
        from agentix.packages.snapshot import SNAPSHOT_ARTIFACT_TYPE

        if not isinstance(m, dict) or m.get("artifactType", ARTIFACT_TYPE) not in (ARTIFACT_TYPE,
                                                                                  SNAPSHOT_ARTIFACT_TYPE):
            raise PackageRejected(f"{ref} is not an agentix package", reason="not_a_package")
        m = _manifest_shape(m, str(ref))
        cd = Descriptor.from_data(m.get("config"))
        layers = [Descriptor.from_data(x) for x in m.get("layers", [])]
        if sum(d.size for d in layers) > self.limits.max_bytes * 2:
            raise PackageRejected(f"{ref} is larger than this kernel accepts", reason="too_large")
        with self._staging_layers(ref, remote, layers) as staged:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="signatures") as side:
                sig_f = side.submit(self._remote_signatures, remote.sibling(), ref, desc)
                remote.fetch_blob(ref, cd, self.layout, MAX_CONFIG)  # its failure is raised first
                self.layout.put_bytes(mbytes, desc.digest)
            sigs, via, sig_tag = sig_f.result()
            verdict = self._decide(ref, desc, sigs, allow_rollback)  # before any layer is stored or tagged
            for blob in staged():  # a layer's failure is raised after the verdict's
                blob.commit()
        # by digest: remembered under a tag named after its digest
        tag_ref = ref if ref.tag else ref.with_tag("sha256-" + desc.digest[7:19])
        self.layout.tag_all([*([sig_tag] if sig_tag is not None else []),
                             (tag_ref, Descriptor(MANIFEST_TYPE, desc.digest, desc.size))])
        self.record_seen(verdict)
        return {"ref": str(ref), "digest": desc.digest, "verdict": _verdict_data(verdict), "signatures_via": via}

    @contextlib.contextmanager
    def _staging_layers(self, ref: Ref, remote: RemoteRegistry, layers: list[Descriptor]
                         ) -> Iterator[Callable[[], list[StagedBlob]]]:
        """Download the ``layers`` the store lacks into its private ``tmp/`` (``stage_blob``:
        verified against their digests, fsynced, not in the store) while the body of the
        ``with`` finds the signatures and decides trust: up to ``PULL_CONCURRENCY`` at once,
        the largest first, each on a client of its own (sharing ``remote``'s login). The body calls what it is given to
        wait for them all (the first failure is raised) and commits them only once trusted.
        Leaving the ``with`` — refused, failed or done — stops the downloads still running
        (at their next chunk), waits for them, and removes every staged file not committed:
        nothing fetched before the verdict is ever visible, and ``tmp/`` is as it was."""
        pending = [d for d in _unique(layers) if not self.layout.has_blob(d.digest)]
        if not pending:
            yield lambda: []
            return
        stop = threading.Event()
        local = threading.local()
        max_size = self.limits.max_bytes * 2

        def stage(d: Descriptor) -> StagedBlob:
            if not hasattr(local, "remote"):
                local.remote = remote.sibling()
            return local.remote.stage_blob(ref, d, self.layout, max_size, stop)

        pool = ThreadPoolExecutor(max_workers=min(PULL_CONCURRENCY, len(pending)), thread_name_prefix="layers")
        futures = [pool.submit(stage, d) for d in sorted(pending, key=lambda d: -d.size)]
        try:
            yield lambda: [f.result() for f in futures]
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)  # one not started never starts
            for f in futures:
                if not f.cancelled() and f.exception() is None:
                    f.result().discard()  # committed ones are gone already

    def _remote_signatures(self, remote: RemoteRegistry, ref: Ref, desc: Descriptor
                           ) -> tuple[list[Signature], str | None, tuple[Ref, Descriptor] | None]:
        """The signatures stored beside ``desc`` on the registry, where they were found, and
        the local tag to give them: through the OCI referrers API (manifests whose subject is
        the package) when the registry implements it, else — or when it lists none — under
        the tag ``sha256-<hex>.sig``. Their blobs are fetched (bounded, checked against their
        digests) and stored locally as one signature manifest, which the caller tags beside
        the package (``pull``: in the same index write). Signatures are *found* here, never
        trusted: ``decide`` verifies each."""
        layers: list[Descriptor] = []
        via = None
        sref = signature_ref(ref, desc.digest)

        def by_tag() -> bytes | None:
            try:
                return remote.sibling().get_manifest(sref)[1]  # a client of its own (a thread)
            except RegistryError as err:
                if err.data.get("reason") != "not_found":
                    raise
                return None

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sigtag") as side:
            # the tag schema's manifest is asked for while the referrers API is (one round trip
            # less where the registry has no referrers API; one wasted GET where it has)
            tag_f = side.submit(by_tag)
            listed = remote.referrers(ref, desc.digest, SIGNATURE_ARTIFACT_TYPE)
        for d in (listed or [])[:MAX_SIGNATURES]:
            try:
                _, sbytes = remote.get_manifest(ref.with_digest(d.digest))  # checked against d.digest
            except RegistryError as err:
                if err.data.get("reason") != "not_found":  # listed, then deleted: skip it
                    raise
                continue
            found = self._signature_layers(sbytes, desc.digest)
            if found:
                via = "referrers"
                layers += [x for x in found if x.digest not in {y.digest for y in layers}]
        if not layers:
            sbytes = tag_f.result()
            if sbytes is not None:
                layers = self._signature_layers(sbytes, desc.digest, need_subject=False)
                via = "tag" if layers else None
        if not layers:
            return [], None, None
        for d in layers[:MAX_SIGNATURES]:
            remote.fetch_blob(ref, d, self.layout, 64 << 10)
        self.layout.put_bytes(b"{}", EMPTY_CONFIG.digest)
        mbytes = signature_manifest(layers[:MAX_SIGNATURES], desc)
        mdesc = Descriptor(MANIFEST_TYPE, self.layout.put_bytes(mbytes), len(mbytes))
        return signatures_in(self.layout, mdesc.digest), via, (signature_ref(ref, desc.digest), mdesc)

    @staticmethod
    def _signature_layers(sbytes: bytes, subject: str, need_subject: bool = True) -> list[Descriptor]:
        """The signature layers of a signature manifest (untrusted JSON). A referrer must name
        ``subject``; the tag schema's manifest is found by the subject's digest already (an
        older agentix wrote it without a ``subject``), but one naming another subject is ignored."""
        try:
            sm = bounded_loads(sbytes)
        except ValueError:
            return []
        if not isinstance(sm, dict) or not isinstance(sm.get("layers", []), list):
            return []
        named = (sm.get("subject") or {}).get("digest") if isinstance(sm.get("subject"), dict) else None
        if named != subject and (need_subject or named is not None):
            return []
        out = []
        for x in sm.get("layers", []):
            try:
                d = Descriptor.from_data(x)
            except PackageRejected:
                continue
            if d.media_type == SIGNATURE_TYPE and d.size <= 64 << 10:
                out.append(d)
        return out

    # ------------------------------------------------------------ running
    def prepare(self, ref_text: str, accepted: list[str] | Literal["all"], dest: Path, *,
                allow_rollback: bool = False) -> Prepared:
        """Verify the local package, compute its capability ceiling, unpack it to ``dest``: the
        first run of its content straight from the blobs (verified as they stream), the second
        through a kept, sealed tree it makes (``_unpacked``), later runs by copying that tree."""
        ref = parse_ref(ref_text)
        desc = self.layout.resolve(ref)
        verdict = self._decide(ref, desc, read_signatures(self.layout, ref, desc.digest), allow_rollback)
        m = self._manifest(desc.digest)
        cfg = self._config(m, snapshots=False)  # a snapshot is restored (`agentix restore`), not run
        declared = [str(x) for x in cfg.get("capabilities", [])]
        granted = capability_ceiling(declared, accepted)
        if not isinstance(cfg.get("manifest"), dict):
            raise PackageRejected("the package config has no agent manifest", reason="malformed_manifest")
        # only the fields an Agentfile can set: a package never picks its own isolation,
        # lifecycle or scheduling priority, whoever signed it
        manifest = {k: v for k, v in cfg["manifest"].items() if k in PACKAGE_MANIFEST_FIELDS}
        manifest["capabilities"] = granted
        layers = [Descriptor.from_data(x) for x in m.get("layers", [])]
        key = self._unpacked_key(layers)
        kept = self._kept(key)
        if kept is None and key not in self._ran_once:
            # the first run of this content (in this kernel): unpacked straight into the run's
            # directory, verified as it streams; nothing kept yet, so no copy of it either
            self._unpack_verified(layers, dest)
            self._ran_once[key] = None
            while len(self._ran_once) > MAX_RAN_ONCE:
                del self._ran_once[next(iter(self._ran_once))]
        else:
            tree, seal = kept if kept is not None else self._unpacked(layers)
            try:
                copy_tree(tree, dest, self.limits.max_entries, seal=seal)
            except PackageRejected as err:
                if err.data.get("reason") == "corrupt":  # altered at rest: the next run unpacks afresh
                    remove_tree(tree.parent)
                raise
        self.record_seen(verdict)
        return Prepared(ref, desc.digest, verdict, manifest, declared, dest)

    def _unpacked_key(self, layers: list[Descriptor]) -> str:
        """The kept tree's name: the layers and the limits they were unpacked within ("v": bump
        it when what the unpacker accepts or produces changes, so no older tree is reused)."""
        lim = self.limits
        doc = {"v": 2, "layers": [d.digest for d in layers], "limits": [lim.max_bytes, lim.max_entries, lim.max_name]}
        return hashlib.sha256(canonical_json(doc)).hexdigest()

    def _kept(self, key: str) -> tuple[Path, dict[str, list[int]]] | None:
        """The kept tree ``registry/unpacked/<key>`` and its seal, if there is one (a tree
        without a readable seal — made by an older agentix, or altered — is removed)."""
        kept = self.layout.root / "unpacked" / key
        if not (os.path.isdir(kept) and not os.path.islink(kept)):
            return None
        seal = _read_seal(kept)
        if seal is not None:
            return kept / "tree", seal
        remove_tree(kept)
        return None

    def _unpack_verified(self, layers: list[Descriptor], dest: Path) -> None:
        """Unpack the stored ``layers`` into the new directory ``dest`` in one pass over each
        blob: hashed while it inflates into a private staging directory that becomes ``dest``
        only after every digest matched (``unpack_layers``: nothing partial, nothing
        unverified is ever visible)."""
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(self.layout.open_verifying(d)) for d in layers]
            unpack_layers(files, dest, self.limits)

    def _unpacked(self, layers: list[Descriptor]) -> tuple[Path, dict[str, list[int]]]:
        """The package's layers unpacked and kept: ``registry/unpacked/<key>/tree``, named by
        the layers' digests (and the unpack limits), unpacked by ``unpack_layers`` with every
        layer verified as it streamed, then made read-only, sealed (``seal.json`` beside it:
        each entry's inode, size, times and link count, ``unpack.seal_tree``) and renamed into
        place with its seal in one step (never partial, never without its seal). Made by the
        second run of the same content (``prepare``: the first unpacks straight into its own
        directory); later runs copy this tree instead of verifying and inflating the layers
        again; the copy checks every entry against the seal (a tree altered at rest is refused,
        and removed so that the next run makes it again from the verified blobs). Only the
        kernel writes here (``registry/`` is 0700). Returns the tree and its seal."""
        root = self.layout.root / "unpacked"
        key = self._unpacked_key(layers)
        found = self._kept(key)
        if found is not None:
            return found
        kept = root / key
        root.mkdir(mode=0o700, exist_ok=True)
        work = root / f".new-{secrets.token_hex(6)}"
        try:
            work.mkdir(mode=0o700)
            self._unpack_verified(layers, work / "tree")
            _read_only(work / "tree")
            seal = seal_tree(work / "tree")
            (work / "seal.json").write_bytes(canonical_json(seal))
            try:
                os.rename(work, kept)
            except OSError:
                other = _read_seal(kept) if os.path.isdir(kept) else None
                if other is None:  # else: made meanwhile by another run of it
                    raise
                return kept / "tree", other
        finally:
            if os.path.lexists(work):
                remove_tree(work)
        return kept / "tree", seal

    def _prune_unpacked(self) -> int:
        """Remove the unpacked trees no tagged package needs any more; return how many."""
        root = self.layout.root / "unpacked"
        if not root.is_dir():
            return 0
        live = set()
        for _, d in self.layout.entries():
            try:
                m = self.layout.read_json(d.digest)
                live.add(self._unpacked_key([Descriptor.from_data(x) for x in m.get("layers", [])]))
            except (NotFound, PackageRejected, AttributeError):
                continue
        removed = 0
        for p in root.iterdir():
            if p.name not in live:
                remove_tree(p)
                removed += 1
        return removed

    def record_seen(self, verdict: Verdict) -> bool:
        return self.trust.remember(verdict.statement.name, verdict.statement.version)


def _manifest_shape(m: Any, what: str) -> dict[str, Any]:
    """An image manifest's shape (a registry's or the store's bytes, parsed): an object with a
    ``config`` object and a ``layers`` list, else ``malformed_manifest``."""
    if not isinstance(m, dict) or not isinstance(m.get("config"), dict) \
            or not isinstance(m.get("layers", []), list):
        raise PackageRejected(f"{what} is not a package manifest (it needs a config object and a "
                              "layers list)", reason="malformed_manifest")
    if len(m.get("layers", [])) > MAX_LAYERS:
        raise PackageRejected(f"{what} lists {len(m['layers'])} layers; this kernel accepts at most "
                              f"{MAX_LAYERS} per package (rebuild it with fewer steps)",
                              reason="too_large", layers=len(m["layers"]), max=MAX_LAYERS)
    return m


def _unique(descs: list[Descriptor]) -> list[Descriptor]:
    """``descs`` without repeated digests (the first of each kept)."""
    seen: set[str] = set()
    return [d for d in descs if not (d.digest in seen or seen.add(d.digest))]  # type: ignore[func-returns-value]


def _dependency_chain(name: str, requires: list[Any], own: str, depth: int = 0) -> list[str] | None:
    """The names from a dependency down to one that is the package being built (its full
    name, as signed), or None. ``requires`` is the dependency's recorded tree (an untrusted
    shape: anything malformed is skipped; it can only ever add a refusal)."""
    if name == own:
        return [name]
    if depth > 32:
        return None
    for r in requires:
        if not isinstance(r, dict):
            continue
        sub = _dependency_chain(str(r.get("name", "")),
                                r.get("packages") if isinstance(r.get("packages"), list) else [],
                                own, depth + 1)
        if sub is not None:
            return [name, *sub]
    return None


def _read_seal(kept: Path) -> dict[str, list[int]] | None:
    try:
        seal = json.loads((kept / "seal.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(seal, dict) or not all(isinstance(v, list) for v in seal.values()):
        return None
    return seal


def _verdict_data(v: Verdict) -> dict[str, Any]:
    return {"basis": v.basis, "keyid": v.keyid, "rollback": v.rollback_allowed, **v.statement.to_data()}


def remove_tree(path: Path) -> None:
    def writable(fn: Any, p: str, _exc: Any) -> None:  # a read-only tree (unpacked/) of a non-root kernel
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            fn(p)

    shutil.rmtree(path, onerror=writable)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def _read_only(tree: Path) -> None:
    """Files 0444 (0555 if executable), directories 0555, without following a link (an
    unpacked tree has none)."""
    for dirpath, dirnames, filenames in os.walk(tree, topdown=False):
        dfd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for n in filenames:
                fd = os.open(n, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    os.fchmod(fd, 0o555 if os.fstat(fd).st_mode & 0o111 else 0o444)
                finally:
                    os.close(fd)
            os.fchmod(dfd, 0o555)
        finally:
            os.close(dfd)


def fetch_wheels(requirements: list[str], dest: Path, timeout: float) -> None:
    """Download the wheels of pinned requirements into ``dest`` with the kernel's pip and
    its configured index. Wheels only (``--only-binary=:all:``): building a source
    distribution would run its code on the host. No dependency resolution (``--no-deps``):
    the Agentfile lists every distribution, pinned, so the layer is the same every time."""
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
            "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(dest), "--", *requirements]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Timeout(f"dependencies.python: downloading the wheels took longer than {timeout:g} s",
                      reason="timeout", timeout=timeout) from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise InvalidRequest("dependencies.python: pip could not download the wheels (a wheel must exist for "
                             f"this Python and platform; no source builds): {' / '.join(tail)}",
                             field="dependencies.python")
