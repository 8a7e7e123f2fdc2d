"""Attack round 4 on the trust core: revocation reaching work already running, a stream that
breaks, and what the kernel keeps per tree and per approval.

Each test is named after the attack and asserts the refusal AND that the world did not move
after the revocation point (no file written, no process left, no download finished, nothing
answered or charged beyond the reservation). Harness: the scenarios' one (``_world.py``), a
real kernel, real agent processes, a real loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _world import World, run  # noqa: E402  (same directory)

from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.dispatch import Caller  # noqa: E402
from tests.fakes.mcp_raw import RawMcpServer  # noqa: E402

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
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        if head.startswith(b"GET /r "):  # a redirect to the same server under another name
            port = writer.get_extra_info("sockname")[1]
            writer.write(f"HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/x\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()
            return
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


@pytest.mark.parametrize("end", ["own", "expiry"])
def test_a_download_after_a_redirect_ends_when_the_token_that_allowed_the_hop_ends(tmp_path, end):
    """``web_fetch`` of host A is redirected to host B, which a second token allows; the body
    from B is still coming when the operator revokes B's token, or it expires. Before, the
    call's re-check looked only at its first decision (A's token, still live) and the download
    finished. Now every decision the call made while it ran is re-checked, and its tokens'
    expiry timed: it ends ``capability_revoked``/``capability_expired`` and the body is never
    read to its end."""
    async def body(w: World):
        srv = _Dribble()
        port = await srv.start()
        # two grant sets: two tokens, one for each host
        hop_grant: dict[str, Any] = {"grant": "network: localhost"}
        if end == "expiry":
            hop_grant["expires"] = 2
        rec = await w.spawn([{"grant": "network: 127.0.0.1"}, hop_grant], name="actor", program="sleeper.py")
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(rec), "tool.call", {
            "name": "web_fetch", "args": {"url": f"http://127.0.0.1:{port}/r"}}))
        await _until(lambda: srv.sent >= 2 or call.done(), "the redirected body coming")
        assert not call.done(), call.result()
        held = w.k.caps.held[rec.agent_id]
        assert len(held) == 2
        hop = next(t for t in held if t.grants.strings() == ["network: localhost"])
        if end == "own":
            await w.op("cap.revoke", token_id=hop.id)
        try:
            await asyncio.wait_for(call, 30)
            outcome = "answered"
        except Exception as err:  # noqa: BLE001
            outcome = getattr(err, "code", repr(err))
        late = await _fetch_late(w, rec, {"server": srv})
        srv.server.close()
        return outcome, late, srv.requests

    outcome, late, requests = run(tmp_path, body, world=_World)
    assert requests == 2  # the first host, then the hop
    assert outcome == ("capability_revoked" if end == "own" else "capability_expired"), outcome
    assert late == [], late


@pytest.mark.parametrize("end", ["own", "ancestor"])
def test_a_call_waiting_for_approval_ends_when_its_token_is_revoked_and_the_request_expires(tmp_path, end):
    """A call waits for the operator's approval; its token (or the parent's it came from) is
    revoked meanwhile. Before, it went on waiting (up to the approval timeout) with a request
    the operator could still grant — refused only then. Now the wait ends there
    (``capability_revoked``), the request is expired (nothing left to answer: granting it is
    a conflict) and the tool never runs."""
    async def body(w: World):
        parent = await w.spawn(["tool: echo", "spawn_child: [actor]"], name="parent", program="sleeper.py")
        (Path(parent.workspace) / "sleeper.py").write_text(SLEEPER)
        actor = await w.k.spawn(parse_manifest({"name": "actor", "program": "sleeper.py", "isolation": "degraded",
                                                "capabilities": ["tool: echo"], "approval_required": ["echo"]}),
                                parent=parent)
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(actor), "tool.call",
                                                      {"name": "echo", "args": {"message": "hi"}}))
        await _until(lambda: bool(w.events("approval.requested", actor.agent_id)) or call.done(),
                     "the approval asked")
        aid = w.events("approval.requested", actor.agent_id)[0]["data"]["approval_id"]
        target = w.k.caps.held[actor.agent_id if end == "own" else parent.agent_id][0]
        await w.op("cap.revoke", token_id=target.id)
        try:
            await asyncio.wait_for(call, 20)
            outcome = "answered"
        except asyncio.TimeoutError:
            outcome = "still waiting"
        except Exception as err:  # noqa: BLE001
            outcome = getattr(err, "code", repr(err))
        try:
            await w.op("approval.respond", id=aid, approve=True)
            granted = "granted"
        except Exception as err:  # noqa: BLE001
            granted = getattr(err, "code", repr(err))
        await asyncio.sleep(0.2)
        import time as _t
        return (outcome, granted, w.k.caps.approvals.get(aid).state,
                [a.id for a in w.k.caps.approvals.pending(_t.time())],
                [e for e in w.events("tool.result", actor.agent_id) if e["data"].get("ok")],
                len(w.events("approval.expired", actor.agent_id)))

    outcome, granted, state, pending, echoes, expired = run(tmp_path, body, world=_World)
    assert outcome == "capability_revoked", outcome
    assert state == "expired" and pending == [] and expired == 1
    assert granted == "conflict", granted
    assert echoes == []


# ---------------------------------------------------------------------------- the class, as a property
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentix.core.errors import CapabilityRevoked  # noqa: E402
from agentix.kernel.dispatch import Call  # noqa: E402
from agentix.kernel.live_calls import LiveCalls  # noqa: E402
from agentix.rpc.server import drive_task  # noqa: E402


def _start_eagerly(coro: Any, done: asyncio.Future[Any]) -> None:
    """Start ``coro`` as the channel does (rpc.server, from a protocol callback: outside any
    task, a task only once it blocks); ``done`` gets its outcome."""
    ctx = contextvars.copy_context()
    try:
        fut = ctx.run(coro.send, None)
    except StopIteration as stop:
        done.set_result(stop.value)
    except BaseException as err:  # noqa: BLE001 - refused before it ran
        done.set_exception(err)
    else:
        task = drive_task(coro, fut, ctx)
        task.add_done_callback(lambda t: done.set_exception(asyncio.CancelledError()) if t.cancelled()
                               else done.set_exception(t.exception()) if t.exception() is not None
                               else done.set_result(t.result()))


@settings(max_examples=300, deadline=None)
@given(calls=st.lists(st.tuples(st.frozensets(st.integers(0, 3), min_size=1, max_size=2), st.integers(0, 4),
                                st.booleans()),
                      min_size=1, max_size=6),
       revocations=st.lists(st.tuples(st.integers(-1, 5), st.integers(0, 3)), max_size=4))
def test_revoking_mid_flight_ends_exactly_the_calls_it_allowed_and_nothing_happens_after(calls, revocations):
    """Calls at work (``LiveCalls``, the registry the pipeline runs every decided call in), each
    resting on some tokens and taking some steps (one effect per step); revocations land at
    any step, also before a call's handler started (tick -1: between its decision and its
    start) or before its task first ran. A call is started as the channel starts one
    (eagerly, outside any task, as ``rpc.server`` does) or from a task. Whatever the schedule: no effect happens once one of
    its tokens is revoked; a call refused is one whose token was revoked; a call that answered
    did all its steps; every handler that started ran its cleanup (a reservation given back,
    a process killed); nothing stays registered."""
    async def go() -> tuple[list[Any], list[tuple[int, bool]], set[int], set[int], int]:
        live = LiveCalls()
        revoked: set[int] = set()
        effects: list[tuple[int, bool]] = []
        started: set[int] = set()
        cleaned: set[int] = set()

        def check_for(toks: frozenset[int]) -> Callable[[], None]:
            def check() -> None:
                if toks & revoked:
                    raise CapabilityRevoked(f"token {min(toks & revoked)} was revoked")
            return check

        def handler_for(i: int, toks: frozenset[int], steps: int) -> Any:
            async def handler(call: Call) -> int:
                started.add(i)
                try:
                    for _ in range(steps):
                        await asyncio.sleep(0)
                        effects.append((i, bool(toks & revoked)))
                    return i
                finally:
                    cleaned.add(i)
            return handler

        def revoke(tick: int) -> None:
            for t, tok in revocations:
                if t == tick:
                    revoked.add(tok)
                    live.recheck()

        tasks: list[Any] = []
        for i, (toks, steps, eager) in enumerate(calls):
            c = Call(caller=Caller(agent_id="a"), method="tool.call", params={})
            c.live = check_for(toks)
            coro = live.run(c, handler_for(i, toks, steps))
            if not eager:
                tasks.append(asyncio.ensure_future(coro))
                continue
            loop = asyncio.get_running_loop()
            done: asyncio.Future[Any] = loop.create_future()
            loop.call_soon(_start_eagerly, coro, done)  # a callback: outside any task
            tasks.append(done)
        revoke(-1)  # before any handler started
        for tick in range(6):
            await asyncio.sleep(0)
            revoke(tick)
        results = list(await asyncio.gather(*tasks, return_exceptions=True))
        return results, effects, started, cleaned, len(live)

    results, effects, started, cleaned, left = asyncio.run(go())
    assert [e for e in effects if e[1]] == []  # nothing happened after a revocation it rested on
    for i, (toks, steps, _eager) in enumerate(calls):
        res = results[i]
        if isinstance(res, BaseException):
            assert isinstance(res, CapabilityRevoked), res
            assert toks & {tok for _, tok in revocations}
        else:
            assert res == i and [e for e in effects if e[0] == i] == [(i, False)] * steps
    assert started <= cleaned
    assert left == 0


# ---------------------------------------------------------------------------- a stream that breaks
def test_a_provider_error_after_streamed_text_is_charged_not_free(tmp_path):
    """The provider streams part of an answer, then fails (a broken stream, a 5xx mid-body).
    Before, nothing was charged: text reached the agent for free, as often as it liked. Now
    the request is charged at its reservation and ``usage.reported`` says so (``estimated``,
    ``partial``, the error); it is not retried (text was streamed)."""
    msgs = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 300, "stream": True, "stream_id": "s"}

    async def body(w: World):
        (w.home.root / "turns.yaml").write_text(
            "- {text: 'half an answer', error: {message: 'stream broke', retryable: true}}\n")
        rec = await w.spawn(["model: sim:*"], name="streamer", program="sleeper.py")
        seen: list[Any] = []
        await _until(lambda: rec.notify is not None, "the agent's channel open")
        rec.notify = lambda method, params: seen.append(params["text"]) or True
        try:
            await w.k.pipeline.run(_caller(rec), "think", dict(msgs))
            outcome = "answered"
        except Exception as err:  # noqa: BLE001
            outcome = getattr(err, "code", repr(err))
        await _until(lambda: bool(w.events("usage.reported", rec.agent_id)), "usage recorded")
        return outcome, seen, rec.budget.used, rec.budget.reserved, w.events("usage.reported", rec.agent_id)

    outcome, seen, used, reserved, usage = run(tmp_path, body, SLOW, world=_World)
    assert outcome == "provider_error" and seen == ["half an answer"]
    assert used.output_tokens == 300 and reserved.output_tokens == 0  # charged, nothing left held
    assert len(usage) == 1
    assert usage[0]["data"]["estimated"] is True and usage[0]["data"]["partial"] is True
    assert usage[0]["data"]["error"] == "provider_error" and "cancelled" not in usage[0]["data"]


# ---------------------------------------------------------------------------- what the kernel keeps
def test_agent_trees_that_ended_leave_no_in_flight_pool_behind(tmp_path):
    """Every agent tree gets its own share of the kernel's in-flight pool; before, the pool
    object of every tree that ever ran stayed in memory (a spawn loop of short-lived roots
    grew the kernel without bound). Now a tree's pool goes with its last channel, and a live
    tree keeps its own."""
    async def body(w: World):
        keeper = await w.spawn(["tool: echo"], name="keeper", program="sleeper.py")
        ids = []
        for i in range(6):
            rec = await w.spawn(["tool: echo"], name=f"brief{i}")
            await w.calls(rec, [["tool.call", {"name": "echo", "args": {"message": "hi"}}]])
            ids.append(rec.agent_id)
        await _until(lambda: not set(ids) & set(w.k.spawner._tree_pools), "pools of ended trees removed",
                     limit=10)
        return set(w.k.spawner._tree_pools), keeper.agent_id

    pools, keeper = run(tmp_path, body, world=_World)
    assert pools == {keeper}


def test_answered_approvals_do_not_grow_the_kernels_memory_without_end(tmp_path):
    """An agent asks (``wait: false``) and the operator denies, again and again: before, every
    answered approval stayed in memory for the kernel's life. Now final approvals past
    ``MAX_ANSWERED`` are kept in the store only; a pending one is never dropped, and an id
    that was dropped grants nothing when presented (refused, the tool does not run)."""
    from agentix.kernel.approval_book import MAX_ANSWERED

    async def body(w: World):
        rec = await w.spawn(["tool: echo"], name="asker", program="sleeper.py", approval_required=["echo"])
        ids = []
        for i in range(MAX_ANSWERED + 40):
            try:
                await w.k.pipeline.run(_caller(rec), "tool.call", {"name": "echo", "args": {"message": str(i)},
                                                                   "wait": False})
            except Exception as err:  # noqa: BLE001
                ids.append(err.data["approval_id"])
            await w.op("approval.respond", id=ids[-1], approve=False)
        try:  # the last one stays pending
            await w.k.pipeline.run(_caller(rec), "tool.call", {"name": "echo", "args": {"message": "last"},
                                                               "wait": False})
        except Exception as err:  # noqa: BLE001
            pending = err.data["approval_id"]
        kept = {a.id for a in w.k.caps.approvals.all()}
        try:
            await w.k.pipeline.run(_caller(rec), "tool.call", {"name": "echo", "args": {"message": "0"},
                                                               "approval": ids[0]})
            again = "ran"
        except Exception as err:  # noqa: BLE001
            again = getattr(err, "code", repr(err))
        stored = w.k.caps.approvals.db.submit(
            lambda t: t.conn.execute("SELECT COUNT(*) FROM approvals").fetchone()[0]).result()
        echoes = [e for e in w.events("tool.result", rec.agent_id) if e["data"].get("ok")]
        return ids, pending, kept, again, stored, echoes

    ids, pending, kept, again, stored, echoes = run(tmp_path, body, world=_World)
    assert len(kept) <= MAX_ANSWERED + 1 and pending in kept and ids[-1] in kept
    assert ids[0] not in kept
    assert again in ("not_found", "approval_denied") and echoes == []
    assert stored == len(ids) + 1  # the store keeps every one


# ---------------------------------------------------------------------------- an MCP call held for its server
class _SlowStartServer(RawMcpServer):
    """A remote (Streamable HTTP) MCP server on loopback whose handshake takes ``delay`` s.
    It notes every ``tools/call`` it gets (``called``) and answers it at once."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.called: list[Any] = []
        self.initialized = threading.Event()
        super().__init__()

    def on_initialize(self) -> None:
        time.sleep(self.delay)
        self.initialized.set()

    def on_call(self, handler: Any, msg: dict[str, Any]) -> None:
        self.called.append(msg["params"])
        super().on_call(handler, msg)


