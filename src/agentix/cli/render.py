"""How the CLI prints: rich for a person at a terminal, plain and complete for everything else.

The rule: output that goes to a pipe or a file is never cut, wrapped or coloured. Tables
become space-aligned columns holding every value in full (ids can be copied and fed back to
``agentix``), one record per line, one header line; lines are printed as they are. Only when
stdout is a terminal is rich imported (it costs more start-up time than the rest of the
CLI), and only for a table that fits the terminal; a wider one is printed plain too, so no
column is ever shortened or dropped. Whatever a command leaves out (the head
of a long log, older events) it says so in a notice on stderr.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # no typing or contextlib at start-up
if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

__all__ = ["Cell", "columns", "console", "echo", "for_terminal", "is_tty", "line", "notice", "printable",
           "status", "table"]

#: a table cell: text, or (text, rich style) — the style is used only on a terminal
Cell = str | tuple[str, str]

_consoles: dict[bool, Console] = {}

# Text an agent wrote (its output, its events' data, its results, the arguments it asks
# approval for) reaches the operator's terminal. A terminal acts on control characters:
# ESC/CSI/OSC sequences can clear or rewrite what was printed (hide a denial), set the window
# title, or write the clipboard (OSC 52: the operator's next paste runs the agent's command);
# CR and BS overwrite a line; bidi overrides reorder it. So on a terminal every such character
# is shown as an escape (``\x1b``, ``\u202e``) instead of obeyed; to a pipe or a file the
# text goes as it is (``agentix logs NAME | cat`` is the raw output).
_SHOWN = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0))}
_SHOWN.update({c: f"\\u{c:04x}" for c in (0x061c, 0x200e, 0x200f, *range(0x202a, 0x202f),
                                            *range(0x2066, 0x206a))})


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (C0 but tab and newline, DEL,
    C1, bidi controls) written as a visible escape."""
    return text.translate(_SHOWN)


def for_terminal(text: str, err: bool = False) -> str:
    """``printable(text)`` when the stream is a terminal; ``text`` as it is otherwise."""
    return printable(text) if is_tty(err) else text


def is_tty(err: bool = False) -> bool:
    stream = sys.stderr if err else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def console(err: bool = False) -> Console:
    """A rich Console for this stream; off a terminal it never wraps (very wide, no colour)."""
    if err not in _consoles:
        from rich.console import Console

        tty = is_tty(err)
        _consoles[err] = Console(stderr=err, soft_wrap=not tty, width=None if tty else 100_000,
                                 no_color=not tty, highlight=False)
    return _consoles[err]


def echo(text: str = "", err: bool = False) -> None:
    """Write one line (no click: ``agentix info`` must start quickly, see cli/quick.py)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(for_terminal(text, err) + "\n")
    stream.flush()


def _text(c: Cell) -> str:
    return c if isinstance(c, str) else c[0]


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as space-aligned columns, nothing cut (the last column is not padded)."""
    if not rows:
        return ""
    n = max(len(r) for r in rows)
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(n)]
    out = []
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, title: str | None = None,
          keep: Sequence[int] = (0,)) -> None:
    """Print a table. Plain columns unless stdout is a terminal wide enough for the whole
    table; then rich draws it (colours), with columns ``keep`` (ids) never wrapped."""
    plain = columns([list(headers), *[[_text(c) for c in r] for r in rows]])
    width = max((len(x) for x in plain.splitlines()), default=0)
    if not is_tty() or width + 2 * len(headers) > console().width:
        if title:
            echo(title)
        echo(plain)  # a narrow terminal wraps the lines itself: nothing is lost
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(*headers, title=title, box=None, header_style="bold")
    for i, col in enumerate(t.columns):
        col.overflow = "fold"
        col.no_wrap = i in keep
    for r in rows:
        t.add_row(*[Text(printable(c)) if isinstance(c, str) else Text(printable(c[0]), style=c[1]) for c in r])
    console().print(t)


def line(text: str, style: str | None = None, *, err: bool = False) -> None:
    """Print one line as it is (styled on a terminal; never wrapped or interpreted)."""
    if style and is_tty(err):
        from rich.text import Text

        console(err).print(Text(printable(text), style=style), soft_wrap=True)
    else:
        echo(text, err=err)


def notice(text: str) -> None:
    """Tell the reader (on stderr) what was left out or what happens next."""
    line(text, "yellow", err=True)


class status:  # noqa: N801  (used as ``with status("…"):``)
    """A spinner on a terminal's stderr while the block runs; nothing otherwise."""

    def __init__(self, text: str) -> None:
        self._cm = console(err=True).status(text) if is_tty(err=True) else None

    def __enter__(self) -> None:
        if self._cm is not None:
            self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
