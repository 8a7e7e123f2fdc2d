"""Session 3 attacks on packages: a trusted-but-malicious publisher sizes its own agent.

A package's config carries, besides the capabilities the operator accepts, the manifest
fields an Agentfile can set: ``limits`` (memory, cpu, pids, wall clock, files, disk),
``budget`` (tokens, ``reset_period``) — and a pulled snapshot also ``memory``. None of them was
shown to the operator for acceptance, yet they were taken as written: a package could give
itself 1 PiB of memory and 4 M pids over the operator's ``[kernel.limits]``, lift the finite
token budget an LLM root gets by default (by setting any token budget), or make any budget
reset every second. Fixed as a class (core/foreign.py): every sizing field of a foreign
manifest is at most this kernel's default, on both paths (``package.run`` and the restore of
a snapshot not made here). The property test holds the rule for any manifest; the end-to-end
test builds and runs the concrete package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.foreign import cap_foreign
from agentix.core.manifest import Budget, Limits, Manifest, MemoryConfig

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]
KERNEL_LIMITS = Limits(memory="256M", cpu=0.5, pids=64, wall_clock="10m", nofile=256, disk="100M")
LLM_BUDGET = {"max_input_tokens": 2_000_000, "max_output_tokens": 200_000}

sizes = st.one_of(st.none(), st.integers(16 * 2**20, 2**50))
limits = st.builds(Limits, memory=sizes, cpu=st.one_of(st.none(), st.floats(0.01, 1024.0)),
                   pids=st.one_of(st.none(), st.integers(8, 4_194_304)),
                   wall_clock=st.one_of(st.none(), st.floats(1, 365 * 86400.0)),
                   nofile=st.one_of(st.none(), st.integers(16, 1_048_576)),
                   disk=st.one_of(st.none(), st.integers(2**20, 2**50)))
tokens = st.one_of(st.none(), st.integers(0, 10**15))
budgets = st.builds(Budget, max_input_tokens=tokens, max_output_tokens=tokens,
                    reset_period=st.one_of(st.none(), st.floats(1, 86400)))
memories = st.builds(MemoryConfig, max_records=st.integers(0, 10_000_000),
                     max_record_bytes=st.integers(1, 16 * 2**20))


@settings(max_examples=300, deadline=None)
@given(lim=limits, bud=budgets, mem=memories, ceiling=limits)
def test_a_foreign_manifest_never_sizes_more_than_the_kernel_default(lim: Limits, bud: Budget,
                                                                    mem: MemoryConfig, ceiling: Limits) -> None:
    m = Manifest(name="pkg", program="agent", limits=lim, budget=bud, memory=mem)
    got = cap_foreign(m, ceiling, LLM_BUDGET)
    for f, top in ceiling.model_dump().items():
        mine, asked = getattr(got.limits, f), getattr(lim, f)
        if top is not None:
            assert mine is not None and mine <= top, (f, mine, top)
        if asked is not None:
            assert mine is not None and mine <= asked, (f, mine, asked)  # narrowing is kept
    for key, top in LLM_BUDGET.items():
        v, asked = getattr(got.budget, key), getattr(bud, key)
        assert v is not None and v <= top and (asked is None or v <= asked)
    assert got.budget.reset_period is None
    assert got.memory.max_records <= min(mem.max_records, MemoryConfig().max_records)
    assert got.memory.max_record_bytes <= min(mem.max_record_bytes, MemoryConfig().max_record_bytes)
    # nothing else moved
    assert got.model_dump(exclude={"limits", "budget", "memory"}) == m.model_dump(exclude={"limits", "budget", "memory"})


AGENTFILE = """\
apiVersion: agentix/v1
metadata:
  name: greedy
  version: 1.0.0
  description: sizes itself
stages:
  - name: main
    steps:
      - copy: agent
agent:
  program: agent
capabilities:
  - "tool: echo"
limits:
  memory: 2G
  pids: 1000
  cpu: 1
  nofile: 128
budget:
  max_input_tokens: 1000000000000
  reset_period: 1s
"""

PROGRAM = """\
from agentix.sdk import agent
agent.connect().exit("ran")
"""


def cli(kernel: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTIX, "--home", str(kernel.home), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_a_package_cannot_size_itself_over_the_operators_defaults(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = tmp_path / "ctx"
    (ctx / "agent").mkdir(parents=True)
    (ctx / "agent" / "__main__.py").write_text(PROGRAM)
    (ctx / "Agentfile").write_text(AGENTFILE)
    for args in (("build", str(ctx), "-t", "local/greedy:1.0.0"), ("trust", "allow-unsigned", "local/*")):
        p = cli(k, *args)
        assert p.returncode == 0, p.stdout + p.stderr
    p = cli(k, "run", "local/greedy:1.0.0", "--accept", "all", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["result"] == "ran"
    [aid] = [a.agent_id for a in k.client.list()]
    st = k.client.call("agent.status", agent_id=aid)
    lim = st["limits"]
    assert lim["memory"] == 256 * 2**20 and lim["pids"] == 64 and lim["cpu"] == 0.5
    assert lim["nofile"] == 128                        # what it asked below the default is kept
    m = st["manifest"]
    assert m["budget"]["max_input_tokens"] == 2_000_000 and m["budget"].get("reset_period") is None


def test_a_pulled_snapshot_cannot_size_the_restored_agent_over_the_defaults(start_kernel: Any,
                                                                          tmp_path: Path) -> None:
    """Kernel A's operator gave its agent pids 1000, cpu 1 and a budget that resets every second
    (their machine, their choice); kernel B restores A's snapshot: B's defaults bound it."""
    from packages.conftest import start_registry, stop_registry

    reg = start_registry(tmp_path / "reg")
    try:
        a = start_kernel()
        aid = a.spawn("snapper.py", name="snapper",
                      limits={"pids": 1000, "cpu": 1, "nofile": 128},
                      budget={"max_input_tokens": 10**12, "reset_period": "1s"})
        ref = reg.ref("snaps/greedy:s1")
        a.client.call("snapshot.create", agent=aid, tag=ref)
        pub = a.client.call("keys.generate", name="default")["public_key"]
        a.client.call("package.sign", ref=ref, key="default")
        a.client.call("package.push", ref=ref)
        b = start_kernel()
        b.client.call("trust.add", key=pub, pattern=reg.ref("snaps/*"))
        b.client.call("package.pull", ref=ref)
        r = b.client.call("snapshot.restore", ref=ref, accept_all=True)
        assert r["made_here"] is False
        st = b.client.call("agent.status", agent_id=r["agent_id"])
        assert st["limits"]["pids"] == 64 and st["limits"]["cpu"] == 0.5 and st["limits"]["nofile"] == 128
        assert st["manifest"]["budget"]["max_input_tokens"] == 2_000_000
        assert st["manifest"]["budget"].get("reset_period") is None
        # on A, where it was made, the operator's sizing stands
        st_a = a.client.call("agent.status", agent_id=aid)
        assert st_a["limits"]["pids"] == 1000
    finally:
        stop_registry(reg)
