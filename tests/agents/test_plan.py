"""Plans: unknown or cyclic dependencies are errors; waves allow concurrency (scenario 50, pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentix.core.errors import InvalidRequest
from agentix.core.plan import find_cycle, parse_plan, waves


def plan(*specs):
    return {"subtasks": [{"id": i, "goal": f"do {i}", "depends_on": list(d)} for i, d in specs]}


def test_waves_group_independent_subtasks():
    p = parse_plan(plan(("a", ""), ("b", ""), ("c", "ab"), ("d", "a"), ("e", "cd")))
    assert waves(p) == [["a", "b"], ["c", "d"], ["e"]]


def test_unknown_dependency_is_named():
    with pytest.raises(InvalidRequest) as ei:
        parse_plan(plan(("a", ""), ("b", ["a", "zz"])))
    assert ei.value.data["unknown"] == ["zz"] and "zz" in ei.value.message


def test_cycle_is_named():
    with pytest.raises(InvalidRequest) as ei:
        parse_plan(plan(("a", "c"), ("b", "a"), ("c", "b"), ("d", "")))
    cyc = ei.value.data["cycle"]
    assert cyc[0] == cyc[-1] and set(cyc) == {"a", "b", "c"}
    with pytest.raises(InvalidRequest):
        parse_plan(plan(("a", "a")))


@pytest.mark.parametrize("bad", [
    {}, {"subtasks": []}, {"subtasks": [{"id": "A", "goal": "x"}]}, {"subtasks": [{"id": "a"}]},
    {"subtasks": [{"id": "a", "goal": "x"}, {"id": "a", "goal": "y"}]},
    {"subtasks": [{"id": "a", "goal": "x", "depends_on": "b"}]},
    {"subtasks": [{"id": f"s{i}", "goal": "x"} for i in range(33)]},
])
def test_malformed_plans(bad):
    with pytest.raises(InvalidRequest):
        parse_plan(bad)


@given(st.integers(1, 12).flatmap(lambda n: st.lists(
    st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n)))
def test_waves_respect_dependencies_or_cycle_reported(edges):
    deps = {f"t{i}": tuple(dict.fromkeys(f"t{j}" for j in e)) for i, e in enumerate(edges)}
    data = {"subtasks": [{"id": k, "goal": "g", "depends_on": list(v)} for k, v in deps.items()]}
    cycle = find_cycle(deps)
    if cycle:
        with pytest.raises(InvalidRequest):
            parse_plan(data)
        for a, b in zip(cycle, cycle[1:]):
            assert b in deps[a]
        return
    layers = waves(parse_plan(data))
    pos = {sid: i for i, layer in enumerate(layers) for sid in layer}
    assert sorted(pos) == sorted(deps)
    for k, v in deps.items():
        assert all(pos[d] < pos[k] for d in v)
