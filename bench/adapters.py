"""Benchmark: what a framework adapter adds to one tool call.

Starts a kernel daemon (throwaway ``$AGENTIX_HOME``, isolation ``degraded``) and one agent
process that holds ``tool: echo`` and times, in alternating blocks so drift hits all alike:

* a plain agentix tool call: ``k.tools.call("echo", {"text": "x"})``;
* the same call through the LangChain adapter: ``agentix_tools(["echo"])[0].invoke({"text": "x"})``
  (a LangChain ``StructuredTool``: argument validation, callbacks, the ``tool.call``);
* (if the openai-agents extra is installed) the OpenAI Agents SDK function tool's
  ``on_invoke_tool`` (JSON arguments, a worker thread for the blocking call), for reference.

Goal (issue 17): LangChain adapter overhead p50 <= +0.5 ms over the plain call.
Last line: one JSON object.

    python bench/adapters.py [--calls 2000] [--blocks 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel, pct  # noqa: E402

AGENT = '''
import asyncio, sys, time
from agentix.sdk import agent
from agentix.adapters.langchain import agentix_tools
k = agent.connect()
calls, blocks = int(sys.argv[1]), int(sys.argv[2])
lc = agentix_tools(["echo"])[0]
args = {"text": "x"}
try:
    from agentix.adapters.openai_agents import agentix_function_tools
    oa = agentix_function_tools(["echo"])[0]
except ImportError:
    oa = None
pc = time.perf_counter_ns
out = {"plain": [], "langchain": [], "openai_agents": []}

def plain():
    k.tools.call("echo", args)

def langchain():
    lc.invoke(args)

loop = asyncio.new_event_loop()
def openai_agents():
    loop.run_until_complete(oa.on_invoke_tool(None, '{"text": "x"}'))

cases = [("plain", plain), ("langchain", langchain)] + ([("openai_agents", openai_agents)] if oa else [])
for name, fn in cases:  # warm up
    for _ in range(50):
        fn()
per = max(1, calls // blocks)
for _ in range(blocks):
    for name, fn in cases:
        lat = out[name]
        for _ in range(per):
            t = pc()
            fn()
            lat.append(pc() - t)
k.exit(out)
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=10)
    a = ap.parse_args()
    try:
        import langchain_core  # noqa: F401
    except ImportError:
        print(json.dumps({"skipped": "the langchain extra is not installed"}))
        return
    bk = BenchKernel("degraded")
    try:
        with tempfile.TemporaryDirectory(prefix="axb-adapters-") as d:
            prog = Path(d) / "adapter_bench.py"
            prog.write_text(AGENT)
            k = bk.client
            aid = k.spawn({"name": "bench-adapters", "program": str(prog),
                           "args": [str(a.calls), str(a.blocks)], "capabilities": ["tool: echo"]}).agent_id
            info = k.wait(aid, timeout=900)
            if info.reason != "completed":
                raise SystemExit(f"the bench agent {info.reason}: {k.logs(aid)[0][-3000:]}")
            res = info.result
    finally:
        bk.close()
    rows = {}
    for name, lat in res.items():
        if lat:
            us = [x / 1000 for x in lat]
            rows[name] = {"calls": len(us), "p50_us": round(pct(us, 50), 1), "p99_us": round(pct(us, 99), 1)}
    over = round(rows["langchain"]["p50_us"] - rows["plain"]["p50_us"], 1)
    print(f"{'case':<16}{'calls':>8}{'p50 us':>10}{'p99 us':>10}")
    for name, r in rows.items():
        print(f"{name:<16}{r['calls']:>8}{r['p50_us']:>10}{r['p99_us']:>10}")
    print(f"LangChain adapter overhead p50: {over} us (goal <= 500 us)")
    extra = {}
    if "openai_agents" in rows:
        extra["openai_agents_overhead_p50_us"] = round(rows["openai_agents"]["p50_us"] - rows["plain"]["p50_us"], 1)
        print(f"OpenAI Agents function tool overhead p50: {extra['openai_agents_overhead_p50_us']} us (no goal)")
    print(json.dumps({"rows": rows, "langchain_overhead_p50_us": over, **extra,
                      "goals": {"langchain overhead p50 <= 0.5 ms": over <= 500},
                      "loadavg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
