"""The ``agentix`` command line (click). Built on the SDK only.
(Over 400 lines: the root group and the lifecycle commands (up, down, spawn, run, ps, logs...)
that share its start-up and errors; every other group is a module of its own.)

Errors, exit codes (listed in ``cli/views.py`` and docs/cli.md) and the commands that must
start quickly live in ``cli/views.py``; ``cli/quick.py`` runs those without importing click.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from agentix.cli import render
from agentix.cli.render import line, notice, table
from agentix.cli.views import (
    clock as _clock,
    for_each,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_NO_KERNEL,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Ctx,
    log_lines,
    _resources,
    LOG_LINES,
    _state,
    default_home,
    dump_json,
    parse_message,
    fail,
    guard,
    kv_table,
    show_info,
    show_logs,
    show_ps,
)

if TYPE_CHECKING:
    from agentix.sdk import Kernel

#: what ``agentix run --program``/``spawn --program`` grants when no manifest says otherwise:
#: reading and writing its own workspace, nothing else (docs/quickstart.md, docs/cli.md)
PROGRAM_DEFAULT_GRANTS = ("file_read: /workspace/*", "file_write: /workspace/*")

#: commands defined in other modules, imported only when used (a quick `agentix info`)
LAZY_COMMANDS = {
    "audit": "agentix.cli.audit_cmd:audit",
    "approvals": "agentix.cli.security:approvals",
    "approve": "agentix.cli.security:approve",
    "deny": "agentix.cli.security:deny",
    "caps": "agentix.cli.security:caps",
    "top": "agentix.cli.goal:top",
    "tokens": "agentix.cli.tokens:tokens",
    "mcp": "agentix.cli.mcp_cmd:mcp",
    "a2a": "agentix.cli.a2a_cmd:a2a",
}


class AgentixGroup(click.Group):
    """Turns SDK errors into one clear line and a stable exit code; loads commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            import importlib

            mod, attr = LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(mod), attr), name)
        return self.commands.get(name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return guard(lambda: super(AgentixGroup, self).invoke(ctx))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:  # a CLI bug: keep exit 1 for "the agent failed"
            fail(f"internal error: {err!r}", EXIT_INTERNAL)


@click.group(cls=AgentixGroup)
@click.option("--home", type=click.Path(path_type=Path), envvar="AGENTIX_HOME", default=None,
              help="kernel state directory (default $AGENTIX_HOME or ~/.agentix)")
@click.version_option(package_name="agentix", help="print the version and exit")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """agentix: an operating-system layer for AI agents."""
    ctx.obj = Ctx(default_home(home))


JSON_HELP = "print the result as JSON (for scripts)"


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(f)


# ---------------------------------------------------------------- kernel
def kernel_running(home: Path) -> bool:
    from agentix.sdk import Kernel
    from agentix.sdk.errors import AgentixError

    try:
        with Kernel(home, connect_timeout=1.0) as k:
            k.info()
        return True
    except (AgentixError, OSError):
        return False


def start_kernel(home: Path, isolation: str | None = None, timeout: float = 15.0,
                 extra_args: Sequence[str] = ()) -> int:
    """Start agentixd in the background; return its pid once it answers."""
    import subprocess

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    cmd = [sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home), *extra_args]
    if isolation:
        cmd += ["--isolation", isolation]
    log = open(home / "agentixd.log", "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, close_fds=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (home / "agentixd.log").read_text(errors="replace").strip().splitlines()[-3:]
            fail("the kernel exited at start:\n  " + "\n  ".join(tail), EXIT_INTERNAL if proc.returncode != 3 else EXIT_NO_KERNEL)
        if kernel_running(home):
            return proc.pid
        time.sleep(0.05)
    proc.terminate()
    fail(f"the kernel did not answer within {timeout:g}s; see {home / 'agentixd.log'}", EXIT_INTERNAL)


@cli.command()
@click.option("--foreground", is_flag=True, help="stay attached (logs to the terminal)")
@click.option("--isolation", type=click.Choice(["strict", "degraded"]), default=None,
              help="accept agents without full isolation (degraded) — see docs/isolation.md")
@click.option("--http", "http", metavar="HOST:PORT", default=None,
              help="also serve the operator API over HTTP, e.g. 127.0.0.1:8470 (docs/http.md)")
@click.option("--http-allow-remote", is_flag=True,
              help="allow --http on an address other than loopback (put TLS in front of it)")
@json_option
@click.pass_obj
def up(obj: Ctx, foreground: bool, isolation: str | None, http: str | None, http_allow_remote: bool,
       as_json: bool) -> None:
    """Start the kernel daemon in the background (its log: agentixd.log in the home)."""
    if kernel_running(obj.home):
        fail(f"a kernel is already running for {obj.home}", EXIT_NO_KERNEL)
    extra = (["--http", http] if http else []) + (["--http-allow-remote"] if http_allow_remote else [])
    if foreground:
        # exec the daemon in this process (the CLI sits above the SDK only; it never imports the kernel)
        args = ["--home", str(obj.home), *extra] + (["--isolation", isolation] if isolation else [])
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "agentix.kernel.daemon", *args])
    with render.status("starting the kernel…"):
        pid = start_kernel(obj.home, isolation, extra_args=extra)
    url = dashboard_url(http) if http else None
    if as_json:
        return dump_json({"pid": pid, "home": str(obj.home),
                          **({"http": url.rstrip("/"), "dashboard": url} if url else {})})
    line(f"kernel running pid {pid}, home {obj.home}", "green")
    if url:
        if url.endswith(":0/"):
            line("HTTP API and dashboard on the port the kernel picked (its log names it: "
                 f"{obj.home / 'agentixd.log'})")
        else:
            line(f"dashboard: {url}  (HTTP API: {url}openapi.json, docs/http.md)")
        line("sign in with a token: agentix tokens create NAME --role operator   "
             "(--role viewer: read only)")


