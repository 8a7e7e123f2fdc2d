"""Authorisation on the real kernel's call path: checked vs unchecked echo round trips.

A real agent process (plain backend) makes N ``tool.call echo`` round trips over its channel,
three times in the same kernel:

- ``unchecked``: the capability stage removed from the pipeline (the floor: framing, dispatch,
  event records, the tool);
- ``checked``: the agent holds one root-minted ``tool: echo`` token;
- ``checked depth 4``: the agent holds a ``tool: echo`` token attenuated 4 times (5 blocks).

The stage's own time (``CapabilityStage.before``: the method's policy, the one decision of
``core.authorize`` — holder, issue, expiry, revocation, invocations — taint, charge) is measured
inside the kernel for every checked call. Goal: p50 <= 40 us, p99 <= 150 us for that stage with a
depth-4 token.

Then, in the same kernel, a ``file_read_many`` of 16 paths against one path: the decision
alone (``CapabilityService.decide``, repeated: answered by ``core/decision_cache.py``; and made
afresh each time, the memo emptied before each: the goal, 16 paths <= 2x one path, p50, is
judged on that one) and the whole check stage in-process (``CapabilityStage.before``, the tool
not run).

Starts: an in-process kernel (``KernelRoot`` on this process's event loop, plain backend,
isolation degraded -- no daemon, no bwrap) and one real agent process spawned by it.

Prints a readable table; the LAST line is one JSON object of the figures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000

PROG = '''
import time
from agentix.sdk import agent
k = agent.connect()
out = {}
while True:
    m = k.recv(timeout=120)
    if m is None or m.body == "exit":
        break
    n = m.body["n"]
    for _ in range(50):
        k.call("tool.call", name="echo", args={"message": "x"})
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        k.call("tool.call", name="echo", args={"message": "x"})
        ts.append(time.perf_counter() - t)
    out[m.body["label"]] = ts
    k.call("tool.call", name="echo", args={"message": "done:" + m.body["label"]})
    if m.body.get("last"):
        break
k.exit(out)
'''


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_us": s[len(s) // 2] * 1e6, "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6}


async def main() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="agentix-bench-"))
    home = Home(tmp / "home")
    home.create()
    k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
    await k.start()
    prog = tmp / "bench.py"
    prog.write_text(PROG)
    rec = await k.spawn(parse_manifest({"name": "bench", "program": str(prog), "isolation": "degraded",
                                        "capabilities": ["tool: echo"]}))
    stage = k.cap_stage
    stage_times: list[float] = []
    real_before = stage.before

    async def timed_before(call):
        t = time.perf_counter()
        try:
            await real_before(call)
        finally:
            if call.method == "tool.call":
                stage_times.append(time.perf_counter() - t)
    stage.before = timed_before  # type: ignore[method-assign]

    async def phase(label: str, last: bool = False) -> None:
        await k.deliver(None, rec, {"n": N, "label": label, "last": last})
        while label not in (await _progress(k, rec)):
            await asyncio.sleep(0.05)

    results: dict[str, dict[str, float]] = {}
    # unchecked: no stages at all
    saved = list(k.pipeline.stages)
    k.pipeline.stages.clear()
    await phase("unchecked")
    k.pipeline.stages.extend(saved)
    stage_times.clear()
    await phase("checked")
    results["stage_depth1"] = pct(stage_times[50:])
    # depth 4: replace the agent's token by a 4-times attenuated one
    root = k.caps.held[rec.agent_id][0]
    tok = root
    for _ in range(4):
        tok = k.caps.authority.attenuate(tok, ["tool: echo"], now=time.time())
    k.caps.held[rec.agent_id] = []
    k.caps.install(rec.agent_id, [tok])  # issued to the agent: the decision checks that too
    stage_times.clear()
    await phase("checked_depth4", last=True)
    results["stage_depth4"] = pct(stage_times[50:])
    await k.wait(rec, 120)
    for label, ts in rec.result.items():
        results[label] = pct(ts)
    results.update(decision_many(k, home))
    results.update(await stage_many(k))
    await k.shutdown()
    return results


def decision_many(k: KernelRoot, home: Home) -> dict[str, dict[str, float]]:
    """The decision for a file_read_many of 1 vs 16 paths (the agent's record, its real token)."""
    from agentix.core.grants import Request

    rec = next(r for r in k.table if r.name == "bench")
    tok = k.caps.authority.mint(rec.agent_id, ["file_read: /workspace/*"], now=time.time())
    k.caps.held[rec.agent_id] = []
    k.caps.install(rec.agent_id, [tok])
    one = [Request("file_read", "/workspace/d/f0.txt")]
    many = [Request("file_read", f"/workspace/d/f{i}.txt") for i in range(16)]
    out = {}
    for label, res in (("decide_1_path", one), ("decide_16_paths", many)):
        ts = []
        for _ in range(N):
            t = time.perf_counter()
            k.caps.decide(rec, res, partial=True, tool_call=True)
            ts.append(time.perf_counter() - t)
        out[label] = pct(ts[100:])
    # the same decisions made afresh every time (core/decision_cache.py remembers a repeat:
    # the rows above are its answers; these are what a first call of each costs)
    cache = k.caps.decisions
    for label, res in (("decide_uncached_1_path", one), ("decide_uncached_16_paths", many)):
        ts = []
        for _ in range(N):
            cache.clear()
            t = time.perf_counter()
            k.caps.decide(rec, res, partial=True, tool_call=True)
            ts.append(time.perf_counter() - t)
        out[label] = pct(ts[100:])
    return out


async def _progress(k: KernelRoot, rec) -> set[str]:
    # the program ends each phase with an echo of "done:<label>" (recorded as tool.invoked)
    return {e["data"]["args"]["message"][5:] for e in k.audit.sink.tail(after=0, agent=rec.agent_id,
                                                                     kind="tool.invoked", limit=1000000)
            if str(e["data"]["args"].get("message", "")).startswith("done:")}


async def stage_many(k: KernelRoot) -> dict[str, dict[str, float]]:
    """The whole check stage (argument check, resources from the method table, the decision,
    taint, commit) for a file_read_many of 1 vs 16 paths, in-process (the tool does not run)."""
    from agentix.kernel.dispatch import Call, Caller

    rec = next(r for r in k.table if r.name == "bench")
    caller = Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)
    spec = k.pipeline.lookup(caller, "tool.call")
    out = {}
    for label, n in (("stage_read_many_1", 1), ("stage_read_many_16", 16)):
        args = {"paths": [f"d/f{i}.txt" for i in range(n)]}
        ts = []
        for _ in range(N):
            call = Call(caller=caller, method="tool.call", params={"name": "file_read_many", "args": args},
                        spec=spec, tool="file_read_many", args=args, subject=rec.agent_id)
            t = time.perf_counter()
            await k.cap_stage.before(call)
            ts.append(time.perf_counter() - t)
        out[label] = pct(ts[100:])
    return out


