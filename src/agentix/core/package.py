"""Pure rules of agent packages: references, signature payloads, the trust decision, the
rollback rule and the capability ceiling. Values in, values or exceptions out.

References are parsed once (``parse_ref``, in ``core/refs.py``, re-exported here) into a
``Ref``; nothing downstream re-parses one or turns a name into a file path.

Signatures (Ed25519) are over the canonical JSON of ``SignedStatement``: the package's
manifest digest *and* its name *and* its version, so a signature for ``team/x`` 1.0 cannot
be replayed on ``team/x`` 2.0, on another name, or on other bytes.

The trust decision (``decide``) takes the policy, the statement the verifier expects, the
signatures found beside the artifact and the highest version seen before; it returns a
``Verdict`` or raises ``PackageRejected`` with a stable ``reason``:

    unsigned          no signature, and the policy does not allow unsigned for the name
    untrusted_key     signatures exist, but none by a key trusted for this name
    bad_signature     a trusted key's signature does not verify
    wrong_statement   a trusted key signed another digest, name or version
    rollback          the version is lower than one seen before for the name
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentix.core.agentfile import parse_semver, semver_key
from agentix.core.canonical import canonical_json
from agentix.core.errors import HandoffEscalationDenied, InvalidRequest, PackageRejected
from agentix.core.grants import parse_grants
from agentix.core.refs import DIGEST_RE, MAX_REF, Ref, check_digest, parse_ref, sha256_digest  # noqa: F401

__all__ = [
    "DIGEST_RE",
    "MAX_LAYERS",
    "Ref",
    "Signature",
    "SignedStatement",
    "TrustPolicy",
    "TrustRule",
    "Verdict",
    "capability_ceiling",
    "check_digest",
    "decide",
    "key_id",
    "parse_ref",
    "parse_public_key",
    "sha256_digest",
]

STATEMENT_TYPE = "agentix.dev/package-signature/v1"

#: the most layers one package (or snapshot) may have, base package's included: a build that
#: would make more is refused before it starts, a registry manifest listing more before any
#: layer is fetched (each layer is a request and a file: an unbounded list is a hostile
#: registry's way to keep a pull busy before its signature is even checked)
MAX_LAYERS = 256


# ---------------------------------------------------------------- keys and statements
def key_id(public_raw: bytes) -> str:
    """A short, stable name for an Ed25519 public key (hex of its SHA-256, 16 chars)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def parse_public_key(text: str) -> bytes:
    """``ed25519:<base64 of the 32 raw bytes>`` -> the raw bytes."""
    text = text.strip()
    kind, _, b64 = text.partition(":")
    try:
        raw = base64.b64decode(b64, validate=True) if kind == "ed25519" else b""
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise InvalidRequest("a public key must look like ed25519:<base64 of 32 bytes> "
                             "(as printed by `agentix keys generate`)", field="key")
    return raw


def format_public_key(raw: bytes) -> str:
    return "ed25519:" + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class SignedStatement:
    """What a package signature says: this digest is version ``version`` of ``name``."""

    name: str
    version: str
    digest: str

    def payload(self) -> bytes:
        return canonical_json({"type": STATEMENT_TYPE, "name": self.name, "version": self.version,
                               "digest": self.digest})

    def to_data(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "digest": self.digest}


@dataclass(frozen=True)
class Signature:
    """One signature as stored beside an artifact (parsed from untrusted JSON)."""

    keyid: str
    statement: SignedStatement
    sig: bytes

    @staticmethod
    def from_data(data: Any) -> Signature:
        try:
            st = data["statement"]
            statement = SignedStatement(str(st["name"]), str(st["version"]), check_digest(st["digest"]))
            sig = base64.b64decode(data["sig"], validate=True)
            keyid = str(data["keyid"])
        except (KeyError, TypeError, ValueError, InvalidRequest):
            raise PackageRejected("a signature beside the package is malformed",
                                  reason="bad_signature") from None
        return Signature(keyid, statement, sig)

    def to_data(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "statement": self.statement.to_data(),
                "sig": base64.b64encode(self.sig).decode()}