def dashboard_url(addr: str) -> str:
    """``http://HOST:PORT/`` for ``--http HOST:PORT`` (IPv6 hosts in brackets)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@cli.command()
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for it to stop")
@json_option
@click.pass_obj
def down(obj: Ctx, timeout: float, as_json: bool) -> None:
    """Stop every agent (SIGTERM, a grace period, SIGKILL), then the kernel."""
    r = obj.kernel.shutdown()
    pid = r["pid"]
    with render.status("stopping agents and the kernel…"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            fail(f"the kernel (pid {pid}) is still running after {timeout:g}s", EXIT_TIMEOUT)
    if as_json:
        return dump_json({"stopped": True, "pid": pid})
    line("kernel stopped", "green")


@cli.command()
@json_option
@click.pass_obj
def info(obj: Ctx, as_json: bool) -> None:
    """Show the kernel's state: version, uptime, agent counts, isolation backend, tools."""
    show_info(obj, as_json)


# ---------------------------------------------------------------- agents
def _spawn(obj: Ctx, target: str | None, program: str | None, name: str | None,
           message: str | None, grants: tuple[str, ...]) -> Any:
    msg = parse_message(message)
    if program and target:
        fail(f"give a MANIFEST ({target}) or --program FILE, not both", EXIT_USAGE)
    if not program and not target:
        fail("give a manifest file or --program FILE", EXIT_USAGE)
    if target:
        p = Path(target)
        if not p.exists():
            fail(f"{target}: no such manifest file", EXIT_USAGE)
        if p.suffix == ".py" or p.is_dir():
            program = target
        else:
            if grants:
                fail("--grant applies to --program; put a manifest's grants in its `capabilities:`",
                     EXIT_USAGE)
            return obj.kernel.spawn(manifest_path=p, name=name, message=msg)
    # a program without a manifest: its own workspace, plus what --grant adds
    caps = [*PROGRAM_DEFAULT_GRANTS, *(g for g in grants if g not in PROGRAM_DEFAULT_GRANTS)]
    return obj.kernel.spawn(program=str(Path(program or "").resolve()), name=name, message=msg,
                            capabilities=caps)


