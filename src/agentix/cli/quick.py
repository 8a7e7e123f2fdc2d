"""The ``agentix`` entry point: ``info``, ``ps`` and ``logs`` without importing click.

Importing click costs about as much as starting Python itself, and ``agentix info`` /
``ps`` / ``logs`` are what a person (or a script polling the kernel) runs most. When the
command line is one of those in a plain form — the options listed in ``QUICK`` (each flag
spelled exactly), ``--home DIR`` before the command — it runs the same function the click
command runs (``cli/views.py``), with the same output and exit codes. Anything else (help,
an unknown or malformed option, any other command) goes to the full click CLI in
``cli/main.py``, which then parses and reports errors as usual. tests/kernel/test_cli_truth.py
checks that both paths print the same thing.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["QUICK", "main", "parse"]

#: command -> (flags -> parameter, options taking a value -> parameter, positional parameters)
QUICK: dict[str, tuple[dict[str, str], dict[str, str], tuple[str, ...]]] = {
    "info": ({"--json": "as_json"}, {}, ()),
    "ps": ({"--all": "show_all", "-a": "show_all", "--tree": "tree", "--json": "as_json"}, {}, ()),
    "logs": ({"--head": "head", "--follow": "follow", "-f": "follow", "--json": "as_json"},
             {"-n": "count", "--lines": "count"}, ("agent",)),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "info": {"as_json": False},
    "ps": {"show_all": False, "tree": False, "as_json": False},
    "logs": {"count": 100, "head": False, "follow": False, "as_json": False},
}


def parse(argv: list[str]) -> tuple[str | None, str, dict[str, Any]] | None:
    """``(home, command, params)`` for a quick command line, else None (use click)."""
    home = None
    args = list(argv)
    if args[:1] == ["--home"] and len(args) >= 2 and not args[1].startswith("-"):
        home, args = args[1], args[2:]
    if not args or args[0] not in QUICK:
        return None
    cmd, rest = args[0], args[1:]
    flags, valued, positional = QUICK[cmd]
    params = dict(DEFAULTS[cmd])
    pos: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in flags:
            params[flags[a]] = True
        elif a in valued and i + 1 < len(rest) and rest[i + 1].isdigit():
            params[valued[a]] = int(rest[i + 1])
            i += 1
        elif a.startswith("-"):
            return None
        else:
            pos.append(a)
        i += 1
    if len(pos) != len(positional):
        return None
    params.update(zip(positional, pos))
    if cmd == "logs" and params["as_json"] and params["follow"]:
        return None  # click reports that these do not go together
    return home, cmd, params


def main() -> None:
    plan = parse(sys.argv[1:])
    if plan is None:
        from agentix.cli.main import main as full

        full()
        return
    from agentix.cli import views

    home, cmd, params = plan
    obj = views.Ctx(views.default_home(home))
    run = {"info": views.show_info, "ps": views.show_ps, "logs": views.show_logs}[cmd]
    try:
        views.guard(lambda: run(obj, **params))
    except KeyboardInterrupt:
        views.echo("Aborted!", err=True)
        sys.exit(1)
    except Exception as err:  # a CLI bug: the same answer as the click path gives
        views.fail(f"internal error: {err!r}", views.EXIT_INTERNAL)
    sys.exit(0)


if __name__ == "__main__":
    main()
