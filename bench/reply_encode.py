"""What one reply costs the kernel to write, by the size of its result: the pipeline's size
check (``rpc.framing.check_result_size``) and the writer's ``encode_reply``, as
``Pipeline.run(encoded=True)`` and the channel do them (a result of ``SPLICE_MIN`` bytes or
more is written once, its bytes put in the reply; a smaller one is written again, which costs
less). In-process, no kernel: run it with each tree's interpreter for a head-to-head.

    python bench/reply_encode.py

Last line: one JSON object (microseconds per reply, best of 7).
"""

from __future__ import annotations

import json
import timeit

from agentix.rpc import framing as f

RESULTS = {
    "echo": {"echo": "hello"},
    "1KiB_text": {"content": "x" * 1024, "path": "/workspace/a.txt"},
    "4KiB_text": {"content": "x" * 4096, "path": "/workspace/a.txt"},
    "64KiB_text": {"content": "x" * 65536, "path": "/workspace/a.txt", "bytes": 65536},
    "1MiB_listing": {"items": [{"name": f"f{i}", "size": i} for i in range(30000)]},
}


def main() -> None:
    out = {}
    splice_min = getattr(f, "SPLICE_MIN", None)  # None: a tree that writes every result twice
    for name, res in RESULTS.items():
        def one(res=res):
            raw = f.check_result_size("m", res)
            big = splice_min is not None and raw is not None and len(raw) >= splice_min
            return f.encode_reply(f.result_reply(1, f.Encoded(raw, res) if big else res))

        n = max(200, 100_000 // (1 + len(json.dumps(res)) // 64))
        out[name] = round(min(timeit.repeat(one, number=n, repeat=7)) / n * 1e6, 2)
    print(json.dumps({"bench": "reply_encode", "us_per_reply": out}))


if __name__ == "__main__":
    main()
