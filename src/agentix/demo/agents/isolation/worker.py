"""Isolation demo, the bystander: measures its own system-call round trips (``echo``).

Three phases, each a summary of round-trip times in milliseconds:

1. ``before`` — ``BASELINE`` calls, spaced 1 ms, before any misbehaving agent exists;
2. ``during`` — for the seconds the operator's ``go`` message names, while a CPU hog runs;
3. ``after`` — once the operator says ``finish`` (after the leak, the attacks and the crash).

Between phases it blocks in ``ipc.recv``; the operator sees ``BASELINE + 1`` system calls
when the first phase is over.
"""

import time

from agentix.sdk import agent

BASELINE = 300
GAP = 0.001


def summary(lat):
    lat = sorted(lat)
    n = len(lat)
    return {"n": n, "p50_ms": round(lat[n // 2] * 1e3, 3),
            "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1e3, 3),
            "max_ms": round(lat[-1] * 1e3, 3)}


def probe(k, *, count=None, seconds=None):
    lat = []
    end = time.monotonic() + (seconds or 0)
    i = 0
    while (count is not None and i < count) or (seconds is not None and time.monotonic() < end):
        t = time.perf_counter()
        r = k.tools.echo(message=i)
        lat.append(time.perf_counter() - t)
        assert r["echo"] == i
        i += 1
        time.sleep(GAP)
    return summary(lat)


k = agent.connect()
before = probe(k, count=BASELINE)
go = k.recv(timeout=20)
if go is None:
    k.exit({"error": "no go message", "before": before}, code=1)
during = probe(k, seconds=float(go.body.get("seconds", 1.5)))
fin = k.recv(timeout=30)
after = probe(k, count=100)
k.exit({"before": before, "during": during, "after": after, "finished": fin is not None})
