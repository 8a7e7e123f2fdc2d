"""Demo agent for section 3: keeps the model busy, ``think`` in a loop until told to stop.

    spawned with program ``thinker.py`` and args ``[--max-tokens N] [--threads T]``

``T`` threads (default 3) each call ``think`` back to back with a short prompt and
``max_tokens`` N (default 8), so the agent always has requests queued and the kernel's
scheduler decides its share. It stops when a message arrives in its mailbox (any body) or
after ``--max-seconds`` (default 120), and exits with ``{requests, output_tokens, errors}``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from agentix.sdk import agent
from agentix.sdk.errors import AgentixError

PROMPT = [{"role": "user", "content": "Continue the story in a few words: the robot opened the door and"}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ns = ap.parse_args(sys.argv[1:])
    k = agent.connect()
    stop = threading.Event()
    lock = threading.Lock()
    totals = {"requests": 0, "output_tokens": 0, "errors": 0}

    def worker() -> None:
        while not stop.is_set():
            try:
                r = k.call("think", messages=PROMPT, max_tokens=ns.max_tokens)
            except AgentixError as err:
                with lock:
                    totals["errors"] += 1
                    totals["last_error"] = f"{err.code}: {err.message}"
                if err.code in ("budget_exceeded", "invalid_request"):
                    stop.set()
                continue
            with lock:
                totals["requests"] += 1
                totals["output_tokens"] += int((r.get("usage") or {}).get("output_tokens") or 0)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, ns.threads))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + ns.max_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        if k.recv(timeout=0.5) is not None:
            break
    stop.set()
    for t in threads:
        t.join(timeout=60)
    k.exit(totals)


if __name__ == "__main__":
    main()
