"""A snapshot's invocation counts are handed out once, not once per restore (issue #15): the
attack is to snapshot an agent whose limited token has N invocations left and restore it
again and again, each restore minting N afresh. The kernel records, per snapshot digest and
grant group, what restores were given (store/snapshot_given.py); a restore mints only what is
left, a group with nothing left is dropped (``dropped_exhausted``), and minting the counts
again takes the operator's explicit ``reissue_invocations``, which the audit records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.snapshot_rules import GrantGroup, limited, narrow_indexed, ration
from agentix.sdk.errors import AgentixError
from agentix.store import snapshot_given
from agentix.store.db import Database

from .test_snapshots import _events, _ready_agent_with

ECHO = ["tool: echo"]


def _echo_token(kernel: Any, aid: str) -> dict[str, Any] | None:
    toks = [t for t in kernel.client.call("cap.list", agent_id=aid)["tokens"] if t["grants"] == ECHO]
    return toks[0] if toks else None


def _echo(kernel: Any, aid: str) -> str:
    try:
        kernel.client.call("tool.invoke", agent_id=aid, name="echo", args={"message": "x"})
        return "ok"
    except AgentixError as err:
        return err.code


def test_restoring_one_snapshot_twice_never_doubles_its_invocations(kernel: Any) -> None:
    aid, _ = _ready_agent_with(kernel, [{"grant": "tool: echo", "max_invocations": 3}, "file_read: /workspace/*"])
    assert _echo(kernel, aid) == "ok"
    snap = kernel.client.call("snapshot.create", agent=aid)   # recorded: 2 invocations left

    first = kernel.client.call("snapshot.restore", ref=snap["ref"])
    assert _echo_token(kernel, first["agent_id"])["max_invocations"] == 2
    assert first["dropped_exhausted"] == []

    second = kernel.client.call("snapshot.restore", ref=snap["ref"])
    assert _echo_token(kernel, second["agent_id"]) is None           # nothing left to give
    assert [g["grants"] for g in second["dropped_exhausted"]] == [ECHO]
    assert [g["grants"] for g in second["grants"]] == [["file_read: /workspace/*"]]  # the unlimited rest
    assert _echo(kernel, second["agent_id"]) in ("capability_denied", "capability_exhausted")
    # across both restores: exactly the 2 the snapshot recorded
    assert [_echo(kernel, first["agent_id"]) for _ in range(3)] == ["ok", "ok", "capability_exhausted"]

    # the operator may mint them again, explicitly; the audit says so
    third = kernel.client.call("snapshot.restore", ref=snap["ref"], reissue_invocations=True)
    assert _echo_token(kernel, third["agent_id"])["max_invocations"] == 2
    evs = [e["data"] for e in _events(kernel, "snapshot.restore") if e["data"].get("ok")]
    assert [e.get("reissued_invocations") for e in evs] == [False, False, True]
    assert [len(e.get("dropped_exhausted", [])) for e in evs] == [0, 1, 0]


def test_a_refused_restore_gives_back_what_it_took(kernel: Any) -> None:
    aid, _ = _ready_agent_with(kernel, [{"grant": "tool: echo", "max_invocations": 2}])
    snap = kernel.client.call("snapshot.create", agent=aid)
    with pytest.raises(AgentixError) as ei:   # a name that is live: refused after the count was taken
        kernel.client.call("snapshot.restore", ref=snap["ref"], name="limited")
    assert ei.value.code == "invalid_request"
    r = kernel.client.call("snapshot.restore", ref=snap["ref"])
    assert _echo_token(kernel, r["agent_id"])["max_invocations"] == 2


def test_a_fork_shares_the_count_of_an_identical_snapshot(kernel: Any) -> None:
    """A fork is a snapshot and a restore: forking an unchanged agent again is the same
    snapshot (same digest), so it does not mint its count a second time either."""
    aid, _ = _ready_agent_with(kernel, [{"grant": "tool: echo", "max_invocations": 2}, "file_read: /workspace/*"])
    one = kernel.client.call("snapshot.fork", agent=aid)
    two = kernel.client.call("snapshot.fork", agent=aid)
    assert one["digest"] == two["digest"]
    assert _echo_token(kernel, one["agent_id"])["max_invocations"] == 2
    assert _echo_token(kernel, two["agent_id"]) is None and len(two["dropped_exhausted"]) == 1


# ---------------------------------------------------------------- the rule, against the real store
GROUPS = [GrantGroup(("tool: echo",), 5), GrantGroup(("tool: web_fetch",), 3), GrantGroup(("file_read: /workspace/*",))]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([None, ["tool: echo"], ["tool: web_fetch"]])), max_size=8))
def test_restores_never_mint_more_than_the_snapshot_recorded(tmp_path_factory: pytest.TempPathFactory,
                                                             restores: list[tuple[bool, list[str] | None]]) -> None:
    """Any sequence of restores (each narrowed or not, each failing or not after it took its
    share): the invocations minted by the restores that started never exceed what the
    snapshot recorded, per group; an unlimited group is always minted."""
    root = tmp_path_factory.mktemp("given")

    async def run() -> None:
        with Database(root / "agentix.db", checkpoint_every=0) as db:
            minted = {0: 0, 1: 0}
            for fails, accepted in restores:
                indexed = narrow_indexed(GROUPS, accepted)
                taken = await snapshot_given.take(db, "sha256:" + "a" * 64, limited(indexed, 0.0))
                groups, exhausted = ration(indexed, taken)
                if fails:
                    await snapshot_given.give_back(db, "sha256:" + "a" * 64, taken)
                    continue
                for g in groups:
                    for i, rec in enumerate(GROUPS[:2]):
                        if g.grants == rec.grants:
                            minted[i] += g.max_invocations or 0
                assert all(g.max_invocations is not None and g.max_invocations >= 1 for g in groups
                           if g.grants != GROUPS[2].grants)   # never a token with a count of 0
                if accepted is None:
                    assert GROUPS[2] in groups
                assert len(groups) + len(exhausted) == len(indexed)
            assert minted[0] <= 5 and minted[1] <= 3

    asyncio.run(run())


def test_what_was_given_survives_a_reopen_of_the_store(tmp_path: Path) -> None:
    d = "sha256:" + "b" * 64

    async def take(n: int) -> dict[int, int]:
        with Database(tmp_path / "agentix.db", checkpoint_every=0) as db:
            return await snapshot_given.take(db, d, {0: n})

    assert asyncio.run(take(4)) == {0: 4}
    assert asyncio.run(take(4)) == {0: 0}   # a kernel restart does not reset it