def _spawn_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--program", "-p", type=click.Path(exists=True),
                     help="a Python file or package directory (with __main__.py) to run"),
        click.option("--name", "-n", help="agent name (default: from the manifest or program)"),
        click.option("--message", "-m", help="first message for the agent's mailbox (JSON or text)"),
        click.option("--grant", "-G", "grants", multiple=True, metavar="GRANT",
                     help="with --program: a grant in addition to its workspace, e.g. "
                          "'tool: echo' (repeatable; see docs/security.md)"),
    ]):
        f = opt(f)
    return f


@cli.command()
@click.argument("manifest", required=False)
@_spawn_options
@json_option
@click.pass_obj
def spawn(obj: Ctx, manifest: str | None, program: str | None, name: str | None,
          message: str | None, grants: tuple[str, ...], as_json: bool) -> None:
    """Start an agent from a MANIFEST (YAML/JSON) or --program FILE; do not wait."""
    r = _spawn(obj, manifest, program, name, message, grants)
    if as_json:
        return dump_json(r.to_dict())
    missing = r.isolation.get("missing_layers") or []
    line(f"spawned {r.name} {r.agent_id} pid {r.pid}"
         + (f" (degraded: no {', '.join(missing)})" if missing else ""), "green")


def last_error_line(k: Kernel, agent_id: str) -> str | None:
    """The last non-blank line of an agent's log (for a Python crash: the exception)."""
    for ln in reversed(log_lines(k, agent_id, 20, head=False)["lines"]):
        if ln.strip():
            return ln.strip()
    return None


@cli.command()
@click.argument("manifest", required=False)
@_spawn_options
@click.option("--timeout", type=float, default=None,
              help="stop waiting after this many seconds (exit 5); the agent keeps running")
@click.option("--goal", "-g", help="run this goal through the orchestrator (MANIFEST overrides its "
                                   "bootstrap manifest); see docs/agents.md")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="with --goal: copy the results here")
@json_option
@click.pass_obj
def run(obj: Ctx, manifest: str | None, program: str | None, name: str | None, message: str | None,
        grants: tuple[str, ...], timeout: float | None, goal: str | None, output: str | None,
        as_json: bool) -> None:
    """Spawn an agent, wait for it, print its outcome and result; exit 1 if it failed.

    When the agent did not complete, also prints the reason: the last line of its log.

    With --goal: decompose the goal into subtasks run by child agents, stream their
    progress, then tokens, cost, time and outcome per agent; --output DIR gets the results;
    exit 1 unless every subtask completed (docs/agents.md)."""
    if goal is not None:
        ignored = [o for o, v in (("--program", program), ("--name", name), ("--message", message),
                                  ("--grant", grants)) if v]
        if ignored:
            fail(f"{', '.join(ignored)} cannot be used with --goal (the orchestrator is a built-in "
                 "program; give a MANIFEST to change its bootstrap manifest)", EXIT_USAGE)
        from agentix.cli.goal import run_goal

        sys.exit(run_goal(obj.kernel, goal, output=output, manifest=manifest, timeout=timeout,
                          as_json=as_json, console=render.console()))
    if output is not None:
        fail("--output applies to --goal only", EXIT_USAGE)
    from agentix.sdk.errors import Timeout

    r = _spawn(obj, manifest, program, name, message, grants)
    if not as_json:
        line(f"started {r.name} {r.agent_id}", err=True)
    try:
        with render.status(f"running {r.name} ({r.agent_id})…"):
            a = obj.kernel.wait(r.agent_id, timeout=timeout)
    except Timeout:
        if as_json:
            dump_json({"agent_id": r.agent_id, "name": r.name, "state": "running", "timed_out": True})
        fail(f"{r.name} {r.agent_id} is still running after {timeout:g}s; it keeps running "
             f"(`agentix logs {r.agent_id}`, `agentix stop {r.agent_id}`)", EXIT_TIMEOUT)
    ok = a.reason == "completed"
    why = None if ok else last_error_line(obj.kernel, a.agent_id)
    if as_json:
        dump_json({**a.raw, "error_line": why} if not ok else a.raw)
    else:
        ex = a.exit or {}
        line(f"{a.name} {a.agent_id} {a.reason} (code {ex.get('code')}"
             + (f", signal {ex['signal']}" if ex.get("signal") else "") + ")"
             + (f" — {ex['detail']}" if ex.get("detail") else ""), "green" if ok else "red")
        if why:
            line(f"reason: {why}")
        if not ok:
            line(f"the whole log: agentix logs {a.agent_id}")
        if a.result is not None:
            click.echo(render.for_terminal(json.dumps(a.result, indent=2, default=str, ensure_ascii=False)))
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


