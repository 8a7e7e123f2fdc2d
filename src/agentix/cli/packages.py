"""``agentix build/push/pull/sign``, ``agentix keys …``, ``agentix trust …``,
``agentix packages ls/inspect/verify/rm`` and ``agentix run REF`` (docs/packages.md).

Every command is a call of the kernel's ``package.*``, ``keys.*`` and ``trust.*`` methods
(the kernel holds the store, the keys and the audit log). ``install(cli)`` adds them to the
main group and teaches ``agentix run`` to take a package reference (``--accept`` says which
declared capabilities the operator accepts).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentix.cli import render
from agentix.cli.onecall import CallRow, Params, command
from agentix.cli.views import EXIT_REGISTRY, dump_json, kernel_of, parse_message
from agentix.sdk.errors import NotFound, RegistryError

if TYPE_CHECKING:
    from agentix.sdk import Kernel

__all__ = ["install", "EXIT_REGISTRY"]


def _pulled(r: dict[str, Any], _: Params) -> None:
    v = r["verdict"]
    basis = f"signed by {v['keyid']}" if v["basis"] == "signed" else "[yellow]unsigned (allowed by policy)[/]"
    render.console().print(f"[green]pulled[/] {render.markup_safe(r['ref'])} {r['digest']} — {basis}")


def _key_made(r: dict[str, Any], _: Params) -> None:
    render.console().print(f"key [bold]{render.markup_safe(r['name'])}[/] ({r['keyid']})")
    click.echo(r["public_key"])


def _key_rows(rows: list[dict[str, Any]], _: Params) -> None:
    for k in rows:
        click.echo(f"{k['name']}\t{k['keyid']}\t{k['public_key']}")


def _build(k: Kernel, p: Params) -> Any:
    return k.call("package.build", context=str(Path(p["context"]).resolve()), tag=p["tag"],
                  agentfile=str(Path(p["agentfile"]).resolve()) if p["agentfile"] else None)


_REF = click.Argument(["ref"])
_ALLOW_ROLLBACK = click.Option(["--allow-rollback"], is_flag=True, help="accept a version older than one seen before")

build = command(CallRow(
    "build", _build, "Build the Agentfile in CONTEXT into a package in the local store.",
    [click.Argument(["context"], default=".", type=click.Path(exists=True, file_okay=False)),
     click.Option(["--tag", "-t"], required=True,
                  help="NAME:TAG, e.g. team/hello:1.0.0 or HOST:PORT/team/hello:1.0.0"),
     click.Option(["--file", "-f", "agentfile"], type=click.Path(exists=True, dir_okay=False),
                  help="the Agentfile (default: CONTEXT/Agentfile[.yaml|.json])")],
    lambda r, _: render.console().print(f"[green]built[/] {render.markup_safe(r['ref'])} [bold]{r['digest']}[/] ({len(r['layers'])} layers, "
                           f"{sum(r['cached'])} from cache)")))
sign = command(CallRow(
    "sign", "package.sign", "Sign a local package (its digest, name and version) with a signing key.",
    [_REF, click.Option(["--key", "-k"], default="default", show_default=True, help="the signing key's name")],
    lambda r, _: render.console().print(f"[green]signed[/] {render.markup_safe(r['name'])} {render.markup_safe(r['version'])} {r['digest']} with key {r['keyid']}")))
push = command(CallRow(
    "push", "package.push", "Push a local package (and its signatures) to its registry.", [_REF],
    lambda r, _: render.console().print(f"[green]pushed[/] {render.markup_safe(r['ref'])} {r['digest']} ({r['blobs_sent']} blobs sent, "
                           f"{r['signatures']} signatures)")))
pull = command(CallRow(
    "pull", "package.pull", "Pull a package, verify it against the trust policy, and store it locally.",
    [_REF, _ALLOW_ROLLBACK], _pulled))


@click.group()
def keys() -> None:
    """Signing keys (kept in $AGENTIX_HOME/keys/signing)."""


keys.add_command(command(CallRow(
    "generate", "keys.generate",
    "Create an Ed25519 signing key; print its public key (give that to those who trust you).",
    [click.Argument(["name"], default="default")], _key_made)))
keys.add_command(command(CallRow(
    "list", "keys.list", "List signing keys and their public keys.", field="keys",
    show=_key_rows)))


@click.group()
def trust() -> None:
    """The trust policy: whose signatures count for which package names."""


trust.add_command(command(CallRow(
    "add", "trust.add",
    "Trust KEY (ed25519:…, a file holding it, or a local key's name) for names matching PATTERN.",
    [click.Argument(["key"]),
     click.Option(["--for", "pattern"], required=True,
                  help='names the key counts for, e.g. "registry.example/team/*"')],
    lambda r, p: render.console().print(f"[green]trusted[/] {render.markup_safe(p['key'] if len(p['key']) < 40 else p['key'][:40] + '…')} "
                           f"for {render.markup_safe(p['pattern'])}"))))
trust.add_command(command(CallRow(
    "allow-unsigned", "trust.allow_unsigned",
    "Accept unsigned packages for names matching PATTERN (each acceptance is audited).",
    [click.Argument(["pattern"])],
    lambda r, p: render.console().print(f"[yellow]unsigned packages accepted[/] for {render.markup_safe(p['pattern'])}"))))
trust.add_command(command(CallRow("list", "trust.list", "Show the trust policy.")))


@click.group()
def packages() -> None:
    """The local package store."""


packages.add_command(command(CallRow(
    "ls", "package.list", "List local packages.", field="packages",
    show=lambda rows, _: render.table(["REF", "DIGEST", "SIGNED"],
                                      [[r["ref"], r["digest"], "yes" if r["signed"] else "no"] for r in rows]))))
packages.add_command(command(CallRow(
    "inspect", "package.inspect",
    "Everything about a local package: metadata, declared capabilities, layers, signatures.", [_REF])))
packages.add_command(command(CallRow(
    "verify", "package.verify", "Check a local package against the trust policy (exit 4 if refused).", [_REF])))
packages.add_command(command(CallRow(
    "rm", "package.rm", "Remove a tag from the local store (and blobs nothing else uses).", [_REF],
    lambda r, _: render.console().print(f"[green]removed[/] {render.markup_safe(r['ref'])} ({r['blobs_removed']} blobs freed)"))))
packages.add_command(command(CallRow(
    "gc", "package.gc", "Remove the blobs and unpacked trees no tag in the local store needs, and "
    "temporary files of writes that died.",
    show=lambda r, _: render.console().print(f"[green]removed[/] {r['blobs_removed']} blobs, "
                                             f"{r['unpacked_removed']} unpacked trees, "
                                             f"{r['temp_removed']} temporary files"))))


# ---------------------------------------------------------------- agentix run REF
def _is_package_ref(target: str | None) -> bool:
    if not target or Path(target).exists():
        return False
    head = target.split("@")[0]
    return ("/" in head or ":" in head) and not target.endswith((".py", ".yaml", ".yml", ".json"))


def _declared(k: Kernel, ref: str) -> list[str]:
    try:
        return k.call("package.inspect", ref=ref)["capabilities"]
    except NotFound:
        k.call("package.pull", ref=ref)
        return k.call("package.inspect", ref=ref)["capabilities"]


def _accept(k: Kernel, ref: str, accept: tuple[str, ...]) -> str | list[str]:
    if accept:
        return "all" if accept == ("all",) else list(accept)
    declared = _declared(k, ref)
    if not declared:
        return []
    if not sys.stdin.isatty():
        render.console(err=True).print(f"[bold red]error:[/] {render.markup_safe(ref)} declares these capabilities:\n  "
                          + "\n  ".join(map(render.markup_safe, declared))
                          + "\naccept them with --accept all, or some with --accept 'GRANT' (repeatable)")
        sys.exit(2)
    # the package's own words (its config): shown literally, so `exec: [python3, bash]` is not
    # taken for a style tag and no `[conceal]` or escape sequence hides a line of it
    render.console().print(f"{render.markup_safe(ref)} declares:\n  " + "\n  ".join(map(render.markup_safe, declared)))
    if not click.confirm("accept all of them?", default=False):
        sys.exit(2)
    return "all"


def _wrap_run(run_cmd: click.Command) -> None:
    """Give ``agentix run`` package references: ``agentix run team/hello:1.0.0 --accept all``."""
    original = run_cmd.callback
    assert original is not None
    run_cmd.params.append(click.Option(["--accept"], multiple=True,
                                       help="for a package: a declared capability to grant (repeatable), or 'all'"))
    run_cmd.params.append(click.Option(["--allow-rollback"], is_flag=True,
                                       help="for a package: accept a version older than one seen before"))
    run_cmd.help = (run_cmd.help or "") + "\n\nMANIFEST may be a package reference (NAME:TAG, NAME@DIGEST): " \
        "it is pulled if needed, verified, and run with the capabilities it declares that --accept grants."

    def callback(**kw: Any) -> Any:
        accept, allow_rollback = kw.pop("accept"), kw.pop("allow_rollback")
        target = kw.get("manifest")
        if not _is_package_ref(target) or kw.get("program") or kw.get("goal"):
            return original(**kw)
        ctx = click.get_current_context()
        k = kernel_of(ctx)
        r = k.call("package.run", ref=target, accept=_accept(k, target, accept), name=kw.get("name"),
                   message=parse_message(kw.get("message")), allow_rollback=allow_rollback)
        if not kw.get("as_json"):
            render.console(err=True).print(f"[green]verified[/] {render.markup_safe(target)} ({r['verdict']['basis']}); granted: "
                              + (render.markup_safe(", ".join(r["granted"])) or "nothing"))
        a = k.wait(r["agent_id"], timeout=kw.get("timeout"))
        if kw.get("as_json"):
            dump_json({**a.raw, "package": {k_: r[k_] for k_ in ("digest", "declared", "granted", "verdict")}})
        else:
            ex = a.exit or {}
            colour = "green" if a.reason == "completed" else "red"
            render.console().print(f"[{colour}]{render.markup_safe(a.name)} {a.reason}[/] (code {ex.get('code')})"
                      + (f" — {render.markup_safe(ex['detail'])}" if ex.get("detail") else ""))
            if a.result is not None:
                render.console().print_json(data=a.result)
        sys.exit(0 if a.reason == "completed" else 1)

    run_cmd.callback = callback


def _registry_errors_exit_6(cmd: click.Command) -> None:
    inner = cmd.callback
    assert inner is not None

    def callback(*a: Any, **kw: Any) -> Any:
        try:
            return inner(*a, **kw)
        except RegistryError as err:
            reason = err.data.get("reason")
            render.console(err=True).print(f"[bold red]error:[/] {render.markup_safe(err.message)}"  # the registry's own words
                                     + (f" [dim]({render.markup_safe(reason)})[/]" if reason else ""))
            sys.exit(EXIT_REGISTRY)

    cmd.callback = callback


def install(cli: click.Group) -> None:
    from agentix.cli.snapshots import COMMANDS as snapshot_commands

    for cmd in (build, sign, push, pull, keys, trust, packages, *snapshot_commands):
        cli.add_command(cmd)
    _wrap_run(cli.commands["run"])
    for cmd in (push, pull, cli.commands["run"]):
        _registry_errors_exit_6(cmd)
