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

__all__ = ["Cell", "columns", "console", "echo", "for_terminal", "is_tty", "line", "markup_safe", "notice",
           "safe", "status", "table"]

# Text from outside the trust boundary (an MCP server's tool descriptions, a package's declared
# capabilities, an agent's output and file names) must not drive the operator's terminal: ESC
# sequences can clear lines, retitle the window or write the clipboard (OSC 52), bidi overrides
# reorder what is shown. On a terminal they are shown as visible escapes (``\x1b``); a table
# cell shows newlines and tabs that way too (a cell is one line). Pipes and files get text as it is.
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0),
             0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SAFE = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_SAFE_CELL = {**_SAFE, 0x09: "\\t", 0x0A: "\\n"}


def safe(text: str, *, cell: bool = False) -> str:
    """``text`` with control characters (C0 but newline and tab, DEL, C1, bidi controls) as
    visible escapes; with ``cell``, newline and tab too."""
    return text.translate(_SAFE_CELL if cell else _SAFE)


def markup_safe(text: object) -> str:
    """``text`` for a rich markup string: control characters escaped (``safe``) and its square
    brackets taken literally (``exec: [python3, bash]`` is not a style tag, ``[conceal]`` hides
    nothing)."""
    from rich.markup import escape

    return escape(safe(str(text)))


#: a table cell: text, or (text, rich style) — the style is used only on a terminal
Cell = str | tuple[str, str]

_consoles: dict[bool, Console] = {}

def for_terminal(text: str, err: bool = False) -> str:
    """``safe(text)`` when the stream is a terminal; ``text`` as it is otherwise (``agentix
    logs NAME | cat`` is the raw output)."""
    return safe(text) if is_tty(err) else text


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
        # no emoji codes: ``:warning:`` in an agent's or a server's text stays those characters
        _consoles[err] = Console(stderr=err, soft_wrap=not tty, width=None if tty else 100_000,
                                 no_color=not tty, highlight=False, emoji=False)
    return _consoles[err]


def echo(text: str = "", err: bool = False) -> None:
    """Write one line (no click: ``agentix info`` must start quickly, see cli/quick.py)."""
    stream = sys.stderr if err else sys.stdout
    if is_tty(err):
        text = safe(text)
    stream.write(text + "\n")
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
    rows = [[safe(c, cell=True) if isinstance(c, str) else (safe(c[0], cell=True), c[1]) for c in r] for r in rows]
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
        t.add_row(*[Text(c) if isinstance(c, str) else Text(c[0], style=c[1]) for c in r])
    console().print(t)


def line(text: str, style: str | None = None, *, err: bool = False) -> None:
    """Print one line as it is (styled on a terminal; never wrapped or interpreted)."""
    if style and is_tty(err):
        from rich.text import Text

        console(err).print(Text(safe(text), style=style), soft_wrap=True)
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
