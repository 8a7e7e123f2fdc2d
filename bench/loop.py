"""Tool-loop overhead per iteration, excluding the model (goal <= 2 ms).

The model is an instant scripted ``think`` and the tool an instant in-process answer, so
what is timed is the loop's own work per iteration: building the request, recording the
reply, canonicalising and schema-validating the arguments, the repeat check, dispatch,
serialising the result, token accounting and the summarisation check. 16 tools are on
offer. Starts: no kernel and no process -- the agent loop (``agentix.agents.loop``) in this
process against an instant in-process fake kernel. Prints a table, then one JSON object as
the last line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from agentix.agents.loop import LOOP_TOOLS, LoopConfig, ToolDef, ToolLoop  # noqa: E402

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"},
                                           "append": {"type": "boolean"}, "limit": {"type": "integer"}},
          "required": ["path"], "additionalProperties": False}
TOOLS = [ToolDef(f"tool_{i}", f"tool number {i}", SCHEMA) for i in range(12)] + list(LOOP_TOOLS.values())


class InstantKernel:
    def __init__(self, iterations: int) -> None:
        self.n = 0
        self.iterations = iterations

    def call(self, method: str, **params: Any) -> Any:
        if method == "think":
            self.n += 1
            if self.n > self.iterations:
                return {"text": "done", "tool_calls": [], "usage": {"input_tokens": 1, "output_tokens": 1},
                        "stop_reason": "end_turn"}
            return {"text": None, "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1},
                    "tool_calls": [{"id": f"c{self.n}", "name": f"tool_{self.n % 12}",
                                    "arguments": {"path": f"notes/{self.n}.txt", "content": "x" * 200}}]}
        if method == "tool.call":
            return {"path": params["args"]["path"], "bytes": 200}
        return {}


def run(iterations: int) -> tuple[float, float]:
    k = InstantKernel(iterations)
    loop = ToolLoop(k, TOOLS, system_prompt="bench", config=LoopConfig(max_iterations=iterations + 1))
    t = time.perf_counter()
    res = loop.run("go")
    elapsed = time.perf_counter() - t
    assert res.stop_reason == "complete" and res.tool_calls == iterations, res
    # for scale: what the SDK spends encoding the last think request (not part of the loop)
    t = time.perf_counter()
    orjson.dumps({"messages": loop.messages, "tools": loop._openai_tools(), "max_tokens": 4096})
    encode = (time.perf_counter() - t) * 1000
    return elapsed / (iterations + 1) * 1000, encode


def main() -> None:
    rows, figures = [], {}
    for iterations in (10, 100, 500):
        runs = [run(iterations) for _ in range(7)]
        per = [r[0] for r in runs]
        p50 = statistics.median(per)
        enc = statistics.median(r[1] for r in runs)
        rows.append((iterations, p50, min(per), enc))
        figures[f"ms_per_iteration_{iterations}"] = round(p50, 4)
        figures[f"sdk_encode_ms_at_{iterations}"] = round(enc, 4)
    print(f"{'iterations':>10} {'ms/iteration p50':>17} {'best':>8} {'SDK encode of last request ms':>30}")
    for it, p50, best, enc in rows:
        print(f"{it:>10} {p50:>17.4f} {best:>8.4f} {enc:>30.4f}")
    worst = max(r[1] for r in rows)
    figures["goal_met"] = worst <= 2.0
    print(f"goal: <= 2 ms per iteration -> {'met' if figures['goal_met'] else 'NOT met'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
