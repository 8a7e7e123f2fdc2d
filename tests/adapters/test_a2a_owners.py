"""Per-client task ownership on the A2A server: each client has its own bearer token, the
token names the client, and a task is its creator's. Another client cannot read it, follow it,
cancel it, continue it, list it, or set, read or list a webhook on it: each is
``TaskNotFoundError`` (-32001), the same answer as for a task that does not exist (it learns
nothing of the task), and the task is left as it was.

One test drives a real published agent through a real kernel; a Hypothesis property drives
random interleavings of two clients' calls (against a small executor, no agent behind it)
and checks each answer against a model of who owns what."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid

import httpx
import pytest

pytest.importorskip("a2a", reason="the a2a extra is not installed (pip install agentix[a2a])")
pytest.importorskip("uvicorn")

from a2a.server.agent_execution import AgentExecutor, RequestContext  # noqa: E402
from a2a.server.events import EventQueue  # noqa: E402
from a2a.server.tasks import TaskUpdater  # noqa: E402
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_artifact  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentix.a2a.server import A2AConfigError, A2AServerConfig  # noqa: E402
from tests.adapters._a2a import serve  # noqa: E402
from tests.adapters._webhook import receiver  # noqa: E402
from tests.adapters.test_a2a_stream import STEPS, _wait_running  # noqa: E402

ALICE = "alice-token-" + "a" * 24
BOB = "bob-token-" + "b" * 26
CLIENTS = {"alice": ALICE, "bob": BOB}
NOT_FOUND, NOT_CANCELABLE, UNSUPPORTED = -32001, -32002, -32004


@functools.cache
def _http() -> httpx.Client:
    """The module's one HTTP client: ``httpx.post`` builds a client per call, and with it a TLS
    context loaded with the CA bundle (tens of ms of CPU), over hundreds of calls here. No
    keep-alive: each call still opens a connection of its own, as before."""
    return httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


def _rpc(served, token: str, method: str, params: dict) -> dict:
    r = _http().post(served.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                     headers={"Authorization": f"Bearer {token}", "A2A-Version": "1.0"})
    return r.json()


def _first_sse(served, token: str, method: str, params: dict) -> dict:
    """The first answer of a streaming method: its first event, or its error."""
    with _http().stream("POST", served.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                        headers={"Authorization": f"Bearer {token}", "A2A-Version": "1.0"}) as r:
        if not r.headers["content-type"].startswith("text/event-stream"):
            return json.loads(r.read())
        for line in r.iter_lines():
            if line.startswith("data:"):
                return json.loads(line[5:])
    raise AssertionError("the stream ended with no event")


def _msg(text: str, **extra) -> dict:
    return {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": text}], **extra}


def _code(answer: dict) -> int | None:
    return answer["error"]["code"] if "error" in answer else None


def test_another_client_can_do_nothing_with_a_task_and_it_is_left_as_it_was(tmp_path):
    with receiver() as hook, serve(tmp_path, dict(STEPS), tmp_path, clients=CLIENTS,
                                   push_allow=("127.0.0.1",)) as served:
        started = _rpc(served, ALICE, "SendMessage", {"message": _msg("100000 alice's"),
                                                      "configuration": {"returnImmediately": True}})
        task = started["result"]["task"]
        tid, ctx = task["id"], task["contextId"]
        run = _wait_running(served)

        answers = {
            "GetTask": _rpc(served, BOB, "GetTask", {"id": tid}),
            "CancelTask": _rpc(served, BOB, "CancelTask", {"id": tid}),
            "SubscribeToTask": _first_sse(served, BOB, "SubscribeToTask", {"id": tid}),
            "SendMessage (continue it, with a webhook)": _rpc(served, BOB, "SendMessage", {
                "message": _msg("hijack", taskId=tid, contextId=ctx),
                "configuration": {"taskPushNotificationConfig": {"url": hook.url, "token": "bobs"}}}),
            "SendStreamingMessage (continue it)": _first_sse(served, BOB, "SendStreamingMessage",
                                                             {"message": _msg("hijack", taskId=tid)}),
            "CreateTaskPushNotificationConfig": _rpc(served, BOB, "CreateTaskPushNotificationConfig",
                                                     {"taskId": tid, "url": hook.url, "token": "bobs"}),
            "GetTaskPushNotificationConfig": _rpc(served, BOB, "GetTaskPushNotificationConfig",
                                                  {"taskId": tid, "id": tid}),
            "ListTaskPushNotificationConfigs": _rpc(served, BOB, "ListTaskPushNotificationConfigs",
                                                    {"taskId": tid}),
        }
        for method, answer in answers.items():
            assert _code(answer) == NOT_FOUND, (method, answer)
            unknown = answer["error"]["message"].replace(tid, "ID")
            assert "alice" not in unknown and "100000" not in unknown, (method, answer)
        # the same answer as for a task that does not exist (for its own client too)
        nobody = str(uuid.uuid4())
        for who in (ALICE, BOB):
            for method, params in [("GetTask", {"id": nobody}), ("CancelTask", {"id": nobody}),
                                   ("CreateTaskPushNotificationConfig", {"taskId": nobody, "url": hook.url}),
                                   ("ListTaskPushNotificationConfigs", {"taskId": nobody})]:
                assert _code(_rpc(served, who, method, params)) == NOT_FOUND, (method, who)
        assert tid not in json.dumps(_rpc(served, BOB, "ListTasks", {}))
        # left as it was: running, its agent not stopped, no webhook on it, nothing sent
        mine = _rpc(served, ALICE, "GetTask", {"id": tid})["result"]
        assert mine["status"]["state"] == "TASK_STATE_WORKING"
        assert [(a.agent_id, a.state) for a in served.agents()] == [(run.agent_id, "running")]
        assert served.events("agent.stop") == []
        assert not _rpc(served, ALICE, "ListTaskPushNotificationConfigs", {"taskId": tid})["result"].get("configs")
        assert hook.got == []
        assert tid in json.dumps(_rpc(served, ALICE, "ListTasks", {}))
        # its owner can: cancel stops the run
        cancelled = _rpc(served, ALICE, "CancelTask", {"id": tid})["result"]
        assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
        assert [e["data"]["agent_id"] for e in served.events("agent.stop")] == [run.agent_id]


def test_clients_need_their_own_tokens():
    for clients, token, why in [({"a": ALICE, "b": ALICE}, "", "share a token"),
                                ({"a": "short"}, "", "at least 16"),
                                ({"bad name!": ALICE}, "", "client name"),
                                ({"default": ALICE}, BOB, "single token"),
                                ({}, "", "needs a bearer token")]:
        with pytest.raises(A2AConfigError, match=why):
            A2AServerConfig(home=None, manifest={"name": "x"}, url="http://x/", token=token, clients=clients)


# ------------------------------------------------------------------ interleavings, by property
class _Quick(AgentExecutor):
    """A task that says ``done`` completes at once; any other works until it is cancelled."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Event] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        up = TaskUpdater(event_queue, task.id, task.context_id)
        if context.get_user_input() == "done":
            await up.add_artifact([new_text_artifact(name="result", text="ok").parts[0]], name="result")
            await up.complete()
            return
        reported = self.waiting.setdefault(task.id, asyncio.Event())
        await up.start_work()
        await reported.wait()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        up = TaskUpdater(event_queue, context.task_id, context.context_id or "")
        await up.cancel()
        self.waiting.setdefault(context.task_id, asyncio.Event()).set()


