"""The ``agentix`` command line. Built on the SDK only.

Exit codes (stable):

    0  success
    1  the agent ran and failed (``run``: crashed, killed, oom, timeout ...)
    2  bad usage or bad input (a bad manifest, an unknown agent)
    3  no kernel is running (or one is already running, for ``up``)
    4  refused by the kernel (capability, taint, approval, budget, isolation)
    5  timed out waiting
    10 internal error
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from agentix.sdk import Kernel
from agentix.sdk.errors import AgentixError, KernelNotRunning, RefusedError, RequestError, Timeout

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_KERNEL, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_INTERNAL = 0, 1, 2, 3, 4, 5, 10

out = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    sys.exit(code)


def exit_code_for(err: AgentixError) -> int:
    if isinstance(err, KernelNotRunning):
        return EXIT_NO_KERNEL
    if isinstance(err, Timeout):
        return EXIT_TIMEOUT
    if isinstance(err, RefusedError):
        return EXIT_REFUSED
    if isinstance(err, RequestError) or err.code == "conflict":
        return EXIT_USAGE
    return EXIT_INTERNAL


class Ctx:
    def __init__(self, home: Path) -> None:
        self.home = home
        self._kernel: Kernel | None = None

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            self._kernel = Kernel(self.home)
        return self._kernel


class AgentixGroup(click.Group):
    """Turns SDK errors into one clear line and a stable exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgentixError as err:
            detail = ""
            extra = {k: v for k, v in err.data.items() if k not in ("error",)}
            if extra and err.code not in ("internal_error",):
                detail = f" [dim]({err.code})[/]"
            fail(f"{err.message}{detail}", exit_code_for(err))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (ConnectionError, OSError) as err:
            fail(f"lost the connection to the kernel: {err}", EXIT_INTERNAL)
        except Exception as err:  # a CLI bug: keep exit 1 for "the agent failed"
            fail(f"internal error: {err!r}", EXIT_INTERNAL)


@click.group(cls=AgentixGroup)
@click.option("--home", type=click.Path(path_type=Path), envvar="AGENTIX_HOME", default=None,
              help="kernel state directory (default $AGENTIX_HOME or ~/.agentix)")
@click.version_option(package_name="agentix")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """agentix: an operating-system layer for AI agents."""
    ctx.obj = Ctx((home or Path.home() / ".agentix").expanduser().resolve())


def dump_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------- kernel
def kernel_running(home: Path) -> bool:
    try:
        with Kernel(home, connect_timeout=1.0) as k:
            k.info()
        return True
    except (AgentixError, OSError):
        return False


def start_kernel(home: Path, isolation: str | None = None, timeout: float = 15.0) -> int:
    """Start agentixd in the background; return its pid once it answers."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    cmd = [sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home)]
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
@click.pass_obj
def up(obj: Ctx, foreground: bool, isolation: str | None) -> None:
    """Start the kernel daemon."""
    if kernel_running(obj.home):
        fail(f"a kernel is already running for {obj.home}", EXIT_NO_KERNEL)
    if foreground:
        # exec the daemon in this process (the CLI sits above the SDK only; it never imports the kernel)
        args = ["--home", str(obj.home)] + (["--isolation", isolation] if isolation else [])
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "agentix.kernel.daemon", *args])
    with out.status("starting the kernel…"):
        pid = start_kernel(obj.home, isolation)
    out.print(f"[green]kernel running[/] pid {pid}, home {obj.home}")


@cli.command()
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for it to stop")
@click.pass_obj
def down(obj: Ctx, timeout: float) -> None:
    """Stop the kernel (its agents are stopped first)."""
    r = obj.kernel.shutdown()
    pid = r["pid"]
    with out.status("stopping agents and the kernel…"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            fail(f"the kernel (pid {pid}) is still running after {timeout:g}s", EXIT_TIMEOUT)
    out.print("[green]kernel stopped[/]")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def info(obj: Ctx, as_json: bool) -> None:
    """Show the kernel's state."""
    data = obj.kernel.info()
    if as_json:
        return dump_json(data)
    t = Table(show_header=False, box=None)
    t.add_row("version", data["version"])
    t.add_row("pid", str(data["pid"]))
    t.add_row("home", data["home"])
    t.add_row("uptime", f"{data['uptime_s']:.1f}s")
    t.add_row("agents", f"{data['agents']['live']} live / {data['agents']['total']} total")
    iso = data["isolation"]
    t.add_row("isolation", f"{iso.get('backend')} (default {iso.get('default')})"
              + (f", missing: {', '.join(iso['missing_layers'])}" if iso.get("missing_layers") else ""))
    t.add_row("system calls", f"{data['syscalls']['calls']} ({data['syscalls']['refusals']} refused)")
    t.add_row("tools", ", ".join(data["tools"]))
    out.print(t)


