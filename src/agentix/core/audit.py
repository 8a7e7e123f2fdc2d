"""The audit chain: entry hashing, signed tree heads and verification, with no I/O.
(Over 400 lines: the whole chain rule (hashing, heads, verification) that an independent
verifier reimplements; split, it would be read in pieces.)

The rule (docs/audit.md gives it in full for independent verifiers):

* An entry's *body* is the canonical JSON (``agentix.core.canonical``) of
  ``{"agent", "data", "kind", "seq", "taint", "ts", "v"}`` where ``seq`` counts from 1 with
  no gaps, ``ts`` is UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (never earlier than the previous
  entry's), ``agent`` is an agent id or null (the kernel/operator), ``taint`` is the sorted,
  de-duplicated list of labels and ``v`` is 1.
* ``hash = SHA-256(prev_hash || body)`` where ``prev_hash`` is the previous entry's hash
  (32 raw bytes), or 32 zero bytes for seq 1.
* Entry ``seq`` is leaf ``seq - 1`` (leaf indices count from 0) of an RFC 6962 Merkle tree whose leaf data is the entry's
  32-byte hash (``agentix.core.merkle``).
* A signed tree head is Ed25519 over ``b"agentix-tree-head-v1\\n" +
  canonical({"root": hex, "size": n, "timestamp": ts})``.

``ChainVerifier`` is fed stored records in storage order and names the first bad seq with
a reason; it is a state machine that holds O(log n) memory, so a million entries stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agentix.core.canonical import canonical_json
from agentix.core.errors import InvalidRequest
from agentix.core.merkle import (
    CompactRange,
    leaf_hash,
    root_from_consistency,
    root_from_inclusion,
)

__all__ = [
    "ENTRY_VERSION",
    "GENESIS_HASH",
    "HEAD_CONTEXT",
    "PROOF_VERSION",
    "ChainVerifier",
    "Entry",
    "FailReason",
    "SignedHead",
    "StoredRecord",
    "VerifyReport",
    "entry_body",
    "entry_hash",
    "format_ts",
    "key_id",
    "normalise_taint",
    "public_key_bytes",
    "sign_head",
    "verify_consistency",
    "verify_head",
    "verify_inclusion",
    "verify_proof",
    "verify_records",
]

ENTRY_VERSION = 1
GENESIS_HASH = b"\x00" * 32
HEAD_CONTEXT = b"agentix-tree-head-v1\n"

FailReason = Literal[
    "edited",  # the entry's recomputed hash differs from its stored hash
    "chain_broken",  # prev_hash is not the previous entry's hash
    "deleted",  # a seq is missing
    "reordered",  # an entry sits at another seq than its own (moved, swapped, duplicated)
    "out_of_order",  # timestamp earlier than its predecessor's
    "malformed",  # body is not a valid entry, or stored columns disagree with it
    "truncated",  # fewer entries than a signed head covers
    "root_mismatch",  # entries chain correctly but the Merkle root differs from a signed head
    "bad_signature",  # a tree head's signature does not verify with the kernel's key
]


def format_ts(epoch_seconds: float) -> str:
    """UTC timestamp with microseconds, fixed width, so strings sort like times."""
    dt = datetime.fromtimestamp(epoch_seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise_taint(taint: Iterable[str]) -> tuple[str, ...]:
    if taint == ():  # the common case (an untainted call), without a set and a sort
        return ()
    labels = tuple(sorted(set(taint)))
    for t in labels:
        if type(t) is not str:
            raise InvalidRequest("taint labels must be strings", label=repr(t)[:80])
    return labels


def entry_body(
    seq: int, ts: str, agent: str | None, kind: str, data: dict[str, Any], taint: Sequence[str]
) -> bytes:
    """The canonical bytes that are hashed for an entry (``taint`` already normalised)."""
    if type(data) is not dict:
        raise InvalidRequest("audit data must be a JSON object")
    return canonical_json(
        {
            "agent": agent,
            "data": data,
            "kind": kind,
            "seq": seq,
            "taint": list(taint),
            "ts": ts,
            "v": ENTRY_VERSION,
        }
    )


def entry_hash(prev_hash: bytes, body: bytes) -> bytes:
    """``SHA-256(prev_hash || body)``."""
    return hashlib.sha256(prev_hash + body).digest()


class Entry(NamedTuple):
    """One audit entry as appended (``hash`` covers ``prev_hash`` and the body).

    A named tuple (immutable, and cheap to build on the append path)."""

    seq: int
    ts: str
    agent: str | None
    kind: str
    data: dict[str, Any]
    taint: tuple[str, ...]
    prev_hash: bytes
    hash: bytes

    def to_json(self) -> dict[str, Any]:
        """The export form: body fields plus hex ``prev_hash`` and ``hash``."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "agent": self.agent,
            "kind": self.kind,
            "data": self.data,
            "taint": list(self.taint),
            "v": ENTRY_VERSION,
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }

    @classmethod
    def from_body(cls, body: bytes, prev_hash: bytes, hash_: bytes) -> Entry:
        d = orjson.loads(body)
        return cls(
            d["seq"], d["ts"], d["agent"], d["kind"], d["data"], tuple(d["taint"]),
            prev_hash, hash_,
        )


