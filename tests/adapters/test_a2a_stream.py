"""A2A streaming, resubscribing and cancelling, real protocol on both sides: ``a2a-sdk``'s
client (and raw HTTP for the bad inputs) against an agentix agent published by
``agentix.a2a.server`` on loopback in front of a real kernel daemon.

The published agent (tests/programs/a2a_steps.py) prints a line every 0.1 s for as many steps
as its message asks, then answers; a large count keeps it running until it is stopped."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytest.importorskip("a2a", reason="the a2a extra is not installed (pip install agentix[a2a])")
pytest.importorskip("uvicorn")

from a2a.client import ClientConfig, create_client  # noqa: E402
from a2a.types import (  # noqa: E402
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)

from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError, UnsupportedOperationError  # noqa: E402

from agentix.sdk import Kernel  # noqa: E402
from tests.adapters._a2a import TOKEN, serve  # noqa: E402

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEPS = {"name": "steps", "description": "Counts steps, then answers.", "program": str(PROGRAMS / "a2a_steps.py"),
         "isolation": "degraded"}


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path, dict(STEPS), tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def idle_served(tmp_path_factory):
    """One served agent for the module's refusal tests: none of them runs or stops anything,
    so each still finds no agent and no stop at all (started once, not per test)."""
    tmp = tmp_path_factory.mktemp("idle")
    with serve(tmp, dict(STEPS), tmp) as s:
        yield s


def _send(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, parts=[Part(text=text)],
                                              message_id=str(uuid.uuid4())))


def _state(ev) -> str | None:
    """The task state a stream event reports (None for an artifact update)."""
    if ev.HasField("task"):
        st = ev.task.status.state
    elif ev.HasField("status_update"):
        st = ev.status_update.status.state
    else:
        return None
    return TaskState.Name(st).removeprefix("TASK_STATE_").lower()


def _client(http, *, streaming=True, polling=False):
    return create_client(f"{http.base_url}", ClientConfig(httpx_client=http, streaming=streaming, polling=polling))


def _http(served) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=60)


def _wait_running(served, timeout: float = 30.0):
    """The published agent's record once it runs (its first step printed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [a for a in served.agents() if a.name == "steps"]
        if runs and runs[0].state == "running":
            with Kernel(served.home) as k:
                if "step 0" in k.logs(runs[0].agent_id)[0]:
                    return runs[0]
        time.sleep(0.05)
    raise AssertionError(f"the published agent did not start: {served.agents()}")