import time  # noqa: E402


@pytest.mark.parametrize("end", ["own", "expiry"])
def test_an_mcp_call_waiting_for_its_server_to_start_is_never_sent_once_its_authority_ended(tmp_path, end):
    """An agent's MCP call waits while the server starts (a 3 s handshake); meanwhile its token
    is revoked, or expires. Before, the call was sent when the server came up. Now it ends
    there (``capability_revoked``/``capability_expired``), the server never gets the call —
    and the server's start, which the call had begun, still completes for the next caller."""
    pytest.importorskip("mcp")
    srv = _SlowStartServer(3.0)
    cfg = f'[mcp.servers.slow]\nurl = "http://127.0.0.1:{srv.port}/mcp"\nstart_timeout = 15\n'

    async def body(w: World):
        grant: Any = "mcp: slow/t" if end == "own" else {"grant": "mcp: slow/t", "expires": 2}
        actor = await w.spawn([grant], name="actor", program="sleeper.py")
        other = await w.spawn(["mcp: slow/t"], name="other", program="sleeper.py")
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(actor), "tool.call",
                                                      {"name": "mcp__slow__t", "args": {}}))
        await _until(lambda: w.k.mcp.servers["slow"].state == "starting" or call.done(), "server starting")
        if end == "own":
            await w.op("cap.revoke", token_id=w.k.caps.held[actor.agent_id][0].id)
        try:
            await asyncio.wait_for(call, 30)
            outcome = "answered"
        except Exception as err:  # noqa: BLE001
            outcome = getattr(err, "code", repr(err))
        await asyncio.get_running_loop().run_in_executor(None, srv.initialized.wait, 20)
        await _until(lambda: w.k.mcp.servers["slow"].state != "starting", "the start finished")
        sent_for_actor = list(srv.called)
        later = await w.k.pipeline.run(_caller(other), "tool.call", {"name": "mcp__slow__t", "args": {}})
        results = [e["data"] for e in w.events("tool.result", actor.agent_id)]
        return outcome, sent_for_actor, later, results, w.k.mcp.servers["slow"].starts

    try:
        outcome, sent, later, results, starts = run(tmp_path, body, cfg, world=_World)
    finally:
        srv.close()
    assert outcome == ("capability_revoked" if end == "own" else "capability_expired"), outcome
    assert sent == []  # the server never got the revoked call
    assert results == [{"ok": False, "tool": "mcp__slow__t", "error": outcome,
                        "message": results[0]["message"]}]
    assert later["text"] == "done" and later["is_error"] is False, later  # the start served the next caller
    assert starts == 1  # one start, finished for the next caller


