"""The parts of the CLI that need no click: errors and exit codes, the kernel handle, and
the commands that must start quickly (``info``, ``ps``, ``logs``), shared by the click
commands in ``cli/main.py`` and the fast path in ``cli/quick.py``.

Exit codes (stable):

    0  success
    1  the agent ran and failed (``run``: crashed, killed, oom, timeout ...)
    2  bad usage or bad input (a bad manifest, an unknown agent)
    3  no kernel is running (or one is already running, for ``up``)
    4  refused by the kernel (capability, taint, approval, budget, isolation)
    5  timed out waiting
    6  a remote package registry failed
    7  a tool or the inference provider failed (the kernel is fine)
    10 internal error (a kernel bug, or the connection to the kernel broke)

An SDK error's exit code follows its code alone (``EXIT_FOR_CODE``; a test covers every code).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime

from agentix.cli import render
from agentix.cli.render import echo, line, notice, table

TYPE_CHECKING = False  # no typing, pathlib or json at start-up: `agentix info` starts fast
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, NoReturn

    import click

    from agentix.sdk import Kernel
    from agentix.sdk.errors import AgentixError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_KERNEL, EXIT_REFUSED, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
EXIT_REGISTRY, EXIT_BACKEND, EXIT_INTERNAL = 6, 7, 10

#: the exit code for each error code (``agentix.core.errors.CODES`` and ``LOCAL_CODES``);
#: a code this version does not know exits ``EXIT_INTERNAL``
EXIT_FOR_CODE: dict[str, int] = {
    "parse_error": EXIT_USAGE,
    "invalid_request": EXIT_USAGE,
    "invalid_params": EXIT_USAGE,
    "method_not_found": EXIT_USAGE,
    "not_found": EXIT_USAGE,
    "conflict": EXIT_USAGE,
    "unauthenticated": EXIT_REFUSED,
    "capability_denied": EXIT_REFUSED,
    "capability_expired": EXIT_REFUSED,
    "capability_exhausted": EXIT_REFUSED,
    "capability_revoked": EXIT_REFUSED,
    "handoff_escalation_denied": EXIT_REFUSED,
    "taint_violation": EXIT_REFUSED,
    "approval_denied": EXIT_REFUSED,
    "budget_exceeded": EXIT_REFUSED,
    "limit_exceeded": EXIT_REFUSED,
    "isolation_unavailable": EXIT_REFUSED,
    "package_rejected": EXIT_REFUSED,
    "timeout": EXIT_TIMEOUT,
    "registry_error": EXIT_REGISTRY,
    "tool_error": EXIT_BACKEND,
    "provider_error": EXIT_BACKEND,
    "internal_error": EXIT_INTERNAL,
    "connection_closed": EXIT_INTERNAL,
    "kernel_not_running": EXIT_NO_KERNEL,
}


def fail(message: str, code: int) -> NoReturn:
    line(f"error: {message}", "bold red", err=True)
    sys.exit(code)


def exit_code_for(err: AgentixError) -> int:
    """The stable exit code of an SDK error: by its code, never by its class."""
    return EXIT_FOR_CODE.get(err.code, EXIT_INTERNAL)


def error_line(err: AgentixError) -> str:
    """One line for an SDK error: its message, and its code when the details matter."""
    extra = {k: v for k, v in err.data.items() if k not in ("error",)}
    return err.message + (f" ({err.code})" if extra and err.code != "internal_error" else "")


class Ctx:
    """What every command gets: the kernel home and a connection made on first use."""

    def __init__(self, home: str | Path) -> None:
        self._home = str(home)
        self._kernel: Kernel | None = None

    @property
    def home(self) -> Path:
        from pathlib import Path

        return Path(self._home)

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            from agentix.sdk.kernel import Kernel

            self._kernel = Kernel(self._home)
        return self._kernel


def kernel_of(ctx: click.Context | None = None) -> Kernel:
    """The SDK handle of the command's ``Ctx`` (``ctx``: a click context, default the current one),
    connected on first use."""
    if ctx is None:
        import click

        ctx = click.get_current_context()
    return ctx.find_root().obj.kernel


def guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; turn an SDK error into one clear line and a stable exit code."""
    from agentix.sdk.errors import AgentixError

    try:
        return fn()
    except AgentixError as err:
        fail(error_line(err), exit_code_for(err))
    except (ConnectionError, OSError) as err:
        fail(f"lost the connection to the kernel: {err}", EXIT_INTERNAL)