# ---------------------------------------------------------------- agents
def _spawn(obj: Ctx, target: str | None, program: str | None, name: str | None, message: str | None) -> Any:
    msg: Any = None
    if message is not None:
        try:
            msg = json.loads(message)
        except json.JSONDecodeError:
            msg = message
    if program:
        return obj.kernel.spawn(program=str(Path(program).resolve()), name=name, message=msg)
    if not target:
        fail("give a manifest file or --program FILE", EXIT_USAGE)
    p = Path(target)
    if not p.exists():
        fail(f"{target}: no such manifest file", EXIT_USAGE)
    if p.suffix == ".py" or p.is_dir():
        return obj.kernel.spawn(program=str(p.resolve()), name=name, message=msg)
    return obj.kernel.spawn(manifest_path=p, name=name, message=msg)


@cli.command()
@click.argument("manifest", required=False)
@click.option("--program", "-p", type=click.Path(exists=True), help="a Python file or package directory to run")
@click.option("--name", "-n", help="agent name (default: from the manifest or program)")
@click.option("--message", "-m", help="first message for the agent's mailbox (JSON or text)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def spawn(obj: Ctx, manifest: str | None, program: str | None, name: str | None,
          message: str | None, as_json: bool) -> None:
    """Start an agent from a MANIFEST (YAML/JSON) or --program FILE."""
    r = _spawn(obj, manifest, program, name, message)
    if as_json:
        return dump_json(r.__dict__)
    missing = r.isolation.get("missing_layers") or []
    out.print(f"[green]spawned[/] {r.name} [bold]{r.agent_id}[/] pid {r.pid}"
              + (f" [yellow](degraded: no {', '.join(missing)})[/]" if missing else ""))


@cli.command()
@click.argument("manifest", required=False)
@click.option("--program", "-p", type=click.Path(exists=True))
@click.option("--name", "-n")
@click.option("--message", "-m")
@click.option("--timeout", type=float, default=None, help="give up waiting after this many seconds")
@click.option("--goal", "-g", help="run this goal through the orchestrator (MANIFEST overrides its bootstrap manifest)")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="with --goal: copy the results here")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def run(obj: Ctx, manifest: str | None, program: str | None, name: str | None, message: str | None,
        timeout: float | None, goal: str | None, output: str | None, as_json: bool) -> None:
    """Spawn an agent, wait for it, print its result; exit 1 if it failed.

    With --goal: decompose the goal into subtasks run by child agents (see docs/agents.md)."""
    if goal is not None:
        from agentix.cli.goal import run_goal

        sys.exit(run_goal(obj.kernel, goal, output=output, manifest=manifest, timeout=timeout,
                          as_json=as_json, console=out))
    r = _spawn(obj, manifest, program, name, message)
    with err_console.status(f"running {r.name} ({r.agent_id})…"):
        a = obj.kernel.wait(r.agent_id, timeout=timeout)
    if as_json:
        dump_json(a.raw)
    else:
        ex = a.exit or {}
        colour = "green" if a.reason == "completed" else "red"
        out.print(f"[{colour}]{a.name} {a.reason}[/] (code {ex.get('code')}"
                  + (f", signal {ex['signal']}" if ex.get("signal") else "") + ")"
                  + (f" — {ex['detail']}" if ex.get("detail") else ""))
        if a.result is not None:
            out.print_json(data=a.result)
    sys.exit(EXIT_OK if a.reason == "completed" else EXIT_FAILED)


STATE_COLOURS = {"running": "green", "paused": "yellow", "stopping": "yellow", "spawning": "cyan", "exited": "dim"}


def _state(a: dict[str, Any]) -> str:
    s = a["state"]
    if s == "exited" and a.get("exit"):
        s = f"exited ({a['exit']['reason']})"
    return f"[{STATE_COLOURS.get(a['state'], 'white')}]{s}[/]"