# ---------------------------------------------------------------------------- cancelled before it ran
def test_a_request_cancelled_before_its_task_first_ran_still_runs_its_cleanup():
    """The channel starts a request eagerly and gives it a task only when it blocks
    (``rpc.server.drive_task``); the live-call registry does the same for a decided call's
    handler. A task cancelled before it first ran never ran its coroutine: before, the
    request stayed suspended and its cleanup (its in-flight slot, a think's reservation, an
    exec's process) waited for the garbage collector, which runs no ``except
    CancelledError``. Now the cancellation is thrown in, its cleanup runs to its end, and
    ``unwound`` returns after it."""
    import contextlib
    import contextvars

    from agentix.rpc.server import drive_task, unwound

    async def go() -> list[str]:
        log: list[str] = []
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def request() -> None:
            try:
                await gate
                log.append("ran on")
            except asyncio.CancelledError:
                log.append("told")
                await asyncio.sleep(0)  # a cleanup that itself waits (a process reaped)
                log.append("cleaned")
                raise
            finally:
                log.append("finally")

        coro = request()
        ctx = contextvars.copy_context()
        fut = ctx.run(coro.send, None)
        task = drive_task(coro, fut, ctx)
        task.cancel()  # before it first ran (the peer went away at once)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await unwound(task)
        return log

    assert asyncio.run(go()) == ["told", "cleaned", "finally"]