def default_home(home: str | Path | None) -> str:
    """The kernel home: ``home``, else $AGENTIX_HOME, else ~/.agentix (absolute)."""
    import os

    home = home or os.environ.get("AGENTIX_HOME") or "~/.agentix"
    return os.path.realpath(os.path.expanduser(str(home)))


def parse_message(text: str | None) -> Any:
    """A ``--message`` as given on the command line: JSON when it parses, else the text."""
    import json

    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def dump_json(data: Any) -> None:
    import json

    echo(json.dumps(data, indent=2, default=str))


def kv_table(rows: list[tuple[str, str]]) -> None:
    """Key/value rows: aligned, values in full."""
    table(["FIELD", "VALUE"], [[k, v] for k, v in rows], keep=(1,))


def show_info(obj: Ctx, as_json: bool) -> None:
    """`agentix info`."""
    data = obj.kernel.info()
    if as_json:
        return dump_json(data)
    iso = data["isolation"]
    kv_table([
        ("version", data["version"]),
        ("pid", str(data["pid"])),
        ("home", data["home"]),
        ("uptime", f"{data['uptime_s']:.1f}s"),
        ("agents", f"{data['agents']['live']} live / {data['agents']['total']} total"),
        ("isolation", f"{iso.get('backend')} (default {iso.get('default')})"
         + (f", missing: {', '.join(iso['missing_layers'])}" if iso.get("missing_layers") else "")),
        *([("warm pool", _warm_pool(iso["warm_pool"]))] if iso.get("warm_pool") else []),
        ("system calls", f"{data['syscalls']['calls']} ({data['syscalls']['refusals']} refused)"),
        ("tools", ", ".join(data["tools"])),
    ])


def _warm_pool(p: dict[str, Any]) -> str:
    """`2/2 ready; 14 warm, 3 cold spawns; 0 rejected` (docs/isolation.md "Warm agents")."""
    return (f"{p.get('ready', 0)}/{p.get('size', 0)} ready; {p.get('warm', 0)} warm, "
            f"{p.get('cold', 0)} cold spawns; {p.get('rejected', 0)} workers rejected")


STATE_COLOURS = {"running": "green", "paused": "yellow", "stopping": "yellow", "spawning": "cyan", "exited": "dim"}


def _state(a: dict[str, Any]) -> str:
    s = a["state"]
    if s == "exited" and a.get("exit"):
        s = f"exited ({a['exit']['reason']})"
    return s


def _state_cell(a: dict[str, Any]) -> render.Cell:
    return (_state(a), STATE_COLOURS.get(a["state"], "white"))


