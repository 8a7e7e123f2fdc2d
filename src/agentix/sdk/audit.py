"""Offline access to an agentix audit log, for operators and auditors (no kernel needed).

``check_proof`` checks an inclusion proof with only the kernel's public key;
``verify_file`` verifies a database file's whole chain read-only (safe while a kernel
runs); ``export_file`` writes its entries as JSONL. The rules themselves live in
``agentix.core.audit`` (docs/audit.md); this module only reads the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from agentix.core.audit import (
    ChainVerifier,
    Entry,
    SignedHead,
    VerifyReport,
    verify_proof,
)
from agentix.core.canonical import canonical_json
from agentix.core.errors import NotFound

__all__ = ["SignedHead", "check_proof", "export_file", "verify_file"]


def check_proof(proof: dict[str, Any], public_key: bytes) -> Entry:
    """The proven entry, or ``InvalidRequest`` saying what does not hold."""
    return verify_proof(proof, public_key)


def _open(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise NotFound("no agentix database here", path=str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.execute("BEGIN")  # one consistent snapshot
    return conn


def _rows(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    cur = conn.execute(
        "SELECT seq, body, prev_hash, hash, agent, kind FROM audit_entries ORDER BY seq")
    while rows := cur.fetchmany(8192):
        yield from rows


def verify_file(path: Path, public_key: bytes | None,
                trusted_heads: Sequence[SignedHead] = ()) -> VerifyReport:
    """Verify every entry and every stored (plus given) signed head of a database file."""
    conn = _open(path)
    try:
        heads = [SignedHead(*r) for r in conn.execute(
            "SELECT size, root, timestamp, key_id, signature FROM signed_heads ORDER BY size")]
        v = ChainVerifier([*heads, *trusted_heads], public_key)
        v.feed_rows(_rows(conn))
        return v.finish()
    finally:
        conn.close()


def export_file(path: Path, fileobj: IO[bytes]) -> int:
    """Write every entry of a database file as canonical JSONL; return how many."""
    conn = _open(path)
    try:
        n = 0
        for _seq, body, prev, h, _agent, _kind in _rows(conn):
            fileobj.write(canonical_json(Entry.from_body(body, prev, h).to_json()) + b"\n")
            n += 1
        return n
    finally:
        conn.close()
