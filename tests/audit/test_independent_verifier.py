"""An independent verifier written from docs/audit.md alone (stdlib json + hashlib +
cryptography, no agentix code) accepts what agentix writes and rejects tampering."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentix.core.audit import public_key_bytes
from agentix.store.audit_store import AuditLog
from agentix.store.db import Database

from .conftest import FakeClock


def canon(v) -> bytes:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def body_of(e: dict) -> bytes:
    return canon({k: e[k] for k in ("agent", "data", "kind", "seq", "taint", "ts", "v")})


def check_head(head: dict, pub: bytes) -> bool:
    msg = b"agentix-tree-head-v1\n" + canon(
        {"root": head["root"], "size": head["size"], "timestamp": head["timestamp"]})
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(bytes.fromhex(head["signature"]), msg)
    except InvalidSignature:
        return False
    return head["key_id"] == sha(pub).hex()


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def check_export(lines: list[bytes], head: dict, pub: bytes) -> int | None:
    """None if fine, else the first bad seq."""
    prev = b"\x00" * 32
    hashes = []
    for i, line in enumerate(lines, start=1):
        e = json.loads(line)
        if e["seq"] != i or bytes.fromhex(e["prev_hash"]) != prev:
            return i
        h = sha(prev + body_of(e))
        if h.hex() != e["hash"]:
            return i
        hashes.append(h)
        prev = h
    if len(hashes) < head["size"]:
        return len(hashes) + 1
    if not check_head(head, pub) or mth(hashes[: head["size"]]).hex() != head["root"]:
        return 1
    return None


def check_proof(p: dict, pub: bytes) -> bool:
    head, e = p["head"], p["entry"]
    if not check_head(head, pub) or head["size"] != p["tree_size"]:
        return False
    if e["seq"] != p["leaf_index"] + 1:
        return False
    h = sha(bytes.fromhex(e["prev_hash"]) + body_of(e))
    if h.hex() != e["hash"]:
        return False
    fn, sn, r = p["leaf_index"], p["tree_size"] - 1, sha(b"\x00" + h)
    for x in map(bytes.fromhex, p["path"]):
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + x + r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = sha(b"\x01" + r + x)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r.hex() == head["root"]


def test_independent_verifier_agrees(tmp_path, signing_key):
    db = Database(tmp_path / "a.db")
    log = AuditLog(db, signing_key=signing_key, clock=FakeClock())
    pub = public_key_bytes(signing_key)

    async def go():
        for i in range(77):
            await log.append("tool.invoked", f"a{i % 3}" if i % 5 else None,
                             {"i": i, "f": i / 3, "s": "é\n\x01\u2028", "n": [None, True]},
                             taint=["web", "mail"] if i % 4 == 0 else ())
        return await log.head()

    head = asyncio.run(go())
    buf = io.BytesIO()
    log.export_jsonl(buf)
    lines = buf.getvalue().splitlines()
    assert check_export(lines, head, pub) is None
    for seq in (1, 2, 3, 31, 64, 77):
        assert check_proof(log.prove(seq), pub)
    bad = json.loads(lines[40])
    bad["data"]["i"] = -1
    lines[40] = json.dumps(bad).encode()
    assert check_export(lines, head, pub) == 41
    p = log.prove(5)
    p["entry"]["kind"] = "tool.result"
    assert not check_proof(p, pub)
    db.close()