@cli.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="include exited agents")
@click.option("--tree", is_flag=True, help="show the parent/child tree (exited agents included)")
@json_option
@click.pass_obj
def ps(obj: Ctx, show_all: bool, tree: bool, as_json: bool) -> None:
    """List agents (live ones; --all for every record)."""
    show_ps(obj, show_all, tree, as_json)


@cli.command()
@click.argument("agent")
@json_option
@click.pass_obj
def inspect(obj: Ctx, agent: str, as_json: bool) -> None:
    """Show everything about one agent (by id, or by name: the live one, else the latest)."""
    a = obj.kernel.status(agent).raw
    if as_json:
        return dump_json(a)
    rows = []
    for key in ("agent_id", "name", "state", "pid", "parent", "depth", "children", "runtime_s",
                "syscalls", "workspace", "log", "exit", "result", "isolation", "limits", "taint",
                "mailbox"):
        val = a.get(key)
        rows.append((key, _state(a) if key == "state" else json.dumps(val, default=str)
                     if isinstance(val, (dict, list)) else str(val)))
    kv_table(rows + _resources(a))


def _control(verb: str) -> Any:
    @click.argument("agents", nargs=-1, required=True)
    @json_option
    @click.pass_obj
    def command(obj: Ctx, agents: tuple[str, ...], as_json: bool) -> None:
        def act(agent: str) -> dict[str, Any]:
            with render.status(f"{verb} {agent}…"):
                return getattr(obj.kernel, verb)(agent).raw

        for_each(agents, act, lambda a: line(f"{a['name']} {a['agent_id']} {_state(a)}"), as_json)

    return command


for _verb, _help in [("stop", "Stop agents: SIGTERM, a grace period, then SIGKILL; subtrees too."),
                     ("kill", "Kill agents at once (SIGKILL); subtrees too."),
                     ("pause", "Freeze agents."), ("resume", "Thaw paused agents.")]:
    cli.command(name=_verb, help=_help + " Acts on each AGENT (id or name) and reports each; "
                "exits non-zero if any failed.")(_control(_verb))


@cli.command()
@click.argument("agent")
@click.option("--lines", "-n", "count", type=click.IntRange(min=0), default=LOG_LINES, show_default=True,
              help="how many lines to show; 0 for the whole log")
@click.option("--head", is_flag=True, help="show the first lines instead of the last")
@click.option("--follow", "-f", is_flag=True, help="then keep printing new output until the agent exits")
@json_option
@click.pass_obj
def logs(obj: Ctx, agent: str, count: int, head: bool, follow: bool, as_json: bool) -> None:
    """Print the end of an agent's stdout and stderr (-n, --head); says when it left lines out."""
    show_logs(obj, agent, count, head, follow, as_json)


@cli.command()
@click.argument("agent")
@click.argument("message")
@json_option
@click.pass_obj
def send(obj: Ctx, agent: str, message: str, as_json: bool) -> None:
    """Put MESSAGE (JSON or text) in AGENT's mailbox."""
    r = obj.kernel.send(agent, parse_message(message))
    if as_json:
        return dump_json(r)
    line(f"delivered to {r['to']} ({r['queued']} queued)")


