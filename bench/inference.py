"""Benchmark: agentix's inference scheduler against FIFO, round-robin and no scheduling.

Part 1 (always): a fake OpenAI-compatible server in its own process on 127.0.0.1 with a
concurrency limit (more at once get 429 + retry-after), a time to first token and a
tokens/s per stream. Load: 50 agents with weights 1:1:2 (closed loop, one request each),
one greedy agent (weight 1, ten requests outstanding: 10x the requests) and one interactive
agent (a small request every second). For each discipline, in the same run:

* throughput = the server's busy slot-seconds / (slots x wall time): the share of the
  provider's capacity used (goal >= 95%);
* weighted Jain's fairness index of output tokens / weight over the 51 backlogged agents
  (goal >= 0.95);
* the interactive agent's p99 latency relative to the same requests run alone, and its p99
  queueing delay (goal <= 2x);
* scheduler overhead: p99 of one scheduler operation and the mean scheduler time per
  request (goal <= 1 ms p99).

Part 2 (if agentix[local] is installed): 10 agents with weights 1:1:2 share the real local
model; aggregate tokens/s beside a single stream, and fairness.

Starts: no kernel -- the inference service (``InferenceService``: scheduler + provider
driver) in this process, the fake provider in a child process, and, for part 2, the local
model in this process.

Prints a table; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentix.core.scheduler import weighted_jain  # noqa: E402
from agentix.kernel.inference import InferenceService  # noqa: E402
from agentix.llm.inference_config import load_config, local_available  # noqa: E402

SLOTS = int(os.environ.get("BENCH_SLOTS", "16"))
LATENCY = 0.02
TPS = 200.0
LONG_TOKENS = 64
SHORT_TOKENS = 8
INTERACTIVE_EVERY = 1.0


def p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(LATENCY), "--tokens-per-second",
         str(TPS), "--concurrency", str(SLOTS), "--retry-after", "0.05"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def server_stats(base: str, reset: bool = False) -> dict:
    async with httpx.AsyncClient() as c:
        if reset:
            await c.post(base + "/_reset", json={})
            return {}
        return (await c.get(base + "/_stats")).json()


RESERVE = {"reserve": 1, "lend_after": "never"}  # the "wfq+reserve" row (--reserve, --lend-after)


def make_service(home: Path, base: str, discipline: str, concurrency: int = SLOTS, record=None) -> InferenceService:
    extra = ""
    if discipline == "wfq+reserve":
        discipline = "wfq"
        extra = (f"reserve_interactive = {RESERVE['reserve']}\nlend_after = '{RESERVE['lend_after']}'\n"
                 "interactive_idle = '0.5s'\n")
    (home / "config.toml").write_text(
        f"[providers.openai]\nconcurrency = {concurrency}\n"
        "[inference]\nretry_budget = 8\nbackoff_base = 0.05\nbackoff_max = 1.0\nmax_wait = '10s'\n" + extra)
    cfg = load_config(home, {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": base, "AGENTIX_MODEL": "openai:fake"},
                      local_installed=False)
    return InferenceService(cfg, discipline=discipline, record=record)


def msg(n: int, text: str = "work on the task") -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": n}


async def interactive_alone(base: str, home: Path, n: int = 40) -> list[float]:
    svc = make_service(home, base, "wfq")
    lat = []
    try:
        for _ in range(3):  # open the connection first
            await svc.think("interactive", 1.0, msg(SHORT_TOKENS, "quick question"))
        for _ in range(n):
            t = time.perf_counter()
            await svc.think("interactive", 1.0, msg(SHORT_TOKENS, "quick question"))
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)
    finally:
        await svc.aclose()
    return lat


async def run_discipline(base: str, home: Path, discipline: str, duration: float) -> dict:
    t_measure = [0.0]

    def record(kind: str, agent: str | None, data: dict) -> None:
        if kind == "usage.reported" and agent == "interactive" and t_measure[0]:
            inter_wait.append(data["queued_s"])

    svc = make_service(home, base, discipline, record=record)
    weights = {f"agent{i:02d}": (2.0 if i % 3 == 2 else 1.0) for i in range(50)}
    weights["greedy"] = 1.0
    tokens = {a: 0 for a in weights}
    failures = 0
    inter_lat: list[float] = []
    inter_wait: list[float] = []
    stop = asyncio.Event()
    warm = 1.5  # seconds before measuring

    rng = random.Random(7)

    async def worker(agent: str) -> None:
        nonlocal failures
        while not stop.is_set():
            try:
                # output lengths vary like real answers (mean LONG_TOKENS), so slots free at different times
                r = await svc.think(agent, weights[agent], msg(rng.randint(LONG_TOKENS // 2, LONG_TOKENS * 3 // 2)))
                if t_measure[0] and time.monotonic() >= t_measure[0]:
                    tokens[agent] += r.usage.output_tokens
            except Exception:
                failures += 1

    async def interactive() -> None:
        nonlocal failures
        while not stop.is_set():
            t = time.perf_counter()
            try:
                await svc.think("interactive", 1.0, msg(SHORT_TOKENS, "quick question"))
                if t_measure[0]:
                    inter_lat.append(time.perf_counter() - t)
            except Exception:
                failures += 1
            await asyncio.sleep(INTERACTIVE_EVERY)  # a person reading and typing

    tasks = [asyncio.create_task(worker(a)) for a in weights if a != "greedy"]
    tasks += [asyncio.create_task(worker("greedy")) for _ in range(10)]
    tasks.append(asyncio.create_task(interactive()))
    await asyncio.sleep(warm)
    await server_stats(base, reset=True)
    t_measure[0] = time.monotonic()
    await asyncio.sleep(duration)
    srv = await server_stats(base)
    elapsed = time.monotonic() - t_measure[0]
    stats = svc.stats()["providers"]["openai"]
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await svc.aclose()
    util = srv["busy_seconds"] / (SLOTS * elapsed)
    fair = weighted_jain({a: (tokens[a], weights[a]) for a in weights})
    normal = [tokens[a] / weights[a] for a in weights if a != "greedy"]
    served = sum(a["served"] for a in stats["agents"]) or 1
    ops = stats["overhead_us_p50"]
    return {
        "discipline": discipline,
        "throughput_share": util,
        "output_tokens_per_s": srv["output_tokens"] / elapsed,
        "fairness": fair,
        "greedy_vs_mean_share": tokens["greedy"] / max(1e-9, statistics.mean(normal)),
        "interactive_p99_s": p99(inter_lat),
        "interactive_p99_wait_ms": p99(inter_wait) * 1000,
        "interactive_samples": len(inter_lat),
        "overhead_op_p99_us": stats["overhead_us_p99"],
        "overhead_op_p50_us": ops,
        "overhead_per_request_us": stats["overhead_us_per_request"],
        "rejected_429": srv["rejected_429"],
        "failures": failures,
        "served": served,
    }


async def part1(duration: float) -> dict:
    proc, base = start_server()
    try:
        with tempfile.TemporaryDirectory() as d:
            home = Path(d)
            alone = await interactive_alone(base, home)
            rows = []
            for disc in ("wfq", "wfq+reserve", "fifo", "round_robin", "none"):
                rows.append(await run_discipline(base, home, disc, duration))
    finally:
        proc.terminate()
        proc.wait(5)
    alone_p99 = p99(alone)
    for r in rows:
        r["interactive_vs_alone"] = r["interactive_p99_s"] / alone_p99
    return {"alone_p99_s": alone_p99, "rows": rows}


async def part2(duration: float) -> dict | None:
    if not local_available():
        return None
    from agentix.llm.local import LocalProvider

    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        (home / "config.toml").write_text("[providers.local]\nkind = 'local'\nparallel = 4\nconcurrency = 4\n")
        cfg = load_config(home, {}, local_installed=True)
        prov = LocalProvider("local", parallel=4, context=1024)
        svc = InferenceService(cfg, providers={"local": prov})
        req = {"messages": [{"role": "user", "content": "Write a short story about a robot."}], "max_tokens": 12,
               "temperature": 0.8}
        await svc.think("warmup", 1.0, req)
        # a single stream alone
        t = time.monotonic()
        n = 0
        while time.monotonic() - t < duration / 2:
            r = await svc.think("solo", 1.0, req)
            n += r.usage.output_tokens
        single = n / (time.monotonic() - t)
        weights = {f"agent{i}": (2.0 if i % 3 == 2 else 1.0) for i in range(10)}
        tokens = {a: 0 for a in weights}
        stop = asyncio.Event()

        async def worker(a: str) -> None:
            while not stop.is_set():
                r = await svc.think(a, weights[a], req)
                if not stop.is_set():
                    tokens[a] += r.usage.output_tokens

        tasks = [asyncio.create_task(worker(a)) for a in weights for _ in range(2)]  # 2 in flight per agent
        t = time.monotonic()
        await asyncio.sleep(duration)
        stop.set()
        agg = sum(tokens.values()) / (time.monotonic() - t)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await svc.aclose()
        return {"single_stream_tokens_per_s": single, "aggregate_tokens_per_s": agg,
                "fairness": weighted_jain({a: (tokens[a], weights[a]) for a in weights}),
                "tokens_by_weight": {w: sum(tokens[a] for a in weights if weights[a] == w) /
                                     sum(1 for a in weights if weights[a] == w) for w in (1.0, 2.0)}}


def prov_threads() -> int:
    import os

    return max(1, (os.cpu_count() or 2) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0, help="seconds measured per discipline")
    ap.add_argument("--local-duration", type=float, default=45.0)
    ap.add_argument("--no-local", action="store_true")
    ap.add_argument("--reserve", type=int, default=1, help="reserved slots of the wfq+reserve row")
    ap.add_argument("--lend-after", default="never", help="lend_after of the wfq+reserve row ('never', '50ms')")
    a = ap.parse_args()
    RESERVE.update(reserve=a.reserve, lend_after=a.lend_after)
    r1 = asyncio.run(part1(a.duration))
    print(f"fake provider: {SLOTS} slots, {LATENCY * 1000:.0f} ms to first token, {TPS:.0f} tokens/s per stream, "
          f"429 when busy; 50 agents (weights 1:1:2) + greedy (10x requests) + interactive")
    print(f"interactive alone: p99 {r1['alone_p99_s'] * 1000:.1f} ms")
    hdr = f"{'discipline':<12}{'capacity':>9}{'fairness':>9}{'greedy/avg':>11}{'inter p99':>10}{'vs alone':>9}" \
          f"{'wait p99':>9}{'op p99':>9}{'per req':>9}{'429s':>7}{'fail':>6}"
    print(hdr)
    for r in r1["rows"]:
        print(f"{r['discipline']:<12}{r['throughput_share'] * 100:>8.1f}%{r['fairness']:>9.3f}"
              f"{r['greedy_vs_mean_share']:>11.2f}{r['interactive_p99_s'] * 1000:>8.1f}ms{r['interactive_vs_alone']:>8.2f}x"
              f"{r['interactive_p99_wait_ms']:>7.1f}ms{r['overhead_op_p99_us']:>7.0f}us{r['overhead_per_request_us']:>7.0f}us"
              f"{r['rejected_429']:>7}{r['failures']:>6}")
    print("goals (wfq): capacity >= 95%, fairness >= 0.95, interactive <= 2x alone, overhead <= 1 ms p99")
    print(f"wfq+reserve: wfq with {RESERVE['reserve']} slot(s) reserved for interactive requests, "
          f"lend_after {RESERVE['lend_after']}")
    print(f"machine load average during the run: {open('/proc/loadavg').read().split()[0]} on "
          f"{__import__('os').cpu_count()} cores (other jobs inflate waits and latency)")
    r2 = None if a.no_local else asyncio.run(part2(a.local_duration))
    if r2 is None:
        print("local model: skipped (agentix[local] not installed or --no-local)")
    else:
        print(f"local model (Gemma 3 270M, 4 slots, {prov_threads()} threads): single stream {r2['single_stream_tokens_per_s']:.1f} "
              f"tokens/s; 10 agents aggregate {r2['aggregate_tokens_per_s']:.1f} tokens/s; "
              f"fairness {r2['fairness']:.3f}; mean tokens per agent by weight {r2['tokens_by_weight']}")
    goals = {}
    for row in r1["rows"][:2]:
        d = row["discipline"]
        goals.update({f"{d}_capacity_ge_0.95": row["throughput_share"] >= 0.95,
                      f"{d}_fairness_ge_0.95": row["fairness"] >= 0.95,
                      f"{d}_interactive_p99_le_2x_alone": row["interactive_vs_alone"] <= 2.0,
                      f"{d}_overhead_p99_le_1ms": row["overhead_op_p99_us"] <= 1000})
    print(json.dumps({"bench": "inference", "fake": r1, "local": r2, "goals": goals,
                      "loadavg": float(open("/proc/loadavg").read().split()[0])}, default=float))


if __name__ == "__main__":
    main()
