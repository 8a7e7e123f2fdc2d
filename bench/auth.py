"""Cost of authorisation on the system-call path.

One call = verify the presented token (Ed25519 chain, cached by bytes; expiry and holder
checked every time) + authorise the call's requests against a token attenuated 4 times
(5 blocks, intersection) + charge the invocation ledger (revocation + counts, under a lock)
+ the taint policy decision. Goal: p50 <= 150 us, p99 <= 500 us.

Starts: no kernel and no process -- the pure capability core (``agentix.core``) in this
process.

Prints a readable table; the LAST line is one JSON object of the figures.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

from agentix.core.caps import Authority, generate_root_key
from agentix.core.grants import Request, requests_for_tool
from agentix.core.ledger import TokenLedger
from agentix.core.taint import TaintPolicy, TaintSet

N = 20_000
NOW = 1_800_000_000.0


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50_us": s[len(s) // 2] * 1e6,
        "p99_us": s[int(len(s) * 0.99)] * 1e6,
        "mean_us": statistics.fmean(s) * 1e6,
    }


def main() -> None:
    key = generate_root_key()
    auth = Authority(key)
    root = auth.mint(
        "root",
        ["file_read: /data/*", "file_write: /data/out/*", "network: *", "tool: *", "exec: [git, python3]",
         "spawn_child: *", "message_send: *"],
        now=NOW, expires_at=NOW + 86400, max_invocations=10_000_000,
    )
    tok = root
    narrowing = [
        ["file_read: /data/*", "network: *.example.com", "tool: *", "exec: git"],
        ["file_read: /data/proj/*", "network: *.example.com", "tool: *", "exec: git"],
        ["file_read: /data/proj/*", "network: api.example.com", "tool: *"],
        ["file_read: /data/proj/src/*", "network: api.example.com", "tool: search"],
    ]
    for i, gs in enumerate(narrowing):
        tok = auth.attenuate(tok, gs, now=NOW, holder="worker" if i == 3 else f"mid{i}", max_invocations=1_000_000)
    assert len(tok.blocks) == 5
    ledger = TokenLedger(threading.Lock())
    policy = TaintPolicy()
    taint = TaintSet().add("fetched_url", "https://example.com/page")
    data = tok.serialized
    reqs = requests_for_tool("file_read", {"path": "/data/proj/src/main.py"})

    def one_call(now: float) -> None:
        v = auth.verify(data, "worker", now)
        auth.authorize(v, reqs)
        ledger.charge(v)
        policy.decide("file_read", taint)

    # warm
    for _ in range(500):
        one_call(NOW + 1)
    samples = []
    clock = time.perf_counter
    for i in range(N):
        t0 = clock()
        one_call(NOW + 1 + i * 1e-3)
        samples.append(clock() - t0)
    call = percentiles(samples)

    # pieces, for the table
    def timed(fn, n=5000):
        out = []
        for _ in range(n):
            t0 = clock()
            fn()
            out.append(clock() - t0)
        return percentiles(out)

    cold = timed(lambda: Authority(key).verify(data, "worker", NOW + 1), n=500)
    verify_hit = timed(lambda: auth.verify(data, "worker", NOW + 1))
    authz = timed(lambda: auth.authorize(tok, reqs))
    net = Request.make("network", "api.example.com", "93.184.216.34")
    authz_net = timed(lambda: auth.authorize(tok, [net]))
    charge = timed(lambda: ledger.charge(tok))
    datalog = timed(lambda: auth.authorize_datalog(tok, reqs, NOW + 1), n=2000)
    taint_d = timed(lambda: policy.decide("exec", taint))
    attenuate = timed(lambda: auth.attenuate(root, ["tool: *"], now=NOW), n=500)

    rows = [
        ("full call (verify+authz depth 4+charge+taint)", call),
        ("verify, cached", verify_hit),
        ("verify, uncached (signatures + Datalog)", cold),
        ("authorize file_read, 5 blocks", authz),
        ("authorize network, 5 blocks", authz_net),
        ("authorize in Datalog (defence in depth), 5 blocks", datalog),
        ("ledger charge (5 limits, locked)", charge),
        ("taint decision (refuse)", taint_d),
        ("attenuate (one block)", attenuate),
    ]
    print(f"{'step':52} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for name, p in rows:
        print(f"{name:52} {p['p50_us']:9.1f} {p['p99_us']:9.1f} {p['mean_us']:9.1f}")
    ok = call["p50_us"] <= 150 and call["p99_us"] <= 500
    print(f"goal p50 <= 150 us, p99 <= 500 us: {'met' if ok else 'NOT met'}")
    print(json.dumps({
        "bench": "auth",
        "calls": N,
        "call_p50_us": round(call["p50_us"], 1),
        "call_p99_us": round(call["p99_us"], 1),
        "verify_cached_p50_us": round(verify_hit["p50_us"], 1),
        "verify_uncached_p50_us": round(cold["p50_us"], 1),
        "authorize_p50_us": round(authz["p50_us"], 1),
        "charge_p50_us": round(charge["p50_us"], 1),
        "authorize_datalog_p50_us": round(datalog["p50_us"], 1),
        "taint_p50_us": round(taint_d["p50_us"], 1),
        "attenuate_p50_us": round(attenuate["p50_us"], 1),
        "goal_met": ok,
    }))


if __name__ == "__main__":
    main()
