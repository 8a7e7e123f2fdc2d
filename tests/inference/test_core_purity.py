"""The scheduler, budget and rate-limit cores import no I/O, no clock and nothing above core.

(The "ten agents need the LLM" row is covered by the demo's end-to-end test,
tests/test_demo.py, and the scheduler's fairness by tests/inference/test_scheduler.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import agentix.core

FORBIDDEN = {"asyncio", "sqlite3", "socket", "subprocess", "threading", "os", "time", "httpx"}


def test_inference_core_modules_are_pure():
    core = Path(agentix.core.__file__).parent
    for name in ("scheduler.py", "budget.py", "ratelimit.py"):
        tree = ast.parse((core / name).read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                assert top not in FORBIDDEN, f"core/{name} imports {m}"
                if top == "agentix":
                    assert m.startswith("agentix.core"), f"core/{name} imports {m}"
