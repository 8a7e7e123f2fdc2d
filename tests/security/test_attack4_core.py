"""Attack round 4 on the trust core: revocation reaching work already running, a stream that
breaks, and what the kernel keeps per tree and per approval.

Each test is named after the attack and asserts the refusal AND that the world did not move
after the revocation point (no file written, no process left, no download finished, nothing
answered or charged beyond the reservation). Harness: the scenarios' one (``_world.py``), a
real kernel, real agent processes, a real loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _world import World, run  # noqa: E402  (same directory)

from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.dispatch import Caller  # noqa: E402

SLEEPER = '''
import time
from agentix.sdk import agent
k = agent.connect()
time.sleep(3600)
'''


class _World(World):
    programs = {"sleeper.py": SLEEPER}


class _BwrapWorld(_World):
    backend = "bwrap"


def _caller(rec: Any) -> Caller:
    return Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)


async def _until(cond: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Wait for ``cond`` (a hang guard, not a speed goal)."""
    for _ in range(int(limit / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


# ---------------------------------------------------------------------------- the long calls
class _Dribble:
    """A loopback HTTP server whose answer is 60 bytes sent one every 0.1 s (a download of
    6 s). It notes each request, each byte sent, and whether the client went away before the
    end (``closed_early``) or read it all (``completed``)."""

    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0
        self.completed = 0
        self.closed = asyncio.Event()
        self.closed_early = False
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        done = False

        async def watch() -> None:
            await reader.read()  # b"": the client closed its side
            self.closed_early = not done
            self.closed.set()

        watcher = asyncio.ensure_future(watch())
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 60\r\n\r\n")
            for _ in range(60):
                writer.write(b"x")
                await writer.drain()
                self.sent += 1
                await asyncio.sleep(0.1)
            done = True
            self.completed += 1
        except (ConnectionError, OSError):  # the client went away mid-body
            self.closed_early = True
            self.closed.set()
        finally:
            await asyncio.sleep(0.2)
            watcher.cancel()
            writer.close()


@dataclass
class _Long:
    """One call that runs long: the grant it needs, the call, when it is at work, and the
    effect that must never happen once its authority ended."""

    grant: str
    method: str
    params: Callable[[dict[str, Any]], dict[str, Any]]
    started: Callable[[World, Any, dict[str, Any]], bool]
    #: what the call did after the revocation point (must stay empty)
    late: Callable[[World, Any, dict[str, Any]], Awaitable[list[str]]]


def _exec_params(ctx: dict[str, Any]) -> dict[str, Any]:
    script = f"echo started > started.txt; sleep 3; echo late > late.txt; sleep {ctx['marker']}"
    return {"name": "exec", "args": {"argv": ["sh", "-c", script], "timeout": 60}}


def _processes_with(marker: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and "pytest" not in cmd:
                out.append(int(d.name))
    return out


async def _exec_late(w: World, rec: Any, ctx: dict[str, Any]) -> list[str]:
    await asyncio.sleep(3.5)  # past the moment the script would have written late.txt
    late = ["late.txt written"] if (Path(rec.workspace) / "late.txt").exists() else []
    return late + [f"process {p} left running" for p in _processes_with(ctx["marker"])]


async def _fetch_late(w: World, rec: Any, ctx: dict[str, Any]) -> list[str]:
    srv: _Dribble = ctx["server"]
    try:
        await asyncio.wait_for(srv.closed.wait(), 20)  # the download was aborted (a hang guard)
    except asyncio.TimeoutError:
        return [f"the connection stayed open ({srv.sent} bytes sent)"]
    out = ["download completed"] if srv.completed or not srv.closed_early else []
    return out + [f"taint {t} reached the agent" for t in rec.taint if t.startswith("fetched_url:")]


async def _think_late(w: World, rec: Any, ctx: dict[str, Any]) -> list[str]:
    await asyncio.sleep(0.5)
    return [f"answered: {e['data']}" for e in w.events("usage.reported", rec.agent_id)
            if not e["data"].get("cancelled")]


LONG: dict[str, _Long] = {
    "exec": _Long("exec: [sh]", "tool.call", _exec_params,
                  lambda w, rec, ctx: (Path(rec.workspace) / "started.txt").exists(), _exec_late),
    "web_fetch": _Long("network: 127.0.0.1", "tool.call",
                       lambda ctx: {"name": "web_fetch", "args": {"url": f"http://127.0.0.1:{ctx['port']}/x"}},
                       lambda w, rec, ctx: ctx["server"].sent >= 2, _fetch_late),
    "think": _Long("model: sim:*", "think",
                   lambda ctx: {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 300},
                   lambda w, rec, ctx: w.k.inference.stats()["providers"]["sim"]["in_flight"] >= 1,
                   _think_late),
}

#: how the authority ends while the call runs, and the refusal the caller gets
ENDS = {"own": "capability_revoked", "ancestor": "capability_revoked", "expiry": "capability_expired",
        "parent_stopped": None}

#: a provider whose answer takes 5 s (longer than a token's 2 s expiry)
SLOW = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
        'script = "turns.yaml"\nloop = true\n')
SLOW_TURN = "- {text: 'slow', delay: 5.0, usage: {input_tokens: 5, output_tokens: 2}}\n"


def _revoke_mid_flight(tmp_path: Path, case: str, end: str, world: type[World] = _World) -> dict[str, Any]:
    long = LONG[case]

    async def body(w: World) -> dict[str, Any]:
        (w.home.root / "turns.yaml").write_text(SLOW_TURN)
        ctx: dict[str, Any] = {"marker": f"30.{abs(hash(str(tmp_path))) % 10**6:06d}"}
        if case == "web_fetch":
            ctx["server"] = _Dribble()
            ctx["port"] = await ctx["server"].start()
        grant: Any = long.grant if end != "expiry" else {"grant": long.grant, "expires": 2}
        parent = await w.spawn([long.grant, "spawn_child: [actor]"], name="parent", program="sleeper.py")
        (Path(parent.workspace) / "sleeper.py").write_text(SLEEPER)
        actor = await w.k.spawn(parse_manifest({"name": "actor", "program": "sleeper.py", "isolation": "degraded",
                                                "capabilities": [grant]}), parent=parent)
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(actor), long.method, long.params(ctx)))
        await _until(lambda: long.started(w, actor, ctx) or call.done(), f"{case} at work")
        assert not call.done(), call.result()
        tokens = [t.id for t in w.k.caps.held[actor.agent_id]]
        if end == "own":
            await w.op("cap.revoke", token_id=tokens[0])
        elif end == "ancestor":
            await w.op("cap.revoke", token_id=w.k.caps.held[parent.agent_id][0].id)
        elif end == "parent_stopped":
            await w.op("agent.stop", agent_id=parent.agent_id)
        used = {t: w.k.caps.ledger.used(t) for t in tokens}  # the revocation point
        try:
            await asyncio.wait_for(call, 30)
            outcome: Any = "answered"
        except asyncio.TimeoutError:
            outcome = "still running"
        except BaseException as err:  # noqa: BLE001 - a killed caller's think is cancelled
            outcome = getattr(err, "code", type(err).__name__)
        late = await long.late(w, actor, ctx)
        if "server" in ctx:
            ctx["server"].server.close()
        results = [e["data"] for e in w.events("tool.result", actor.agent_id)]
        return {"outcome": outcome, "late": late, "used": used, "results": results,
                "used_after": {t: w.k.caps.ledger.used(t) for t in tokens},
                "invoked": len(w.events("tool.invoked", actor.agent_id)),
                "budget": actor.budget.used if case == "think" else None,
                "usage": [e["data"] for e in w.events("usage.reported", actor.agent_id)]}

    return run(tmp_path, body, SLOW, world=world)


