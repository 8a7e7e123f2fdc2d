"""Hypothesis over manifests: random types and magnitudes for every field (limits and env
included). Each manifest is either accepted (and, through a real kernel, spawns and runs) or
refused with ``invalid_request`` naming the field — never another exception, never an
internal error, never a record left in ``spawning``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import AgentixError, InvalidRequest
from agentix.core.manifest import Manifest, parse_manifest

# values of every type and magnitude
JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["256M", "1G", "0", "0M", "1e30", "99999999999999999999T", "-1", "10m", "0s",
                     "1.5", "nan", "inf", "1h", "3 days", "", " 16M "]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
SIZE = st.one_of(JUNK, st.integers(min_value=0, max_value=2**64), st.sampled_from(["16M", "64M", "512M", "2M"]))
ENV_NAMES = st.one_of(
    st.sampled_from(["LOG_LEVEL", "GREETING", "LD_PRELOAD", "PYTHONPATH", "PATH", "HOME", "IFS", "ENV",
                     "BASH_ENV", "GCONV_PATH", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "AGENTIX_FD",
                     "lower", "A-B", "", "X" * 200]),
    st.text(max_size=10))
ENV_VALUES = st.one_of(st.text(max_size=20), st.sampled_from(["x" * 5000, "a\x00b", ""]), JUNK)

LIMITS = st.fixed_dictionaries({}, optional={
    "memory": SIZE, "disk": SIZE, "cpu": st.one_of(JUNK, st.floats(0, 2000)),
    "pids": st.one_of(JUNK, st.integers(0, 5_000_000)),
    "nofile": st.one_of(JUNK, st.integers(0, 2_000_000)),
    "wall_clock": st.one_of(JUNK, st.floats(0, 1e9)), "bogus": JUNK})
BUDGET = st.fixed_dictionaries({}, optional={
    k: JUNK for k in ("max_input_tokens", "max_output_tokens", "max_cost_usd", "max_wall_clock",
                      "max_children", "max_tool_calls", "warn_at", "reset_period")})
CAPS = st.one_of(JUNK, st.lists(st.one_of(
    st.sampled_from(["tool: echo", "file_read: {workspace}/*", "network: example.com", "bogus",
                     "exec: [true]", "spawn_child: [a]"]),
    st.fixed_dictionaries({"grant": st.sampled_from(["tool: echo", "junk"])},
                          optional={"max_invocations": JUNK, "expires": JUNK}),
    st.text(max_size=8)), max_size=3))


def manifests(program: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["fuzz", "f-1", "a.b"]), JUNK),
         "program": st.one_of(st.just(program), st.just(program), JUNK)},
        optional={
            "limits": st.one_of(LIMITS, JUNK),
            "budget": st.one_of(BUDGET, JUNK),
            "env": st.one_of(st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=4), JUNK),
            "args": st.one_of(st.lists(st.one_of(st.text(max_size=8), st.just("a\x00")), max_size=3), JUNK),
            "capabilities": CAPS,
            "priority": JUNK, "isolation": st.one_of(st.sampled_from(["strict", "degraded"]), JUNK),
            "lifecycle": st.one_of(st.just("on_demand"), JUNK),
            "memory": st.one_of(st.fixed_dictionaries({}, optional={
                "enabled": JUNK, "max_records": JUNK, "max_record_bytes": JUNK}), JUNK),
            "max_iterations": JUNK, "approval_required": JUNK, "description": JUNK,
            "model": JUNK, "system_prompt": JUNK, "colour": JUNK,
        })


def plausible(program: str) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly valid manifests with values at and around the edges of every range."""
    limits = st.fixed_dictionaries({}, optional={
        "memory": st.sampled_from(["16M", "24M", "64M", "256M", 16 * 2**20 - 1, "1P", 2**50 + 1]),
        "disk": st.sampled_from(["1M", "8M", 2**20 - 1, "100M"]),
        "cpu": st.sampled_from([0.01, 0.005, 0.5, 2, 1024, 1025]),
        "pids": st.sampled_from([7, 8, 64, 4_194_304, 4_194_305]),
        "nofile": st.sampled_from([15, 16, 64, 1024, 1_048_576]),
        "wall_clock": st.sampled_from(["1ms", "30s", "10m", 0, "366d"])})
    env = st.dictionaries(st.sampled_from(["LOG_LEVEL", "GREETING", "A1", "LD_AUDIT", "TMPDIR"]),
                          st.sampled_from(["", "x", "y" * 4096, "z" * 4097]), max_size=3)
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["p", "p-2", "plausible"]), "program": st.just(program)},
        optional={"limits": limits, "env": env,
                  "args": st.lists(st.text(max_size=6).filter(lambda a: "\x00" not in a), max_size=3),
                  "capabilities": st.sampled_from([[], ["tool: echo"], [{"grant": "tool: echo",
                                                                        "max_invocations": 3}]]),
                  "budget": st.fixed_dictionaries({}, optional={
                      "max_output_tokens": st.sampled_from([0, 10, 10**15, 10**15 + 1]),
                      "max_cost_usd": st.sampled_from([0.0, 1.5, 1e12, 1e13])}),
                  "priority": st.sampled_from([0.5, 1, 1000, 1001])})


