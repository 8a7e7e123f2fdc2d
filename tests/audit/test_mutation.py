"""Tampering anywhere in a log of thousands of entries is found, at the right seq."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import sqlite3

import orjson
import pytest

from agentix.core.audit import entry_hash, public_key_bytes
from agentix.store.audit_store import AuditLog, verify_jsonl
from agentix.store.db import Database

from .conftest import N_ENTRIES, FakeClock

SEQS = [1, 2, 3, 512, 513, 1024, 1501, 2048, 2049, N_ENTRIES - 1]  # seqs count from 1
rng = random.Random(6962)
SEQS += rng.sample(range(1, N_ENTRIES), 10)


def raw(path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def verify(path, key, **kw):
    db = Database(path)
    try:
        return AuditLog(db).verify(public_key=public_key_bytes(key), **kw)
    finally:
        db.close()


def test_untouched_log_verifies(log_copy, signing_key):
    rep = verify(log_copy, signing_key)
    assert rep.ok and rep.entries == N_ENTRIES and rep.head_size == N_ENTRIES


def _flip(b: bytes, at: int) -> bytes:
    arr = bytearray(b)
    arr[at % len(arr)] ^= 0x01
    return bytes(arr)


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("column", ["body", "hash", "prev_hash"])
def test_flipped_byte_is_named(log_copy, signing_key, seq, column):
    c = raw(log_copy)
    (val,) = c.execute(f"SELECT {column} FROM audit_entries WHERE seq=?", (seq,)).fetchone()
    c.execute(f"UPDATE audit_entries SET {column}=? WHERE seq=?",
              (_flip(val, rng.randrange(len(val))), seq))
    c.close()
    rep = verify(log_copy, signing_key)
    assert not rep.ok
    assert rep.first_bad_seq == seq
    assert rep.reason == ("chain_broken" if column == "prev_hash" else "edited")


@pytest.mark.parametrize("seq", SEQS)
def test_deleted_entry_is_named(log_copy, signing_key, seq):
    c = raw(log_copy)
    c.execute("DELETE FROM audit_entries WHERE seq=?", (seq,))
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.ok, rep.first_bad_seq, rep.reason) == (False, seq, "deleted")


@pytest.mark.parametrize("seq", SEQS)
def test_swapped_entries_are_named(log_copy, signing_key, seq):
    other = seq + 1 + rng.randrange(N_ENTRIES - seq)
    c = raw(log_copy)
    cols = "ts, agent, kind, body, prev_hash, hash"
    a = c.execute(f"SELECT {cols} FROM audit_entries WHERE seq=?", (seq,)).fetchone()
    b = c.execute(f"SELECT {cols} FROM audit_entries WHERE seq=?", (other,)).fetchone()
    upd = ("UPDATE audit_entries SET ts=?, agent=?, kind=?, body=?, prev_hash=?, hash=? "
           "WHERE seq=?")
    c.execute(upd, (*b, seq))
    c.execute(upd, (*a, other))
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.ok, rep.first_bad_seq, rep.reason) == (False, seq, "reordered")


@pytest.mark.parametrize("keep", [0, 1, 1000, 2048, N_ENTRIES - 1])
def test_truncated_tail_is_found_against_the_signed_head(log_copy, signing_key, keep):
    c = raw(log_copy)
    c.execute("DELETE FROM audit_entries WHERE seq>?", (keep,))
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.ok, rep.first_bad_seq, rep.reason) == (False, keep + 1, "truncated")


def _rewrite_from(c: sqlite3.Connection, seq: int, change) -> None:
    """Edit entry ``seq`` and re-hash every later entry: a chain that links perfectly."""
    rows = c.execute("SELECT seq, body, prev_hash FROM audit_entries WHERE seq>=? ORDER BY seq",
                     (seq,)).fetchall()
    prev = rows[0][2]
    for s, body, _ in rows:
        if s == seq:
            d = orjson.loads(body)
            change(d)
            body = orjson.dumps(d, option=orjson.OPT_SORT_KEYS)
        h = entry_hash(prev, body)
        c.execute("UPDATE audit_entries SET body=?, prev_hash=?, hash=? WHERE seq=?",
                  (body, prev, h, s))
        prev = h


@pytest.mark.parametrize("seq", [1, 700, N_ENTRIES])
def test_consistently_rewritten_chain_fails_the_signed_root(log_copy, signing_key, seq):
    c = raw(log_copy)
    _rewrite_from(c, seq, lambda d: d["data"].update(j=-1))
    c.close()
    rep = verify(log_copy, signing_key)
    assert not rep.ok and rep.reason == "root_mismatch"
    assert rep.first_bad_seq is not None and rep.first_bad_seq <= seq


def test_periodic_heads_narrow_a_rewrite_down(tmp_path, signing_key):
    db = Database(tmp_path / "a.db")
    log = AuditLog(db, signing_key=signing_key, clock=FakeClock())

    async def go() -> None:
        for i in range(40):
            await log.append("tool.invoked", "a", {"i": i})
            if i % 10 == 9:
                await log.head()

    asyncio.run(go())
    db.close()
    c = raw(tmp_path / "a.db")
    _rewrite_from(c, 26, lambda d: d["data"].update(i=99))
    c.close()
    rep = verify(tmp_path / "a.db", signing_key)
    # heads at 10, 20, 30, 40: entries 1..20 are proven good, so the rewrite starts at 21+
    assert (rep.first_bad_seq, rep.reason) == (21, "root_mismatch")


@pytest.mark.parametrize("seq", [2, 1500, N_ENTRIES])
def test_backdated_entry_is_out_of_order(log_copy, signing_key, seq):
    c = raw(log_copy)
    _rewrite_from(c, seq, lambda d: d.update(ts="2000-01-01T00:00:00.000000Z"))
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.first_bad_seq, rep.reason) == (seq, "out_of_order")


def test_entry_appended_out_of_order_is_named(log_copy, signing_key):
    c = raw(log_copy)
    last = c.execute("SELECT ts, agent, kind, body, prev_hash, hash FROM audit_entries "
                     "WHERE seq=?", (N_ENTRIES - 5,)).fetchone()
    c.execute("INSERT INTO audit_entries (seq, ts, agent, kind, body, prev_hash, hash) "
              "VALUES (?,?,?,?,?,?,?)", (N_ENTRIES + 1, *last))
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.first_bad_seq, rep.reason) == (N_ENTRIES + 1, "reordered")


def test_index_columns_cannot_lie(log_copy, signing_key):
    c = raw(log_copy)
    c.execute("UPDATE audit_entries SET agent='someone-else' WHERE seq=77")
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.first_bad_seq, rep.reason) == (77, "malformed")


def test_forged_head_is_a_bad_signature(log_copy, signing_key):
    c = raw(log_copy)
    c.execute("UPDATE signed_heads SET root=?", (hashlib.sha256(b"forged").digest(),))
    c.close()
    rep = verify(log_copy, signing_key)
    assert (rep.ok, rep.reason) == (False, "bad_signature")


# ---------------------------------------------------------------- the JSONL export


def _export(path, key):
    db = Database(path)
    log = AuditLog(db, signing_key=key)
    buf = io.BytesIO()
    n = log.export_jsonl(buf)
    heads = log.heads()
    db.close()
    return buf.getvalue().splitlines(), heads, n


def test_export_verifies_and_mutations_of_it_are_named(log_copy, signing_key):
    lines, heads, n = _export(log_copy, signing_key)
    pk = public_key_bytes(signing_key)
    assert n == N_ENTRIES
    assert verify_jsonl(lines, heads, pk).ok
    for seq in SEQS[:8]:
        at = seq - 1  # line index
        deleted = lines[:at] + lines[at + 1:]
        rep = verify_jsonl(deleted, heads, pk)
        assert (rep.first_bad_seq, rep.reason) == (seq, "deleted")
        other = at + 3
        swapped = list(lines)
        swapped[at], swapped[other] = swapped[other], swapped[at]
        rep = verify_jsonl(swapped, heads, pk)
        assert (rep.first_bad_seq, rep.reason) == (seq, "reordered")
        d = orjson.loads(lines[at])
        d["data"]["j"] = 123456
        edited = list(lines)
        edited[at] = orjson.dumps(d)
        rep = verify_jsonl(edited, heads, pk)
        assert (rep.first_bad_seq, rep.reason) == (seq, "edited")
    rep = verify_jsonl(lines[:1234], heads, pk)
    assert (rep.first_bad_seq, rep.reason) == (1235, "truncated")


def test_consistency_proofs_link_heads_and_expose_a_rewrite(tmp_path, signing_key):
    from agentix.core.audit import SignedHead
    from agentix.core.errors import InvalidRequest
    from agentix.store.audit_store import verify_consistency

    db = Database(tmp_path / "a.db")
    log = AuditLog(db, signing_key=signing_key, clock=FakeClock())
    pk = public_key_bytes(signing_key)

    async def go(n):
        for i in range(n):
            await log.append("tool.invoked", "a", {"i": i})
        return SignedHead.from_json(await log.head())

    old = asyncio.run(go(37))
    new = asyncio.run(go(100))
    verify_consistency(log.consistency(37), old, new, pk)  # extends: no exception
    db.close()
    c = raw(tmp_path / "a.db")
    _rewrite_from(c, 5, lambda d: d["data"].update(i=-5))
    # a competent attacker also rebuilds every Merkle node from the rewritten entries
    from agentix.core.merkle import CompactRange, leaf_hash

    c.execute("DELETE FROM merkle_nodes")
    cr = CompactRange()
    for (h,) in c.execute("SELECT hash FROM audit_entries ORDER BY seq").fetchall():
        c.executemany("INSERT INTO merkle_nodes VALUES (?,?,?)", cr.append(leaf_hash(h)))
    c.close()
    db = Database(tmp_path / "a.db")
    log = AuditLog(db, signing_key=signing_key, clock=FakeClock())
    forged_new = SignedHead.from_json(asyncio.run(log.head()))  # a head over the rewrite
    with pytest.raises(InvalidRequest):
        verify_consistency(log.consistency(37), old, forged_new, pk)
    db.close()