@pytest.fixture(scope="module")
def quick_served(tmp_path_factory):
    with receiver() as hook, serve(tmp_path_factory.mktemp("owners"), {"name": "quick"}, None, executor=_Quick(),
                                   clients=CLIENTS, push_allow=("127.0.0.1",)) as served:
        yield served, hook


_op = st.tuples(st.sampled_from(["alice", "bob"]),
                st.sampled_from(["send_done", "send_wait", "get", "cancel", "subscribe", "set_push", "list"]),
                st.integers(min_value=0, max_value=7))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_op, min_size=1, max_size=10))
def test_no_interleaving_of_two_clients_lets_one_touch_the_other_s_tasks(quick_served, ops):
    served, hook = quick_served
    token = {"alice": ALICE, "bob": BOB}
    context = str(uuid.uuid4())  # this example's tasks (ListTasks filters on it)
    owner: dict[str, str] = {}
    state: dict[str, str] = {}
    order: list[str] = []
    try:
        for who, op, pick in ops:
            if op.startswith("send"):
                done = op == "send_done"
                params = {"message": _msg("done" if done else "wait", contextId=context)}
                if not done:
                    params["configuration"] = {"returnImmediately": True}
                task = _rpc(served, token[who], "SendMessage", params)["result"]["task"]
                owner[task["id"]], state[task["id"]] = who, "completed" if done else "working"
                order.append(task["id"])
                assert task["status"]["state"] != "TASK_STATE_FAILED"
                continue
            if op == "list":
                listed = _rpc(served, token[who], "ListTasks", {"contextId": context, "pageSize": 100})["result"]
                assert {t["id"] for t in listed.get("tasks", [])} == {t for t, o in owner.items() if o == who}
                continue
            tid = order[pick % len(order)] if order else str(uuid.uuid4())
            mine = owner.get(tid) == who
            if op == "get":
                got = _rpc(served, token[who], "GetTask", {"id": tid})
                if mine:
                    assert got["result"]["status"]["state"] == f"TASK_STATE_{state[tid].upper()}"
                else:
                    assert _code(got) == NOT_FOUND
            elif op == "cancel":
                got = _rpc(served, token[who], "CancelTask", {"id": tid})
                if not mine:
                    assert _code(got) == NOT_FOUND
                elif state[tid] == "working":
                    assert got["result"]["status"]["state"] == "TASK_STATE_CANCELED"
                    state[tid] = "canceled"
                else:
                    assert _code(got) == NOT_CANCELABLE
            elif op == "subscribe":
                got = _first_sse(served, token[who], "SubscribeToTask", {"id": tid})
                if not mine:
                    assert _code(got) == NOT_FOUND
                elif state[tid] == "working":
                    assert got["result"]["task"]["id"] == tid
                else:
                    assert _code(got) == UNSUPPORTED
            elif op == "set_push":
                got = _rpc(served, token[who], "CreateTaskPushNotificationConfig",
                           {"taskId": tid, "id": who, "url": hook.url})
                if mine:
                    assert got["result"]["taskId"] == tid
                else:
                    assert _code(got) == NOT_FOUND
        # after any interleaving: each task is in the state its owner's calls left it, and
        # its webhooks are its owner's only
        for tid, who in owner.items():
            seen = _rpc(served, token[who], "GetTask", {"id": tid})["result"]
            assert seen["status"]["state"] == f"TASK_STATE_{state[tid].upper()}"
            other = "bob" if who == "alice" else "alice"
            configs = _rpc(served, token[who], "ListTaskPushNotificationConfigs", {"taskId": tid})["result"]
            assert {c["id"] for c in configs.get("configs", [])} <= {who}
            assert _code(_rpc(served, token[other], "GetTask", {"id": tid})) == NOT_FOUND
    finally:
        for tid, who in owner.items():  # leave no task working for the next example
            if state[tid] == "working":
                _rpc(served, token[who], "CancelTask", {"id": tid})


@pytest.mark.parametrize("text,why", [
    (f'[clients]\nalice = "{ALICE}"\nbob = "{ALICE}"\n', "share a token"),
    ('[other]\nx = "y"\n', "needs a [clients] table"),
    ("not toml [", "not TOML"),
])
def test_the_cli_refuses_a_clients_file_that_cannot_key_ownership(tmp_path, text, why):
    import os
    import subprocess
    import sys

    from tests.adapters._harness import EXAMPLES

    clients = tmp_path / "clients.toml"
    clients.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "AGENTIX_A2A_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "agentix.cli.quick", "--home", str(tmp_path), "a2a", "serve",
                        str(EXAMPLES / "a2a" / "echo.yaml"), "--clients-file", str(clients)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and why in r.stderr, r.stderr
