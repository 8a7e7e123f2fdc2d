"""The capability core stays pure: no I/O modules, nothing above agentix.core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agentix.core

CORE = Path(agentix.core.__file__).parent
MODULES = ["grants", "paths", "hosts", "caps", "ledger", "taint", "approval"]
FORBIDDEN = {"asyncio", "sqlite3", "socket", "subprocess", "threading", "os", "httpx", "time"}


@pytest.mark.parametrize("name", MODULES)
def test_capability_core_imports_nothing_impure(name):
    tree = ast.parse((CORE / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""]
        else:
            continue
        for m in mods:
            top = m.split(".")[0]
            assert top not in FORBIDDEN, f"core/{name}.py imports {m}"
            if top == "agentix":
                assert m.startswith("agentix.core"), f"core/{name}.py imports {m} from above the core"