@cli.command()
@json_option
@click.pass_obj
def tools(obj: Ctx, as_json: bool) -> None:
    """List the kernel's tools."""
    data = obj.kernel.tools()
    if as_json:
        return dump_json(data)
    table(["TOOL", "DESCRIPTION"], [[t["name"], t["description"]] for t in data])


EVENT_COUNT = 100


def event_line(e: dict[str, Any]) -> str:
    return (f"{e['seq']:>6} {_clock(e['ts'])} {e['kind']} {e['agent'] or '-'} "
            f"{json.dumps(e['data'], default=str, ensure_ascii=False)}")


@cli.command()
@click.option("--agent", help="only this agent's events")
@click.option("--kind", help="only this kind (or prefix, e.g. 'agent')")
@click.option("-n", "count", type=click.IntRange(min=1), default=EVENT_COUNT, show_default=True,
              help="how many of the latest events to show")
@click.option("--follow", "-f", is_flag=True, help="then keep printing new events (Ctrl-C stops)")
@click.option("--json", "as_json", is_flag=True, help="one JSON event per line")
@click.pass_obj
def events(obj: Ctx, agent: str | None, kind: str | None, count: int, follow: bool,
           as_json: bool) -> None:
    """Print the latest events of the kernel's record (says when older ones are not shown)."""
    evs = obj.kernel.events(0, agent=agent, kind=kind, limit=count + 1)
    if len(evs) > count:
        evs = evs[-count:]
        notice("[older events not shown; `agentix events -n N` shows more, `agentix audit export` "
               "all of them]")
    after = 0
    while True:
        for e in evs:
            after = max(after, e["seq"])
            click.echo(json.dumps(e, default=str) if as_json else render.for_terminal(event_line(e)))
        if not follow:
            break
        evs = obj.kernel.events(after, agent=agent, kind=kind, wait=1.0)


def host_layers() -> list[dict[str, Any]]:
    """The host probe's rows (``python -m agentix.sandbox.doctor``: the CLI never loads sandbox code)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "agentix.sandbox.doctor"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        fail(f"the host probe failed: {proc.stderr.strip()[-500:]}", EXIT_INTERNAL)
    return [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]


@cli.command()
@json_option
def doctor(as_json: bool) -> None:
    """Report which isolation layers work on this host, and why not (exit 1 if any is missing)."""
    rows = host_layers()
    if as_json:
        dump_json(rows)
    else:
        table(["LAYER", "STATUS", "DETAIL"],
              [[str(r["layer"]), ("ok", "green") if r["ok"] else ("unavailable", "red"),
                str(r.get("why", ""))] for r in rows])
        missing = [r["layer"] for r in rows if not r["ok"]]
        if not missing:
            line("every layer works: agents run strictly isolated", "green")
        else:
            line(f"missing: {', '.join(missing)} — spawns are refused unless `isolation: degraded` "
                 "is accepted", "yellow")
    sys.exit(EXIT_OK if all(r["ok"] for r in rows) else EXIT_FAILED)


@cli.command()
@click.option("--home", "demo_home", type=click.Path(path_type=Path), default=None,
              help="kernel home for the demo (default: a new temporary directory)")
@click.option("--json", "as_json", is_flag=True, help="print the account as JSON")
def demo(demo_home: Path | None, as_json: bool) -> None:
    """Run the demo: a team with a crash, isolation under misbehaviour, ten agents sharing a model."""
    from rich.console import Console  # the demo is a show for a terminal: rules, live tables

    from agentix.demo import Host, run_demo

    host = Host(start_kernel=start_kernel, kernel_running=kernel_running, probe=host_layers)
    sys.exit(run_demo(demo_home, host, as_json=as_json, console=Console()))

from agentix.cli.packages import install as _install_packages  # noqa: E402

_install_packages(cli)  # build, push, pull, sign, keys, trust, packages; `run REF`

def main() -> None:
    cli(prog_name="agentix")


if __name__ == "__main__":
    main()
