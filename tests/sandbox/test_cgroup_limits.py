"""Limits written to a cgroup that already has some: raising and lowering both work (v1
refuses a memory limit above the memory+swap limit, so the order of the two writes matters —
a warm worker started at the pool's shape is given a larger agent's limits)."""

from __future__ import annotations

import secrets

import pytest

from agentix.sandbox import cgroups

MIB = 1 << 20


@pytest.fixture
def group():
    try:
        h = cgroups.detect(f"agentix-test-{secrets.token_hex(4)}")  # a subtree of this test's own
    except cgroups.CgroupError as err:
        pytest.skip(f"no cgroups here: {err}")
    cg = cgroups.CgroupSet.create(h, "limits", cgroups.CgroupSpec(memory=256 * MIB, pids=64, cpu=1.0))
    yield cg
    cg.remove()
    cgroups.remove_subtree(h)


@pytest.mark.parametrize("sizes", [(256, 2048, 128, 4096, 64), (256, 256, 1024, 512)])
def test_memory_limit_raised_and_lowered_in_any_order(group, sizes) -> None:
    for mib in sizes:
        group.set_limits(cgroups.CgroupSpec(memory=mib * MIB))
        d = group.dirs.get("memory") or group.dirs.get("unified")
        f = "memory.limit_in_bytes" if "memory" in group.dirs else "memory.max"
        assert int((d / f).read_text()) == mib * MIB
        if (d / "memory.memsw.limit_in_bytes").exists():
            assert int((d / "memory.memsw.limit_in_bytes").read_text()) == mib * MIB
