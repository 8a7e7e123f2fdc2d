"""docs/dashboard.md's table names every CLI command: where it is in the browser, or why not."""

from __future__ import annotations

import re
from pathlib import Path

from agentix.cli.reference import commands

DOC = Path(__file__).resolve().parents[2] / "docs" / "dashboard.md"


def table_commands() -> set[str]:
    """Every ``agentix …`` a first cell of the table names (``a`` / ``b`` share the prefix)."""
    text = DOC.read_text(encoding="utf-8").split("### Every CLI command", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for row in re.findall(r"^\| (.+?) \|", text, flags=re.M):
        prefix = ""
        for cell in re.findall(r"`([^`]+)`", row):
            if cell.startswith("agentix "):
                found.add(cell)
                prefix = cell.rsplit(" ", 1)[0] if " " in cell[len("agentix "):] else "agentix"
            elif prefix:
                found.add(f"{prefix} {cell}")
    return found


def test_every_cli_command_has_a_row_in_the_dashboard_table() -> None:
    rows = table_commands()
    missing = [" ".join(path) for path, cmd, _ in commands()
               if " ".join(path) not in rows and not (hasattr(cmd, "commands") and len(path) > 1
                                                       and all(" ".join([*path, c]) in rows for c in cmd.commands)
                                                       and " ".join(path) != "agentix mcp")]
    assert not missing, f"docs/dashboard.md's table lacks: {missing}"
    # and names no command that does not exist
    real = {" ".join(path) for path, _, _ in commands()}
    assert rows <= real, rows - real
