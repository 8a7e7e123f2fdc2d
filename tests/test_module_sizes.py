"""Files do one job: a module over ``LIMIT`` lines says why at its top (issue #13).

Its docstring states the reason in a paragraph ``(Over 400 lines: ...)`` (or ``Just over``), so
a module grows past the limit only on purpose, and a reviewer sees why before reading on."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "agentix"
LIMIT = 400
REASON = re.compile(r"\((Just over|Over) 400 lines: \S[^)]*", re.S)


def test_every_module_over_the_limit_states_why_at_its_top() -> None:
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not REASON.search(doc[:1200]):
            unexplained.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert not unexplained, (f"modules over {LIMIT} lines without a reason at the top "
                             f"(split them by job, or say why in the docstring): {unexplained}")


def test_the_rule_sees_a_module_without_a_reason(tmp_path: Path) -> None:
    """The check itself: a long module without the paragraph is caught, one with it is not."""
    body = "x = 1\n" * (LIMIT + 1)
    bare = '"""A module."""\n' + body
    said = '"""A module.\n(Over 400 lines: one job.)\n"""\n' + body
    assert not REASON.search(ast.get_docstring(ast.parse(bare)) or "")
    assert REASON.search(ast.get_docstring(ast.parse(said)) or "")
