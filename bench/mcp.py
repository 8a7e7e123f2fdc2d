"""Benchmark: a tool call to a local stdio MCP server through agentix vs the same call direct.

Starts: a kernel daemon in a throwaway ``$AGENTIX_HOME`` (isolation ``strict`` by default: the
MCP server runs in the kernel's sandbox, like an agent) with one declared MCP server (a small
``MCPServer`` of the ``mcp`` package with an ``echo`` tool), and one agent granted
``mcp: bench/echo`` that times its own ``tool.call mcp__bench__echo`` calls (each one checked
against its token, charged, audited and its result tainted ``external_tool``, then sent to the
sandboxed server over its socket). Two declarations of the same server are timed: ``bench``
(the default: every MCP tool is an ``effect``, so its intent record is durable before the
server gets the call and its outcome record before the reply, as for ``file_write``) and
``benchro`` (``read_only_tools = ["echo"]``: the operator's word that it only reads, so its
records are group-committed asynchronously, as for the built-in ``echo``).

In the same run, the same server program is started directly with the ``mcp`` client
(``Client(StdioServerParameters(...))``, no sandbox, no kernel) and the same call is timed.
Goal (issue 17): agentix p50 <= 2x direct p50 (judged for both declarations).

Last line: one JSON object.

    python bench/mcp.py [--calls 500] [--warm 50] [--isolation strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _daemon import BenchKernel, pct  # noqa: E402

# this file is bench/mcp.py: take bench/ off the path again, or `import mcp` would find it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

SERVER = '''
from mcp.server import MCPServer

server = MCPServer("bench")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    server.run("stdio")
'''

AGENT = '''
import sys, time
from agentix.sdk import agent
k = agent.connect()
n, warm = int(sys.argv[1]), int(sys.argv[2])
out = {}
for server in ("bench", "benchro"):
    tool = f"mcp__{server}__echo"
    for _ in range(warm):
        k.tools.call(tool, {"text": "hello"})
    lat = []
    pc = time.perf_counter_ns
    for _ in range(n):
        t = pc()
        k.tools.call(tool, {"text": "hello"})
        lat.append(pc() - t)
    out[server] = lat
k.exit(out)
'''


def summary(lat_ns: list[int]) -> dict:
    us = [x / 1000 for x in lat_ns]
    return {"calls": len(us), "p50_us": round(pct(us, 50), 1), "p99_us": round(pct(us, 99), 1)}


async def direct(server: Path, n: int, warm: int) -> dict:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=[str(server)])
    async with Client(params) as c:
        for _ in range(warm):
            await c.call_tool("echo", {"text": "hello"})
        lat = []
        pc = time.perf_counter_ns
        for _ in range(n):
            t = pc()
            r = await c.call_tool("echo", {"text": "hello"})
            lat.append(pc() - t)
        assert not r.is_error
    return summary(lat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--isolation", default="strict")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="axb-mcp-", dir="/tmp"))
    server = work / "bench_server.py"
    server.write_text(SERVER)
    prog = work / "agent.py"
    prog.write_text(AGENT)
    os.chmod(work, 0o755)

    direct_r = asyncio.run(direct(server, args.calls, args.warm))

    decl = (f"command = {json.dumps([sys.executable, str(server)])}\n"
            f"read_only_paths = {json.dumps([str(work)])}\n")
    toml = f"[mcp.servers.bench]\n{decl}\n[mcp.servers.benchro]\n{decl}read_only_tools = [\"echo\"]\n"
    bk = BenchKernel(args.isolation, extra_toml=toml)
    try:
        k = bk.client
        aid = k.spawn({"name": "mcp-bench", "program": str(prog), "args": [str(args.calls), str(args.warm)],
                       "capabilities": ["mcp: bench/echo", "mcp: benchro/echo"], "limits": {"wall_clock": "30m"}}).agent_id
        info = k.wait(aid, timeout=1800)
        if not isinstance(info.result, dict) or "bench" not in info.result:
            raise SystemExit(f"the bench agent failed: {info.raw}")
        through = summary(info.result["bench"])
        through_ro = summary(info.result["benchro"])
        srv = next(s for s in k.call("mcp.servers")["servers"] if s["name"] == "bench")
    finally:
        bk.close()

    ratio = round(through["p50_us"] / direct_r["p50_us"], 2)
    ratio_ro = round(through_ro["p50_us"] / direct_r["p50_us"], 2)
    goals = {"effect_p50_le_2x_direct": ratio <= 2, "read_only_p50_le_2x_direct": ratio_ro <= 2}
    print(f"{'case':<44} {'calls':>6} {'p50 us':>9} {'p99 us':>9}")
    print(f"{'direct: mcp client -> server (no sandbox)':<44} {direct_r['calls']:>6} {direct_r['p50_us']:>9} "
          f"{direct_r['p99_us']:>9}")
    print(f"{'agentix, effect (durable intent+outcome)':<44} {through['calls']:>6} {through['p50_us']:>9} "
          f"{through['p99_us']:>9}")
    print(f"{'agentix, read_only_tools (async records)':<44} {through_ro['calls']:>6} {through_ro['p50_us']:>9} "
          f"{through_ro['p99_us']:>9}")
    print(f"server isolation: layers {srv['isolation'] and srv['isolation']['layers']}, "
          f"missing {srv['isolation'] and srv['isolation']['missing']}")
    print(f"agentix p50 / direct p50 = {ratio}x (effect), {ratio_ro}x (read_only_tools); goals: "
          + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(json.dumps({"bench": "mcp", "direct": direct_r, "agentix": through, "agentix_read_only": through_ro,
                      "ratio": ratio, "ratio_read_only": ratio_ro,
                      "isolation": args.isolation, "server_isolation": srv["isolation"], "goals": goals,
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