def _settled(served, timeout: float = 30.0) -> list:
    """The published agent's runs once none is live any more."""
    deadline = time.monotonic() + timeout
    while any(a.state != "exited" for a in served.agents()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return served.agents()


def test_a_streamed_task_reports_each_state_as_it_happens(served):
    async def go():
        async with _http(served) as http:
            client = await _client(http)
            assert client._card.capabilities.streaming  # the card says it streams
            return [ev async for ev in client.send_message(_send("3 hello"))]

    events = asyncio.run(go())
    states = [s for s in map(_state, events) if s is not None]
    assert states[0] == "submitted" and states[-1] == "completed" and "working" in states
    arts = [ev.artifact_update.artifact for ev in events if ev.HasField("artifact_update")]
    assert [(a.name, [p.text for p in a.parts]) for a in arts] == [("result", ["done: hello"])]
    # each event came as it happened: the artifact before the final state, the run behind it one
    kinds = [ev.WhichOneof("payload") for ev in events]
    assert kinds.index("artifact_update") < len(kinds) - 1
    runs = served.agents()
    assert [(a.name, a.reason) for a in runs] == [("steps", "completed")]


def test_resubscribing_to_a_running_task_streams_it_to_the_end(served):
    async def go():
        async with _http(served) as http:
            polling = await _client(http, streaming=False, polling=True)
            first = [ev async for ev in polling.send_message(_send("10 again"))]
            task_id = first[-1].task.id
            await asyncio.to_thread(_wait_running, served)
            streaming = await _client(http)
            later = [ev async for ev in streaming.subscribe(SubscribeToTaskRequest(id=task_id))]
            return first, later

    first, later = asyncio.run(go())
    assert _state(first[-1]) in ("submitted", "working")  # answered before the run ended
    states = [s for s in map(_state, later) if s is not None]
    assert states[0] == "working" and states[-1] == "completed"  # the snapshot, then what followed
    texts = [p.text for ev in later if ev.HasField("artifact_update") for p in ev.artifact_update.artifact.parts]
    assert texts == ["done: again"]


def test_cancel_stops_the_run_and_is_audited(served):
    async def go():
        async with _http(served) as http:
            client = await _client(http)
            stream = client.send_message(_send("100000 forever"))
            seen = []
            async for ev in stream:  # up to the moment the run is working
                seen.append(ev)
                if _state(ev) == "working":
                    break
            task_id = seen[0].task.id
            rec = await asyncio.to_thread(_wait_running, served)
            canceller = await _client(http, streaming=False)
            cancelled = await canceller.cancel_task(CancelTaskRequest(id=task_id))
            rest = [ev async for ev in stream]
            after = await canceller.get_task(GetTaskRequest(id=task_id))
            return rec, cancelled, seen + rest, after

    rec, cancelled, events, after = asyncio.run(go())
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert after.status.state == TaskState.TASK_STATE_CANCELED and not after.artifacts
    assert _state(events[-1]) == "canceled"  # the stream ended with it
    # the run was stopped (not left to its timeout): exited, killed, by the a2a face, audited
    runs = served.agents()
    assert [(a.agent_id, a.state, a.reason) for a in runs] == [(rec.agent_id, "exited", "killed")]
    stops = served.events("agent.stop")
    assert [(e["data"]["by"], e["data"]["agent_id"], e["data"]["ok"]) for e in stops] == [("a2a", rec.agent_id, True)]
    with Kernel(served.home) as k:  # it had started, and never got near its last step
        log = k.logs(rec.agent_id)[0]
    assert "step 0" in log and "step 99999" not in log


def test_cancelling_an_unknown_task_id_is_a_clear_error_and_changes_nothing(idle_served):
    body = {"jsonrpc": "2.0", "id": 3, "method": "CancelTask", "params": {"id": "no-such-task"}}
    r = httpx.post(idle_served.url, json=body, headers={**AUTH, "A2A-Version": "1.0"}, timeout=30)
    err = r.json()["error"]
    assert err["code"] == -32001 and "not found" in err["message"].lower()

    async def go():
        async with _http(idle_served) as http:
            client = await _client(http)
            with pytest.raises(TaskNotFoundError):
                async for _ in client.subscribe(SubscribeToTaskRequest(id="no-such-task")):
                    pass

    asyncio.run(go())
    assert idle_served.agents() == [] and idle_served.events("agent.stop") == []


def test_a_finished_task_cannot_be_cancelled_nor_resubscribed_and_its_result_stays(served):
    async def go():
        async with _http(served) as http:
            client = await _client(http, streaming=False)
            done = [ev async for ev in client.send_message(_send("1 quick"))][-1].task
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(CancelTaskRequest(id=done.id))
            with pytest.raises(UnsupportedOperationError, match="terminal state"):  # nothing left to stream
                async for _ in (await _client(http)).subscribe(SubscribeToTaskRequest(id=done.id)):
                    pass
            return done, await client.get_task(GetTaskRequest(id=done.id))

    done, after = asyncio.run(go())
    assert done.status.state == after.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for a in after.artifacts for p in a.parts] == ["done: quick"]
    assert [a.reason for a in served.agents()] == ["completed"] and served.events("agent.stop") == []


@pytest.mark.parametrize("method,params", [
    ("SendStreamingMessage", {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "1 hi"}]}}),
    ("SubscribeToTask", {"id": "some-task"}),
    ("CancelTask", {"id": "some-task"}),
])
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-wrong-token", f"Basic {TOKEN}"])
def test_streaming_and_cancel_without_the_token_are_refused_and_nothing_runs(idle_served, method, params, auth):
    headers = {"Authorization": auth} if auth else {}
    r = httpx.post(idle_served.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                   headers=headers, timeout=30)
    assert r.status_code == 401 and "authentication required" in r.json()["error"]["message"]
    assert idle_served.agents() == []


def test_an_oversized_streaming_request_is_refused_before_it_is_parsed(idle_served):
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "1 " + "x" * 70000}]}}}
    r = httpx.post(idle_served.url, json=body, headers=AUTH, timeout=30)
    assert r.status_code == 413 and "limit of 65536 bytes" in r.json()["error"]["message"]
    assert idle_served.agents() == []


def test_a_v0_3_client_streams_and_cancels_by_the_old_method_names(served):
    """``message/stream``, ``tasks/resubscribe`` and ``tasks/cancel`` (A2A 0.3 JSON-RPC, the
    SDK's compatibility layer) reach the same runs as their 1.0 names."""
    msg = {"role": "user", "messageId": "m-old", "kind": "message", "parts": [{"kind": "text", "text": "100000 old"}]}

    async def events(http, body):
        async with http.stream("POST", "", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:])["result"]

    async def go():
        async with _http(served) as http:
            stream = events(http, {"jsonrpc": "2.0", "id": 1, "method": "message/stream", "params": {"message": msg}})
            first = await anext(stream)
            task_id = first["id"]
            rec = await asyncio.to_thread(_wait_running, served)
            again = events(http, {"jsonrpc": "2.0", "id": 2, "method": "tasks/resubscribe", "params": {"id": task_id}})
            snapshot = await anext(again)
            r = await http.post("", json={"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel", "params": {"id": task_id}})
            rest = [ev async for ev in stream]
            rest_again = [ev async for ev in again]
            return first, rec, snapshot, r.json(), rest, rest_again

    first, rec, snapshot, cancelled, rest, rest_again = asyncio.run(go())
    assert first["kind"] == "task" and first["status"]["state"] == "submitted"
    assert snapshot["kind"] == "task" and snapshot["id"] == first["id"]
    assert cancelled["result"]["status"]["state"] == "canceled"
    for evs in (rest, rest_again):  # both streams end with the cancel, marked final
        assert evs[-1]["kind"] == "status-update" and evs[-1]["status"]["state"] == "canceled" and evs[-1]["final"]
    assert [(a.agent_id, a.reason) for a in served.agents()] == [(rec.agent_id, "killed")]
    assert [e["data"]["by"] for e in served.events("agent.stop")] == ["a2a"]


