"""docs/cli.md matches the real command tree: every command and option, each with help text."""

from __future__ import annotations

from pathlib import Path

import click

from agentix.cli.main import cli
from agentix.cli.reference import BEGIN, END, commands, reference, splice

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
#: commands whose output is JSON already (no --json needed)
JSON_ALREADY = {("agentix", "audit", "prove"), ("agentix", "audit", "head"), ("agentix", "audit", "export"),
                ("agentix", "trust", "list"), ("agentix", "packages", "inspect"), ("agentix", "packages", "verify")}
#: commands whose stdout is a protocol, not text for a person (so no --json)
PROTOCOL = {("agentix", "mcp"), ("agentix", "a2a", "serve")}


def test_cli_md_is_the_generated_reference() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert BEGIN in doc and END in doc
    assert splice(doc, reference()) == doc, (
        "docs/cli.md differs from the command tree: run `python -m agentix.cli.reference --write`")


def test_every_command_and_option_is_in_cli_md() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for path, cmd, ctx in commands():
        assert f"### `{' '.join(path)}" in doc, f"{' '.join(path)} is missing from docs/cli.md"
    # the ones the issue found missing
    for needle in ("agentix approvals", "agentix approve", "agentix deny", "agentix caps ls",
                   "agentix caps revoke", "agentix doctor", "agentix logs", "agentix events"):
        assert f"### `{needle} " in doc, needle
    down = doc.split("### `agentix down")[1].split("###")[0]
    assert "`--timeout`" in down
    run = doc.split("### `agentix run ")[1].split("###")[0]
    assert "`--name`, `-n`" in run and "`--message`, `-m`" in run and "`--grant`" in run


def test_every_command_and_option_has_help_text() -> None:
    missing = []
    for path, cmd, ctx in commands():
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for p in cmd.get_params(ctx):
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert not missing, f"no --help text: {missing}"


def test_every_command_that_prints_text_takes_json() -> None:
    lacking = [" ".join(path) for path, cmd, ctx in commands()
               if not isinstance(cmd, click.Group) and path not in JSON_ALREADY | PROTOCOL
               and not any("--json" in p.opts for p in cmd.get_params(ctx) if isinstance(p, click.Option))]
    assert not lacking, f"no --json: {lacking}"


def test_the_tree_walk_sees_lazy_commands() -> None:
    names = {path[1] for path, _, _ in commands()}
    assert {"audit", "caps", "top", "approvals", "run", "logs"} <= names
    assert isinstance(cli, click.Group)