def check_field_error(err: InvalidRequest, data: dict[str, Any]) -> None:
    field = err.data.get("field")
    assert isinstance(field, str) and field, err
    top = field.split(".")[0]
    assert top in Manifest.model_fields or top in data or field == "(manifest)", (field, err.message)


@pytest.mark.timeout(600)  # 1500 examples: ~35 s alone, 70-90 s on a loaded 2-core host
@settings(max_examples=1500, deadline=None)
@given(manifests("/opt/agent.py"))
def test_parse_manifest_accepts_or_names_the_field(data: dict[str, Any]) -> None:
    try:
        m = parse_manifest(data)
    except InvalidRequest as err:
        check_field_error(err, data)
        return
    # accepted: every number is one the OS and the audit log's JSON can hold
    lim = m.limits
    for v in (lim.memory, lim.disk, lim.pids, lim.nofile):
        assert v is None or 0 < v < 2**63
    assert lim.wall_clock is None or 0 < lim.wall_clock < math.inf
    assert lim.cpu is None or 0 < lim.cpu <= 1024
    for name, value in m.env.items():
        assert name.isupper() and not name.startswith(("LD_", "PYTHON", "AGENTIX_")) and "\x00" not in value
    m.to_data()


needs_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="spawning through the bwrap backend needs root and bubblewrap")


@needs_bwrap
def test_random_manifests_through_a_real_kernel_never_wedge_it(tmp_path: Path) -> None:
    from agentix.kernel.config import KernelConfig
    from agentix.kernel.dispatch import OPERATOR
    from agentix.kernel.home import Home
    from agentix.kernel.kernel import KernelRoot

    prog = tmp_path / "agent.py"
    prog.write_text("from agentix.sdk import agent\nagent.connect().exit('ok')\n")
    home = Home(tmp_path / "home")
    home.create()
    loop = asyncio.new_event_loop()
    k = KernelRoot(home, KernelConfig(backend="bwrap", isolation="strict", launcher_pool=0, stop_grace=0.5))
    loop.run_until_complete(k.start())
    outcomes: dict[str, int] = {"spawned": 0, "refused": 0}

    async def one(data: dict[str, Any]) -> None:
        try:
            r = await k.pipeline.run(OPERATOR, "agent.spawn", {"manifest": data})
        except AgentixError as err:
            assert isinstance(err, InvalidRequest), (err.code, err.message, data)
            check_field_error(err, data)
            outcomes["refused"] += 1
        else:
            rec = k.table.get(r["agent_id"])
            await k.wait(rec, 60)
            assert rec.exit is not None
            assert rec.exit.reason in ("completed", "oom", "timeout"), (rec.exit, Path(rec.log_path).read_text()[-800:])
            outcomes["spawned"] += 1
        assert [x.agent_id for x in k.table if x.state == "spawning"] == []
        info = await asyncio.wait_for(k.pipeline.run(OPERATOR, "kernel.info", {}), 10)
        assert info["agents"]["live"] == 0

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(manifests(str(prog)), plausible(str(prog)), plausible(str(prog))))
    def check(data: dict[str, Any]) -> None:
        loop.run_until_complete(one(data))

    try:
        check()
    finally:
        loop.run_until_complete(asyncio.wait_for(k.shutdown(), 60))
        loop.close()
    assert outcomes["refused"] > 0 and outcomes["spawned"] >= 5, outcomes