def test_a_cancel_that_races_the_spawn_still_stops_the_run(served):
    """Cancelled the moment it is submitted (the spawn may not have happened yet, or be half
    done): the task is canceled and no agent of it is left running, nor reported done."""
    async def go():
        async with _http(served) as http:
            client = await _client(http, streaming=False, polling=True)
            task = [ev async for ev in client.send_message(_send("100000 raced"))][-1].task
            cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
            return cancelled, task.id

    cancelled, task_id = asyncio.run(go())
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert all((a.state, a.reason) == ("exited", "killed") for a in _settled(served)), served.agents()

    async def later():
        async with _http(served) as http:
            return await (await _client(http, streaming=False)).get_task(GetTaskRequest(id=task_id))

    after = asyncio.run(later())
    assert after.status.state == TaskState.TASK_STATE_CANCELED and not after.artifacts


# ------------------------------------------------------------------ the a2a_call client
def _allow_loopback(host, address):
    return host == "127.0.0.1" and address in (None, "127.0.0.1")


def test_a2a_call_folds_a_streamed_answer(served):
    from agentix.tools.a2a_call import a2a_call

    out = asyncio.run(a2a_call(served.url, "3 streamed", permits=_allow_loopback, headers=AUTH, timeout=60))
    assert out["state"] == "completed" and out["text"] == "done: streamed" and out["task_id"]
    assert [(a.name, a.reason) for a in served.agents()] == [("steps", "completed")]


def test_a2a_call_that_times_out_cancels_the_remote_task(served):
    from agentix.core.errors import Timeout
    from agentix.tools.a2a_call import a2a_call

    with pytest.raises(Timeout) as caught:
        asyncio.run(a2a_call(served.url, "100000 too long", permits=_allow_loopback, headers=AUTH, timeout=6))
    err = caught.value
    assert err.data["remote_cancelled"] is True and "was cancelled" in err.message, err
    # the remote run was stopped by the cancel, not left working for nobody (a cancel that
    # came while it was being spawned stops it once spawned)
    runs = _settled(served)
    assert [(a.state, a.reason) for a in runs] == [("exited", "killed")]
    assert [e["data"]["by"] for e in served.events("agent.stop")] == ["a2a"]

    async def remote_task():
        async with _http(served) as http:
            return await (await _client(http, streaming=False)).get_task(GetTaskRequest(id=err.data["task_id"]))

    assert asyncio.run(remote_task()).status.state == TaskState.TASK_STATE_CANCELED


# ------------------------------------------------------------------ streaming the agent's output
def test_with_stream_output_the_agent_s_log_streams_as_it_is_written(tmp_path):
    with serve(tmp_path, dict(STEPS), tmp_path, stream_output=True) as served:
        async def go():
            async with _http(served) as http:
                return [ev async for ev in (await _client(http)).send_message(_send("10 shown"))]

        events = asyncio.run(go())
        ups = [ev.artifact_update for ev in events if ev.HasField("artifact_update")]
        out = [u for u in ups if u.artifact.name == "output"]
        # chunks of one artifact as it was written (a second apart): the first replaces, the
        # rest append, all before the result
        assert len(out) >= 2 and not out[0].append and all(u.append for u in out[1:])
        assert len({u.artifact.artifact_id for u in out}) == 1
        text = "".join(p.text for u in out for p in u.artifact.parts)
        assert text.splitlines() == [f"step {i}" for i in range(10)]
        assert [u.artifact.name for u in ups][-1] == "result" and _state(events[-1]) == "completed"
        # the stored task holds the whole output once, then the result
        async def stored():
            async with _http(served) as http:
                task_id = events[0].task.id
                return await (await _client(http, streaming=False)).get_task(GetTaskRequest(id=task_id))

        task = asyncio.run(stored())
        assert [(a.name, "".join(p.text for p in a.parts)) for a in task.artifacts] == \
            [("output", text), ("result", "done: shown")]