if __name__ == "__main__":
    res = asyncio.run(main())
    print(f"{N} echo round trips per row, one real agent process, plain backend")
    print(f"{'path':<28}{'p50 us':>10}{'p99 us':>10}")
    for key in ("unchecked", "checked", "checked_depth4", "stage_depth1", "stage_depth4",
                "decide_1_path", "decide_16_paths", "decide_uncached_1_path", "decide_uncached_16_paths",
                "stage_read_many_1", "stage_read_many_16"):
        r = res[key]
        print(f"{key:<28}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")
    stage_ok = all(res[k]["p50_us"] <= 40 and res[k]["p99_us"] <= 150 for k in ("stage_depth1", "stage_depth4"))
    # the goal is judged on the decision made afresh (a repeat is remembered: cached_ratio)
    ratio = res["decide_uncached_16_paths"]["p50_us"] / max(1e-9, res["decide_uncached_1_path"]["p50_us"])
    cached_ratio = res["decide_16_paths"]["p50_us"] / max(1e-9, res["decide_1_path"]["p50_us"])
    many_ok = ratio <= 2.0
    sratio = res["stage_read_many_16"]["p50_us"] / max(1e-9, res["stage_read_many_1"]["p50_us"])
    ok = stage_ok and many_ok
    print(f"goal (stage) p50 <= 40 us, p99 <= 150 us: {'met' if stage_ok else 'NOT met'}")
    print(f"goal file_read_many 16 paths <= 2x one path: decision made afresh {ratio:.2f}x "
          f"({'met' if many_ok else 'NOT met'}); a remembered repeat {cached_ratio:.2f}x; "
          f"whole check stage {sratio:.2f}x")
    print(json.dumps({"bench": "auth_kernel", "calls": N, **{
        f"{k}_{m}": round(v, 1) for k, r in res.items() for m, v in r.items()},
        "many_ratio": round(ratio, 2), "many_ratio_cached": round(cached_ratio, 2),
        "stage_many_ratio": round(sratio, 2), "goal_met": ok}))