# ---------------------------------------------------------------- the trust policy
@dataclass(frozen=True)
class TrustRule:
    """``public_key`` (raw Ed25519) counts for names matching any of ``patterns``."""

    keyid: str
    public_key: bytes
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class TrustPolicy:
    rules: tuple[TrustRule, ...] = ()
    #: name patterns for which unsigned (or untrusted) packages are accepted — audited
    allow_unsigned: tuple[str, ...] = ()

    def with_key(self, public_key: bytes, pattern: str) -> TrustPolicy:
        check_pattern(pattern)
        kid = key_id(public_key)
        rules = list(self.rules)
        for i, r in enumerate(rules):
            if r.keyid == kid:
                pats = r.patterns if pattern in r.patterns else (*r.patterns, pattern)
                rules[i] = TrustRule(kid, public_key, pats)
                return TrustPolicy(tuple(rules), self.allow_unsigned)
        return TrustPolicy((*rules, TrustRule(kid, public_key, (pattern,))), self.allow_unsigned)

    def with_unsigned(self, pattern: str) -> TrustPolicy:
        check_pattern(pattern)
        if pattern in self.allow_unsigned:
            return self
        return TrustPolicy(self.rules, (*self.allow_unsigned, pattern))

    def without_key(self, keyid: str) -> TrustPolicy:
        return TrustPolicy(tuple(r for r in self.rules if r.keyid != keyid), self.allow_unsigned)

    def keys_for(self, name: str) -> dict[str, bytes]:
        return {r.keyid: r.public_key for r in self.rules if any(_match(p, name) for p in r.patterns)}

    def unsigned_allowed(self, name: str) -> bool:
        return any(_match(p, name) for p in self.allow_unsigned)

    def to_data(self) -> dict[str, Any]:
        return {"rules": [{"keyid": r.keyid, "public_key": format_public_key(r.public_key),
                           "patterns": list(r.patterns)} for r in self.rules],
                "allow_unsigned": list(self.allow_unsigned)}

    @staticmethod
    def from_data(data: Any) -> TrustPolicy:
        if not data:
            return TrustPolicy()
        rules = []
        for r in data.get("rules", []):
            raw = parse_public_key(r["public_key"])
            rules.append(TrustRule(key_id(raw), raw, tuple(check_pattern(p) for p in r["patterns"])))
        return TrustPolicy(tuple(rules), tuple(check_pattern(p) for p in data.get("allow_unsigned", [])))