@cli.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="include exited agents")
@click.option("--tree", is_flag=True, help="show the parent/child tree")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ps(obj: Ctx, show_all: bool, tree: bool, as_json: bool) -> None:
    """List agents."""
    agents = [a.raw for a in obj.kernel.list(all=show_all or tree)]
    if not show_all and not tree:
        agents = [a for a in agents if a["state"] != "exited"]
    if as_json:
        return dump_json(agents)
    if tree:
        by_id = {a["agent_id"]: a for a in agents}
        root = Tree("agents")

        def add(node: Tree, a: dict[str, Any]) -> None:
            sub = node.add(f"{a['name']} [bold]{a['agent_id']}[/] {_state(a)} pid {a['pid']}")
            for c in a["children"]:
                if c in by_id:
                    add(sub, by_id[c])

        for a in agents:
            if a["parent"] is None or a["parent"] not in by_id:
                add(root, a)
        out.print(root)
        return
    t = Table("ID", "NAME", "STATE", "PID", "PARENT", "RUNTIME", "CALLS")
    for a in agents:
        t.add_row(a["agent_id"], a["name"], _state(a), str(a["pid"] or "-"), a["parent"] or "-",
                  f"{a['runtime_s']:.1f}s", str(a["syscalls"]))
    out.print(t)


@cli.command()
@click.argument("agent")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def inspect(obj: Ctx, agent: str, as_json: bool) -> None:
    """Show everything about one agent."""
    a = obj.kernel.status(agent).raw
    if as_json:
        return dump_json(a)
    t = Table(show_header=False, box=None)
    for key in ("agent_id", "name", "state", "pid", "parent", "depth", "children", "runtime_s",
                "syscalls", "workspace", "log", "exit", "result", "isolation", "limits", "taint",
                "mailbox"):
        val = a.get(key)
        t.add_row(key, _state(a) if key == "state" else json.dumps(val, default=str) if isinstance(val, (dict, list)) else str(val))
    for label, text in _resources(a):
        t.add_row(label, text)
    out.print(t)


def _resources(a: dict[str, Any]) -> list[tuple[str, str]]:
    """Readable rows for ``agent.status``'s ``resources`` (the cgroup's figures)."""
    r = a.get("resources") or {}
    if not r:
        return [("resources", "-")]
    lim = a.get("limits") or {}
    when = "" if a.get("state") != "exited" else " (at exit)"

    def mib(n: Any) -> str:
        return "-" if not isinstance(n, (int, float)) else f"{n / 2**20:.1f} MiB"

    runtime = a.get("runtime_s") or 0
    cpu_ns = r.get("cpu_usage_ns")
    cpu = "-" if not isinstance(cpu_ns, (int, float)) else f"{cpu_ns / 1e9:.3f}s"
    if isinstance(cpu_ns, (int, float)) and runtime:
        cpu += f" ({cpu_ns / 1e9 / runtime:.0%} of {runtime:.1f}s wall)"
    if lim.get("cpu") is not None:
        cpu += f", limit {lim['cpu']:g} CPU"
    thr = r.get("cpu_nr_throttled")
    thr_s = (r.get("cpu_throttled_ns") or 0) / 1e9
    rows = [
        ("memory", f"{mib(r.get('memory_current'))} now, {mib(r.get('memory_peak'))} peak, "
                   f"limit {mib(lim.get('memory'))}; oom kills {r.get('oom_kills', '-')}{when}"),
        ("cpu", cpu),
        ("throttled", "-" if thr is None else f"{thr} periods, {thr_s:.3f}s held back"),
        ("pids", f"{r.get('pids_current', '-')} of {lim.get('pids', '-')}"),
    ]
    return rows


