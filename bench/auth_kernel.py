"""Authorisation on the real kernel's call path: checked vs unchecked echo round trips.

A real agent process (plain backend) makes N ``tool.call echo`` round trips over its channel,
three times in the same kernel:

- ``unchecked``: the capability stage removed from the pipeline (the floor: framing, dispatch,
  event records, the tool);
- ``checked``: the agent holds one root-minted ``tool: echo`` token;
- ``checked depth 4``: the agent holds a ``tool: echo`` token attenuated 4 times (5 blocks).

The stage's own time (``CapabilityStage.before``: verify, authorise, taint, charge) is measured
inside the kernel for every checked call. Goal: p50 <= 150 us, p99 <= 500 us for that stage.

Starts: an in-process kernel (``Kernel`` on this process's event loop, plain backend,
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
from agentix.kernel.kernel import Kernel

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
    k = Kernel(home, KernelConfig(backend="plain", isolation="degraded"))
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
    k.caps.held[rec.agent_id] = [tok]
    k.caps.ledger.register(tok)
    stage_times.clear()
    await phase("checked_depth4", last=True)
    results["stage_depth4"] = pct(stage_times[50:])
    await k.wait(rec, 120)
    for label, ts in rec.result.items():
        results[label] = pct(ts)
    await k.shutdown()
    return results


async def _progress(k: Kernel, rec) -> set[str]:
    # the program ends each phase with an echo of "done:<label>" (recorded as tool.invoked)
    return {e["data"]["args"]["message"][5:] for e in k.events.tail(after=0, agent=rec.agent_id,
                                                                     kind="tool.invoked", limit=1000000)
            if str(e["data"]["args"].get("message", "")).startswith("done:")}


if __name__ == "__main__":
    res = asyncio.run(main())
    print(f"{N} echo round trips per row, one real agent process, plain backend")
    print(f"{'path':<28}{'p50 us':>10}{'p99 us':>10}")
    for key in ("unchecked", "checked", "checked_depth4", "stage_depth1", "stage_depth4"):
        r = res[key]
        print(f"{key:<28}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")
    ok = all(res[k]["p50_us"] <= 150 and res[k]["p99_us"] <= 500 for k in ("stage_depth1", "stage_depth4"))
    print(f"goal (stage) p50 <= 150 us, p99 <= 500 us: {'met' if ok else 'NOT met'}")
    print(json.dumps({"bench": "auth_kernel", "calls": N, **{
        f"{k}_{m}": round(v, 1) for k, r in res.items() for m, v in r.items()}, "goal_met": ok}))
