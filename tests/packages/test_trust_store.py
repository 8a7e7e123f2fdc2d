"""The trust policy and the highest version seen live in agentix.db (migration v3), behind
the store's one writer; files an older agentix left under registry/ are imported once."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentix.core.errors import InvalidRequest
from agentix.core.package import TrustPolicy, format_public_key
from agentix.packages.service import PackageStore
from agentix.packages.trust import TrustState
from agentix.store.db import Database

PUB = format_public_key(bytes(range(32)))


def _rows(db: Path, table: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT * FROM {table}").fetchall()


def test_policy_and_versions_are_rows_in_agentix_db_not_files(tmp_path: Path) -> None:
    home = tmp_path / "h"
    store = PackageStore(home)
    store.trust_add(PUB, "team/*")
    store.trust_allow_unsigned("scratch/*")
    assert store.trust.remember("team/x", "1.2.0")
    assert not (home / "registry" / "trust.json").exists()
    assert not (home / "registry" / "versions.json").exists()
    assert [r[2] for r in _rows(home / "agentix.db", "trust_keys")] == ["team/*"]
    assert _rows(home / "agentix.db", "trust_unsigned") == [("scratch/*", 0)]
    assert _rows(home / "agentix.db", "versions_seen") == [("team/x", "1.2.0")]
    # a second store over the same home (a restarted kernel) sees the same state
    again = PackageStore(home)
    assert again.trust.policy() == store.trust.policy()
    assert again.trust.highest("team/x") == "1.2.0"


def test_trusting_the_same_key_twice_keeps_one_rule_with_both_patterns(tmp_path: Path) -> None:
    store = PackageStore(tmp_path / "h")
    store.trust_add(PUB, "team/*")
    store.trust_add(PUB, "other/x")
    store.trust_add(PUB, "team/*")
    rules = store.trust.policy().rules
    assert len(rules) == 1 and rules[0].patterns == ("team/*", "other/x")


def test_the_high_water_mark_never_goes_down(tmp_path: Path) -> None:
    t = TrustState(tmp_path / "agentix.db")
    assert t.remember("team/x", "2.0.0")
    assert not t.remember("team/x", "1.9.9")
    assert not t.remember("team/x", "2.0.0")
    assert t.highest("team/x") == "2.0.0"


def test_concurrent_remembers_keep_the_highest(tmp_path: Path) -> None:
    db = Database(tmp_path / "agentix.db")
    t = TrustState(db)
    versions = [f"1.{i}.0" for i in range(40)]
    with ThreadPoolExecutor(8) as ex:
        raised = list(ex.map(lambda v: t.remember("team/x", v), reversed(versions)))
    assert raised[0] is True
    assert t.highest("team/x") == "1.39.0"
    db.close()


def test_old_trust_files_are_imported_once_then_removed(tmp_path: Path) -> None:
    home = tmp_path / "h"
    reg = home / "registry"
    reg.mkdir(parents=True)
    policy = TrustPolicy().with_key(bytes(range(32)), "team/*").with_unsigned("scratch/*")
    (reg / "trust.json").write_text(json.dumps(policy.to_data()))
    (reg / "versions.json").write_text(json.dumps({"team/x": "3.1.0"}))
    store = PackageStore(home)
    assert store.trust.policy() == policy
    assert store.trust.highest("team/x") == "3.1.0"
    assert not (reg / "trust.json").exists() and not (reg / "versions.json").exists()


def test_malformed_old_trust_files_are_a_clear_error_and_stay(tmp_path: Path) -> None:
    home = tmp_path / "h"
    reg = home / "registry"
    reg.mkdir(parents=True)
    (reg / "trust.json").write_text('{"rules": [{"public_key": "nope", "patterns": ["x"]}]}')
    store = PackageStore(home)
    with pytest.raises(InvalidRequest, match="malformed"):
        store.trust.policy()
    assert (reg / "trust.json").exists()  # nothing imported, nothing lost