def _tree_lines(agents: list[dict[str, Any]]) -> list[str]:
    by_id = {a["agent_id"]: a for a in agents}
    out: list[str] = []

    def add(a: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        out.append(f"{prefix}{branch}{a['name']} {a['agent_id']} {_state(a)} pid {a['pid'] or '-'}")
        kids = [by_id[c] for c in a["children"] if c in by_id]
        for i, c in enumerate(kids):
            add(c, prefix + ("" if top else ("    " if last else "│   ")), i == len(kids) - 1, False)

    for a in agents:
        if a["parent"] is None or a["parent"] not in by_id:
            add(a, "", True, True)
    return out


def show_ps(obj: Ctx, show_all: bool, tree: bool, as_json: bool) -> None:
    """`agentix ps`."""
    agents = [a.raw for a in obj.kernel.list(all=show_all or tree)]
    if not show_all and not tree:
        agents = [a for a in agents if a["state"] != "exited"]
    if as_json:
        return dump_json(agents)
    if tree:
        for ln in _tree_lines(agents):
            echo(ln)
        return
    table(["ID", "NAME", "STATE", "PID", "PARENT", "RUNTIME", "CALLS"],
          [[a["agent_id"], a["name"], _state_cell(a), str(a["pid"] or "-"), a["parent"] or "-",
            f"{a['runtime_s']:.1f}s", str(a["syscalls"])] for a in agents], keep=(0, 4))


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


LOG_LINES = 100


def _read_log(k: Kernel, agent: str) -> tuple[str, int, bool, int]:
    """All the output the kernel keeps, page by page: (text, next offset, live, bytes the
    kernel's log cap discarded before it)."""
    chunks: list[str] = []
    offset, live, dropped = 0, True, 0
    while True:
        r = k.call("agent.logs", agent_id=agent, offset=offset)
        dropped = max(dropped, int(r.get("dropped") or 0))
        offset, live = r["offset"], r["live"]
        if not r["data"]:
            break
        chunks.append(r["data"])
    return "".join(chunks), offset, live, dropped


def log_lines(k: Kernel, agent: str, count: int, head: bool) -> dict[str, Any]:
    """The last (or first) ``count`` lines (0: all), and what was left out.

    A kernel whose ``agent.logs`` takes ``tail``/``head`` picks the lines itself (and says
    ``cut``); an older one returns pages from an offset, and the lines are picked here."""
    if count:
        r = k.call("agent.logs", agent_id=agent, **{"head" if head else "tail": count})
        if "cut" in r:
            return {"lines": r["data"].splitlines(keepends=True), "omitted": None,
                    "cut": bool(r["cut"]), "dropped": int(r.get("dropped") or 0),
                    "offset": r["offset"], "live": r["live"]}
    text, offset, live, dropped = _read_log(k, agent)
    lines = text.splitlines(keepends=True)
    shown = lines if count == 0 or len(lines) <= count else (lines[:count] if head else lines[-count:])
    return {"lines": shown, "omitted": len(lines) - len(shown), "cut": len(shown) < len(lines),
            "dropped": dropped, "offset": offset, "live": live}


def show_logs(obj: Ctx, agent: str, count: int, head: bool, follow: bool, as_json: bool) -> None:
    """`agentix logs`: the tail (or head) with a notice of what was left out; then follow."""
    k = obj.kernel
    got = log_lines(k, agent, count, head)
    if as_json:
        if follow:
            fail("--json and --follow do not go together", EXIT_USAGE)
        return dump_json({"agent": agent, "lines": [x.rstrip("\n") for x in got["lines"]],
                          "omitted": got["omitted"], "cut": got["cut"],
                          "dropped_bytes": got["dropped"], "head": head, "live": got["live"]})
    hint = f"`agentix logs -n 0 {agent}` prints all the output the kernel keeps"
    what = f"{got['omitted']} {'later' if head else 'earlier'} lines" if got["omitted"] else \
        f"{'later' if head else 'earlier'} output"
    if got["dropped"]:
        notice(f"[the kernel's log cap discarded the oldest {got['dropped']} bytes of this output]")
    if got["cut"] and not head:
        notice(f"[{what} not shown; {hint}]")
    sys.stdout.write(render.for_terminal("".join(got["lines"])))  # an agent's escapes are shown, not obeyed
    sys.stdout.flush()
    if got["cut"] and head:
        notice(f"[{what} not shown; {hint}]")
    offset, live = got["offset"], got["live"]
    while follow:
        data, offset, live = k.logs(agent, offset, wait=1.0)
        if data:
            sys.stdout.write(render.for_terminal(data))
            sys.stdout.flush()
        if not live and not data:
            break


def for_each(items: tuple[str, ...], act: Any, show: Any, as_json: bool) -> None:
    """Run ``act(item)`` on every item, report each (``show(result)``), exit non-zero if any failed.

    The exit status is that of the first failure (docs/cli.md's codes)."""
    from agentix.sdk.errors import AgentixError

    results: list[dict[str, Any]] = []
    code = EXIT_OK
    for item in items:
        try:
            res = act(item)
        except AgentixError as err:
            code = code or exit_code_for(err)
            results.append({"target": item, "ok": False, "error": err.code, "message": err.message})
            if not as_json:
                line(f"error: {item}: {error_line(err)}", "bold red", err=True)
            continue
        results.append({"target": item, "ok": True, "result": res})
        if not as_json:
            show(res)
    if as_json:
        dump_json(results)
    if code:
        sys.exit(code)


def clock(ts: Any) -> str:
    """HH:MM:SS local time of an event timestamp (epoch seconds or audit ISO string)."""
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime(
                "%H:%M:%S")
        except ValueError:
            return ts
    return time.strftime("%H:%M:%S", time.localtime(ts))
