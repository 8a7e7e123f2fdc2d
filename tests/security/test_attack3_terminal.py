"""Attack round 3: text from outside the trust boundary driving the operator's terminal or
hiding itself in the CLI — an MCP server's tool description with escape sequences (clear the
screen, write the clipboard with OSC 52), a package whose declared capabilities are shown on
the accept prompt (``exec: [python3, bash]`` was printed as ``exec:`` because rich took the
argv list for a style tag; ``[conceal]`` hid the rest of a line), an agent's file names.

Fixed in one place (cli/render.py: ``safe`` / ``markup_safe``, used by every table, line and
echo on a terminal and by the rich-markup prints that show such values)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.cli import render

PAYLOADS = ["\x1b]52;c;ZXZpbA==\x07", "\x1b[2J\x1b[H", "\x1b[1A\x1b[2K", "\x9b31m", "\u202eevil", "\x1b]0;title\x07"]
AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The CLI's renderer believing it writes to a terminal, into a buffer."""
    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setattr(render, "is_tty", lambda err=False: True)
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setattr(sys, "stderr", buf)
    con = Console(file=buf, force_terminal=True, width=300, highlight=False)
    monkeypatch.setattr(render, "_consoles", {False: con, True: con})
    return buf


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_mcp_tool_description_cannot_drive_the_terminal_through_agentix_tools(tty, payload):
    render.table(["TOOL", "DESCRIPTION"], [["mcp__evil__read", f"reads a file{payload} quietly"]])
    render.line(f"mcp server said {payload}", "green")
    render.echo(f"log line {payload}")
    out = tty.getvalue()
    assert payload not in out
    assert "\\x1b" in out or "\\x9b" in out or "\\u202e" in out   # shown, visibly


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_no_control_character_survives_safe(text):
    shown = render.safe(text, cell=True)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
                   for c in shown)
    if text.isprintable():
        assert shown == text   # printable text is left alone


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("[]/abc =:#,@"), max_size=30))
def test_markup_safe_text_prints_exactly_itself(text):
    # (backslashes left out: rich's own escape doubles a trailing one, so that a closing tag
    # after it in a longer markup string stays a tag — its rule, not ours)
    con = render.console()   # the CLI's own console (here: not a terminal)
    with con.capture() as cap:
        con.print(render.markup_safe(text))
    assert cap.get() == text + "\n"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_registry_error_message_cannot_hide_or_drive_the_terminal(tty, payload):
    """A registry's own words reach the operator through an error message (``registry_error``):
    the same class as a package's declared capabilities — shown literally and escaped."""
    import click

    from agentix.cli.packages import EXIT_REGISTRY, _registry_errors_exit_6
    from agentix.core.errors import RegistryError

    def fails() -> None:
        raise RegistryError(f"registry said: [conceal]secret[/] {payload}", reason=f"[red]x{payload}")

    cmd = click.Command("pull", callback=fails)
    _registry_errors_exit_6(cmd)
    with pytest.raises(SystemExit) as done:
        cmd.callback()
    assert done.value.code == EXIT_REGISTRY
    out = tty.getvalue()
    assert "[conceal]secret[/]" in out and "[red]x" in out   # taken literally, nothing hidden
    assert payload not in out and ("\\x1b" in out or "\\x9b" in out or "\\u202e" in out)


def test_pipes_get_the_text_as_it_is(capsys):
    render.echo("raw \x1b[1m bytes")
    assert capsys.readouterr().out == "raw \x1b[1m bytes\n"


# ------------------------------------------------------------------ the accept prompt, end to end
AGENTFILE = """\
apiVersion: agentix/v1
metadata: {name: shady, version: 1.0.0}
stages:
  - name: main
    steps: [{copy: agent}]
agent: {program: agent}
capabilities:
  - "exec: [python3, bash]"
  - "tool: echo"
"""


def test_the_accept_prompt_shows_every_declared_capability_in_full(start_kernel: Any, tmp_path: Path) -> None:
    """``exec: [python3, bash]`` used to be printed as ``exec:`` (rich markup ate the argv list):
    the operator was asked to accept an exec grant without seeing which programs. Refused
    (no --accept, no terminal: exit 2) and nothing runs; the message names the whole grant."""
    k = start_kernel()
    ctx = tmp_path / "ctx"
    (ctx / "agent").mkdir(parents=True)
    (ctx / "agent" / "__main__.py").write_text("print('hi')\n")
    (ctx / "Agentfile").write_text(AGENTFILE)
    home = ["--home", str(k.home)]
    b = subprocess.run([*AGENTIX, *home, "build", str(ctx), "-t", "local/shady:1.0.0"], capture_output=True,
                       text=True, timeout=120)
    assert b.returncode == 0, b.stdout + b.stderr
    subprocess.run([*AGENTIX, *home, "trust", "allow-unsigned", "local/*"], capture_output=True, timeout=60, check=True)
    before = len(k.client.call("agent.list", all=True)["agents"])
    r = subprocess.run([*AGENTIX, *home, "run", "local/shady:1.0.0"], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "exec: [python3, bash]" in r.stderr, r.stderr
    assert "tool: echo" in r.stderr
    assert len(k.client.call("agent.list", all=True)["agents"]) == before   # nothing ran