def _control(verb: str) -> Any:
    @click.argument("agents", nargs=-1, required=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def command(obj: Ctx, agents: tuple[str, ...], as_json: bool) -> None:
        results = []
        for agent in agents:
            with err_console.status(f"{verb} {agent}…"):
                a = getattr(obj.kernel, verb)(agent)
            results.append(a.raw)
            if not as_json:
                out.print(f"{a.name} [bold]{a.agent_id}[/] {_state(a.raw)}")
        if as_json:
            dump_json(results)

    return command


for _verb, _help in [("stop", "Stop agents: SIGTERM, a grace period, then SIGKILL; subtrees too."),
                     ("kill", "Kill agents at once (SIGKILL); subtrees too."),
                     ("pause", "Freeze agents."), ("resume", "Thaw paused agents.")]:
    cli.command(name=_verb, help=_help)(_control(_verb))


@cli.command()
@click.argument("agent")
@click.option("--follow", "-f", is_flag=True, help="keep printing new output until the agent exits")
@click.pass_obj
def logs(obj: Ctx, agent: str, follow: bool) -> None:
    """Print an agent's stdout and stderr."""
    offset = 0
    while True:
        data, offset, live = obj.kernel.logs(agent, offset, wait=1.0 if follow else 0)
        if data:
            sys.stdout.write(data)
            sys.stdout.flush()
        if not follow or (not live and not data):
            break


@cli.command()
@click.argument("agent")
@click.argument("message")
@click.pass_obj
def send(obj: Ctx, agent: str, message: str) -> None:
    """Put MESSAGE (JSON or text) in AGENT's mailbox."""
    try:
        body: Any = json.loads(message)
    except json.JSONDecodeError:
        body = message
    r = obj.kernel.send(agent, body)
    out.print(f"delivered to {r['to']} ({r['queued']} queued)")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tools(obj: Ctx, as_json: bool) -> None:
    """List the kernel's tools."""
    data = obj.kernel.tools()
    if as_json:
        return dump_json(data)
    t = Table("TOOL", "DESCRIPTION")
    for tool in data:
        t.add_row(tool["name"], tool["description"])
    out.print(t)


@cli.command()
@click.option("--agent", help="only this agent's events")
@click.option("--kind", help="only this kind (or prefix, e.g. 'agent')")
@click.option("--follow", "-f", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def events(obj: Ctx, agent: str | None, kind: str | None, follow: bool, as_json: bool) -> None:
    """Print the kernel's event record."""
    after = 0
    while True:
        evs = obj.kernel.events(after, agent=agent, kind=kind, wait=1.0 if follow else 0)
        for e in evs:
            after = max(after, e["seq"])
            if as_json:
                click.echo(json.dumps(e, default=str))
            else:
                ts = _clock(e["ts"])
                out.print(f"[dim]{e['seq']:>6} {ts}[/] [bold]{e['kind']}[/] {e['agent'] or '-'} "
                          f"{json.dumps(e['data'], default=str)}", markup=True, highlight=False)
        if not follow:
            break


def _clock(ts: Any) -> str:
    """HH:MM:SS local time of an event timestamp (epoch seconds or audit ISO string)."""
    if isinstance(ts, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime(
                "%H:%M:%S")
        except ValueError:
            return ts
    return time.strftime("%H:%M:%S", time.localtime(ts))


from agentix.cli.audit import audit  # noqa: E402  (the `agentix audit` group)

cli.add_command(audit)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Report which isolation layers work on this host, and why not (exit 1 if any is missing)."""
    proc = subprocess.run([sys.executable, "-m", "agentix.sandbox.doctor"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        fail(f"the host probe failed: {proc.stderr.strip()[-500:]}", EXIT_INTERNAL)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if as_json:
        dump_json(rows)
    else:
        t = Table("LAYER", "STATUS", "DETAIL")
        for row in rows:
            t.add_row(str(row["layer"]), "[green]ok[/]" if row["ok"] else "[red]unavailable[/]",
                      str(row.get("why", "")))
        out.print(t)
        missing = [r["layer"] for r in rows if not r["ok"]]
        out.print("[green]every layer works: agents run strictly isolated[/]" if not missing else
                  f"[yellow]missing: {', '.join(missing)} — spawns are refused unless "
                  "`isolation: degraded` is accepted[/]")
    sys.exit(EXIT_OK if all(r["ok"] for r in rows) else EXIT_FAILED)


@cli.command()
@click.option("--home", "demo_home", type=click.Path(path_type=Path), default=None,
              help="kernel home for the demo (default: a new temporary directory)")
@click.option("--json", "as_json", is_flag=True, help="print the account as JSON")
def demo(demo_home: Path | None, as_json: bool) -> None:
    """Run the main job: a coordinator and three workers, one of which crashes."""
    from agentix.cli.demo import run_demo

    sys.exit(run_demo(demo_home, as_json=as_json, console=out))


from agentix.cli.security import COMMANDS as _SECURITY_COMMANDS  # noqa: E402

for _cmd in _SECURITY_COMMANDS:
    cli.add_command(_cmd)

from agentix.cli.goal import top as _top  # noqa: E402

cli.add_command(_top)

from agentix.cli.packages import install as _install_packages  # noqa: E402

_install_packages(cli)  # build, push, pull, sign, keys, trust, packages; `run REF`


def main() -> None:
    cli(prog_name="agentix")


if __name__ == "__main__":
    main()