@pytest.mark.parametrize("end", sorted(ENDS))
@pytest.mark.parametrize("case", sorted(LONG))
def test_a_call_already_running_ends_when_its_authority_ends(tmp_path, case, end):
    """An ``exec`` (sleeping, then writing a file), a ``web_fetch`` download (a slow loopback
    body) or a ``think`` (a slow provider) is at work when its token is revoked, a token it was
    delegated from is revoked, its token expires, or its holder's parent is stopped. Before,
    each ran to its end: the file was written, the process outlived the revocation, the
    download completed (its text tainting the agent), the answer came back. Now the call ends
    there with the refusal, and nothing happens after: no file, no process left, the download
    aborted, no answer (the think charged at its reservation, recorded as cancelled), no
    invocation charged, and the audit log pairs its ``tool.invoked`` with a failed
    ``tool.result``."""
    r = _revoke_mid_flight(tmp_path, case, end)
    expected = ENDS[end]
    if expected is None:  # its holder was stopped: whatever the refusal, it is one
        assert r["outcome"] not in ("answered", "still running"), r
    else:
        assert r["outcome"] == expected, r
    assert r["late"] == [], r["late"]
    assert r["used_after"] == r["used"]  # nothing charged after the revocation point
    if case == "think":
        assert [u.get("cancelled") for u in r["usage"]] == [True], r["usage"]
        assert r["budget"].output_tokens == 300  # the provider's work, at its reservation
    else:
        assert r["invoked"] == 1 and len(r["results"]) == 1, r
        assert r["results"][0]["ok"] is False
        if expected is not None:
            assert r["results"][0]["error"] == expected, r["results"]


@pytest.mark.skipif(not Path("/usr/bin/bwrap").exists(), reason="bubblewrap is not installed")
def test_an_exec_already_running_in_the_sandbox_is_killed_with_its_whole_tree_on_revocation(tmp_path):
    """The same under bubblewrap: the sandboxed ``sh`` and the ``sleep`` it forked are gone
    once the revocation returns its refusal; no file appears later."""
    r = _revoke_mid_flight(tmp_path, "exec", "own", world=_BwrapWorld)
    assert r["outcome"] == "capability_revoked", r
    assert r["late"] == [], r["late"]
