"""pyflakes over src/: no unused import, undefined name, or placeholder-less f-string lands
(issue #13: the house). The one exception is named with its reason."""

from __future__ import annotations

from pathlib import Path

from pyflakes import api, reporter

SRC = Path(__file__).resolve().parents[1] / "src" / "agentix"

#: file -> why pyflakes cannot read it cleanly
EXEMPT = {"sdk/errors.py": "re-exports core.errors' classes with a star import, its __all__ the same"}


class _Collect(reporter.Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def unexpectedError(self, filename: str, msg: str) -> None:  # noqa: N802 (pyflakes' API)
        self.lines.append(f"{filename}: {msg}")

    def syntaxError(self, filename: str, msg: str, lineno: int, offset: int, text: str) -> None:  # noqa: N802
        self.lines.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message: object) -> None:
        self.lines.append(str(message))


def test_src_is_pyflakes_clean() -> None:
    out = _Collect()
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).as_posix() in EXEMPT:
            continue
        api.checkPath(str(path), out)
    assert not out.lines, "\n".join(out.lines)