def check_pattern(pattern: Any) -> str:
    """A trust pattern: a package name, or one ending in ``/*`` (everything below) or ``*``."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_REF:
        raise InvalidRequest("a trust pattern must be a name like registry.example/team/* ", field="pattern")
    body = pattern[:-1] if pattern.endswith("*") else pattern
    if "*" in body or "?" in pattern or "[" in pattern:
        raise InvalidRequest(f"trust pattern {pattern!r}: only a trailing '*' is allowed", field="pattern")
    if body and not body.endswith("/"):
        parse_ref(body)  # a full name must itself be a valid reference
    elif body:
        parse_ref(body[:-1])
    return pattern


def _match(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return name.startswith(pattern[:-1])  # 'team/*' matches 'team/x' and 'team/a/b', not 'teamx'
    if pattern.endswith("*"):
        return fnmatch.fnmatchcase(name, pattern) and "/" not in name[len(pattern) - 1:]
    return name == pattern


# ---------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Verdict:
    """The outcome of a successful trust decision (what was accepted, and on what basis)."""

    statement: SignedStatement
    basis: Literal["signed", "unsigned_allowed"]
    keyid: str | None
    rollback_allowed: bool = False
    notes: tuple[str, ...] = field(default=())


def _verify(public_key: bytes, sig: Signature) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig.sig, sig.statement.payload())
        return True
    except (InvalidSignature, ValueError):
        return False


def decide(policy: TrustPolicy, expected: SignedStatement, signatures: Sequence[Signature],
           highest_seen: str | None, *, allow_rollback: bool = False) -> Verdict:
    """Whether to accept the package ``expected`` describes. Raises ``PackageRejected``."""
    name = expected.name
    trusted = policy.keys_for(name)
    basis: Literal["signed", "unsigned_allowed"] | None = None
    keyid = None
    problems: list[str] = []
    for sig in signatures:
        pub = trusted.get(sig.keyid)
        if pub is None:
            problems.append("untrusted_key")
            continue
        if not _verify(pub, sig):
            problems.append("bad_signature")
            continue
        if sig.statement != expected:
            problems.append("wrong_statement")
            continue
        basis, keyid = "signed", sig.keyid
        break
    if basis is None:
        # a trusted key's signature that does not verify is evidence the package or its
        # signature was altered: refused even where unsigned packages are allowed (a package
        # that comes with no signature, or one by a key not trusted here, is still accepted there)
        if policy.unsigned_allowed(name) and "bad_signature" not in problems:
            basis = "unsigned_allowed"
        else:
            reason = ("unsigned" if not signatures else
                      "bad_signature" if "bad_signature" in problems else
                      "wrong_statement" if "wrong_statement" in problems else "untrusted_key")
            text = {
                "unsigned": f"{name} {expected.version} is not signed, and the trust policy does not "
                            f"allow unsigned packages for it (`agentix trust add KEY --for {name}` "
                            "for a signer you trust)",
                "untrusted_key": f"{name} {expected.version} is signed only by keys not trusted for "
                                 f"this name (trust one with `agentix trust add KEY --for PATTERN`)",
                "bad_signature": f"{name} {expected.version}: a trusted key's signature does not "
                                 "verify (the package or its signature was altered)",
                "wrong_statement": f"{name} {expected.version}: the trusted signature is for another "
                                   "digest, name or version (a replayed signature)",
            }[reason]
            raise PackageRejected(text, reason=reason, name=name, version=expected.version,
                                  digest=expected.digest, trusted_keys=sorted(trusted))
    rolled_back = highest_seen is not None and semver_key(expected.version) < semver_key(highest_seen)
    if rolled_back and not allow_rollback:
        raise PackageRejected(
            f"{name} {expected.version} is older than {highest_seen}, seen before: a rollback "
            "(pass --allow-rollback if you mean it)", reason="rollback", name=name,
            version=expected.version, highest_seen=highest_seen)
    return Verdict(expected, basis, keyid, rollback_allowed=rolled_back)


def newer(version: str, highest: str | None) -> bool:
    """Whether ``version`` should replace ``highest`` as the highest seen."""
    parse_semver(version)
    return highest is None or semver_key(version) > semver_key(highest)


# ---------------------------------------------------------------- the capability ceiling
def capability_ceiling(declared: Iterable[str], accepted: Iterable[str] | Literal["all"]) -> list[str]:
    """The grants an agent from a package may hold: accepted ∩ declared.

    ``accepted="all"`` accepts every declared grant. Otherwise each accepted grant must be
    covered by a declared one (it may be narrower: ``/data/x/*`` under ``/data/*``); one
    that asks for more than the package declared is refused (``HandoffEscalationDenied``).
    Declared grants the operator did not accept are simply not given.
    """
    declared = list(declared)
    ws = "/workspace"
    dset = parse_grants(declared, ws)
    if accepted == "all":
        return declared
    accepted = list(accepted)
    aset = parse_grants(accepted, ws)
    lacking = [str(g) for g in aset if not dset.covers(g)]
    if lacking:
        raise HandoffEscalationDenied(
            f"the package does not declare {lacking[0]}; an operator can only accept what a "
            "package declares", reason="not_declared", missing=lacking, declared=declared)
    return accepted