class StoredRecord(NamedTuple):
    """A record as read back from storage, to be verified.

    ``pos`` is where storage says the entry is (the seq column, or the entry's own seq for
    a JSONL export); ``agent``/``kind`` are the stored index columns, or None if the storage
    has none (they must then agree with the body).
    """

    pos: int
    body: bytes
    prev_hash: bytes
    hash: bytes
    agent: str | None = None
    kind: str | None = None
    has_columns: bool = False

    @classmethod
    def from_export(cls, line: dict[str, Any]) -> StoredRecord:
        """From one JSONL export object; the body is recomputed canonically."""
        try:
            body = entry_body(
                line["seq"], line["ts"], line["agent"], line["kind"], line["data"],
                line["taint"],
            )
            if line.get("v", ENTRY_VERSION) != ENTRY_VERSION:
                raise InvalidRequest("unknown entry version", v=line.get("v"))
            return cls(line["seq"], body, bytes.fromhex(line["prev_hash"]),
                       bytes.fromhex(line["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest("malformed export line", reason=str(exc)) from None


# ---------------------------------------------------------------- signed tree heads


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: bytes) -> str:
    """Hex SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()


def _head_message(size: int, root: bytes, timestamp: str) -> bytes:
    return HEAD_CONTEXT + canonical_json({"root": root.hex(), "size": size, "timestamp": timestamp})


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A signed statement: "the log had ``size`` entries with Merkle root ``root``"."""

    size: int
    root: bytes
    timestamp: str
    key_id: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root.hex(),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SignedHead:
        try:
            return cls(int(d["size"]), bytes.fromhex(d["root"]), str(d["timestamp"]),
                       str(d["key_id"]), bytes.fromhex(d["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest("malformed signed head", reason=str(exc)) from None


def sign_head(key: Ed25519PrivateKey, size: int, root: bytes, timestamp: str) -> SignedHead:
    sig = key.sign(_head_message(size, root, timestamp))
    return SignedHead(size, root, timestamp, key_id(public_key_bytes(key)), sig)


def verify_head(head: SignedHead, public_key: bytes) -> bool:
    """True if ``head`` is signed by the holder of ``public_key`` (raw 32 bytes)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            head.signature, _head_message(head.size, head.root, head.timestamp)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_inclusion(
    entry_hash_: bytes, seq: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """True if the entry hash of ``seq`` is leaf ``seq - 1`` of the tree of ``size`` leaves
    with ``root``."""
    got = root_from_inclusion(seq - 1, size, leaf_hash(entry_hash_), path)
    return got is not None and got == root


# ---------------------------------------------------------------- proofs

PROOF_VERSION = 1


def verify_proof(proof: dict[str, Any], public_key: bytes) -> Entry:
    """Check an inclusion proof offline; return the proven entry or raise ``InvalidRequest``.

    Checks, in order: the head's signature with ``public_key``; that the entry's hash is
    SHA-256(prev_hash || canonical body); that the path leads from that leaf to the head's
    root at the head's size.
    """
    try:
        if proof.get("version") != PROOF_VERSION:
            raise InvalidRequest("unknown proof version", version=proof.get("version"))
        head = SignedHead.from_json(proof["head"])
        e = proof["entry"]
        seq, size = int(proof["leaf_index"]) + 1, int(proof["tree_size"])
        path = [bytes.fromhex(p) for p in proof["path"]]
        rec = StoredRecord.from_export(e)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest("malformed proof", reason=str(exc)) from None
    if head.key_id != key_id(public_key) or not verify_head(head, public_key):
        raise InvalidRequest("the tree head is not signed by this key")
    if head.size != size or rec.pos != seq:
        raise InvalidRequest("the proof's sizes or seq do not match its head or entry")
    if entry_hash(rec.prev_hash, rec.body) != rec.hash:
        raise InvalidRequest("the entry does not match its hash", seq=seq)
    if not verify_inclusion(rec.hash, seq, size, path, head.root):
        raise InvalidRequest("the entry is not included in the signed tree", seq=seq)
    return Entry.from_body(rec.body, rec.prev_hash, rec.hash)


def verify_consistency(proof: dict[str, Any], old_head: SignedHead, new_head: SignedHead,
                       public_key: bytes) -> None:
    """Check offline that ``new_head`` extends ``old_head``; raise ``InvalidRequest`` if not."""
    for h in (old_head, new_head):
        if not verify_head(h, public_key):
            raise InvalidRequest("a tree head is not signed by this key", size=h.size)
    try:
        path = [bytes.fromhex(p) for p in proof["path"]]
        m, n = int(proof["old_size"]), int(proof["new_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest("malformed consistency proof", reason=str(exc)) from None
    if (m, n) != (old_head.size, new_head.size):
        raise InvalidRequest("the proof is for other sizes than the heads")
    if root_from_consistency(m, n, old_head.root, path) != new_head.root:
        raise InvalidRequest("the new head does not extend the old one: the log was rewritten")


# ---------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: FailReason | None = None
    detail: str = ""
    head_size: int | None = None  # the largest signed head checked
    root: bytes | None = None  # Merkle root over all entries read

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "root": self.root.hex() if self.root is not None else None}


@dataclass
class ChainVerifier:
    """Streaming verifier: ``feed`` every record in storage order, then ``finish``.

    Signed heads are checked against the Merkle root when the stream reaches their size;
    heads whose signature fails are reported as ``bad_signature``. After the first failure
    the rest of the stream is only scanned to refine a ``deleted`` into ``reordered`` (the
    missing seq turns up later), so the first bad seq is always the one reported.
    """

    heads: Sequence[SignedHead] = ()
    public_key: bytes | None = None
    count: int = 0
    _prev_hash: bytes = GENESIS_HASH
    _prev_ts: str = ""
    _tree: CompactRange = field(default_factory=CompactRange)
    _fail: tuple[int, FailReason, str] | None = None
    _heads: list[SignedHead] = field(default_factory=list)
    _head_checked: int | None = None

    def __post_init__(self) -> None:
        self._heads = sorted(self.heads, key=lambda h: h.size)
        if self.public_key is not None:
            for h in self._heads:
                if not verify_head(h, self.public_key):
                    self._fail = (h.size, "bad_signature",
                                  f"tree head of size {h.size} is not signed by the kernel key")
                    self._heads = []
                    break
        self._hi = 0  # index of the next head to check
        self._next_head = -1  # size of the next head to check (-1: none)
        self._check_heads()  # heads over the empty log

    @property
    def failed(self) -> bool:
        return self._fail is not None

    def _set(self, seq: int, reason: FailReason, detail: str) -> None:
        if self._fail is None:
            self._fail = (seq, reason, detail)

    def feed(self, rec: StoredRecord) -> None:
        expected = self.count + 1  # seqs count from 1
        if self._fail is not None:
            # only refine: a "deleted" seq that turns up later was moved, not deleted
            seq, reason, detail = self._fail
            if reason == "deleted" and rec.pos == seq:
                self._fail = (seq, "reordered", f"seq {seq} found later in the log")
            elif reason == "deleted":
                try:
                    if orjson.loads(rec.body).get("seq") == seq:
                        self._fail = (seq, "reordered", f"seq {seq} found later in the log")
                except (orjson.JSONDecodeError, AttributeError):
                    pass
            return
        if rec.pos != expected:
            if rec.pos > expected:
                self._set(expected, "deleted", f"expected seq {expected}, next is {rec.pos}")
            else:
                self._set(expected, "reordered",
                          f"seq {rec.pos} appears again after seq {expected - 1}")
            return
        try:
            d = orjson.loads(rec.body)
            seq, ts, kind, agent = d["seq"], d["ts"], d["kind"], d["agent"]
            if type(seq) is not int or type(ts) is not str or type(kind) is not str:
                raise TypeError("field types")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            # an edited body that no longer parses: the hash check names it "edited"
            if entry_hash(rec.prev_hash, rec.body) != rec.hash:
                self._set(expected, "edited", "entry body does not match its hash")
            else:
                self._set(expected, "malformed", "entry body is not a valid entry")
            return
        if seq != expected:
            if entry_hash(rec.prev_hash, rec.body) != rec.hash:
                self._set(expected, "edited", "entry body does not match its hash")
            else:
                self._set(expected, "reordered",
                          f"seq {expected} holds the entry of seq {seq}")
            return
        if rec.prev_hash != self._prev_hash:
            self._set(expected, "chain_broken",
                      "prev_hash is not the hash of the previous entry")
            return
        if entry_hash(rec.prev_hash, rec.body) != rec.hash:
            self._set(expected, "edited", "entry body does not match its hash")
            return
        if rec.has_columns and (rec.kind != kind or rec.agent != agent):
            self._set(expected, "malformed", "stored agent/kind columns disagree with the entry")
            return
        if ts < self._prev_ts:
            self._set(expected, "out_of_order",
                      f"timestamp {ts} is earlier than the previous entry's {self._prev_ts}")
            return
        self._prev_ts = ts
        self._prev_hash = rec.hash
        self._tree.append(leaf_hash(rec.hash))
        self.count += 1
        self._check_heads()

    def _check_heads(self) -> None:
        while self._hi < len(self._heads) and self._heads[self._hi].size <= self.count:
            h = self._heads[self._hi]
            if h.size == self.count:
                if self._tree.root() != h.root:
                    lo = (self._head_checked or 0) + 1
                    self._set(lo, "root_mismatch",
                              f"entries {lo}..{h.size} chain but their Merkle root differs "
                              f"from the signed head of size {h.size}: the log was rewritten "
                              f"from seq {lo} on or later")
                    return
                self._head_checked = h.size
            self._hi += 1
        self._next_head = self._heads[self._hi].size if self._hi < len(self._heads) else -1

    def feed_rows(self, rows: Iterable[tuple[int, bytes, bytes, bytes, str | None, str]]
                  ) -> None:
        """``feed`` for stored rows ``(pos, body, prev_hash, hash, agent, kind)``, fast.

        Rows that pass every check are handled inline; anything else goes through ``feed``,
        which names the failure.
        """
        sha = hashlib.sha256
        loads = orjson.loads
        tree_append = self._tree.append
        for row in rows:
            if self._fail is None:
                pos, body, prev, h, agent, kind = row
                expected = self.count + 1
                if pos == expected and prev == self._prev_hash and sha(prev + body).digest() == h:
                    try:
                        d = loads(body)
                        ts = d["ts"]
                        good = (d["seq"] == expected and type(ts) is str and ts >= self._prev_ts
                                and d["kind"] == kind and d["agent"] == agent)
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        good = False
                    if good:
                        self._prev_ts = ts
                        self._prev_hash = h
                        tree_append(sha(b"\x00" + h).digest())
                        self.count = expected
                        if expected == self._next_head:
                            self._check_heads()
                        continue
            self.feed(StoredRecord(*row, True))

    def finish(self) -> VerifyReport:
        if self._fail is None:
            last = self._heads[-1] if self._heads else None
            if last is not None and last.size > self.count:
                self._set(self.count + 1, "truncated",
                          f"the log ends at {self.count} entries but a signed head covers "
                          f"{last.size}")
        if self._fail is not None:
            seq, reason, detail = self._fail
            return VerifyReport(False, self.count, seq, reason, detail, self._head_checked)
        return VerifyReport(True, self.count, None, None, "", self._head_checked,
                            self._tree.root())


def verify_records(
    records: Iterable[StoredRecord],
    heads: Sequence[SignedHead] = (),
    public_key: bytes | None = None,
) -> VerifyReport:
    """Verify a whole stream of records (see ``ChainVerifier``)."""
    v = ChainVerifier(heads, public_key)
    for r in records:
        v.feed(r)
    return v.finish()
