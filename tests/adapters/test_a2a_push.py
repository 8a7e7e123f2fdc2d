"""A2A push notifications, real protocol on both sides: a client registers a webhook for its
task with ``agentix.a2a.server`` (in front of a real kernel daemon), and a real webhook
receiver on loopback gets the task's updates, POSTed by the kernel (``a2a.push``), in order,
with the client's own credentials; every delivery and every refusal is audited.

The webhook is a request the kernel makes for a remote client, so the attacks are SSRF ones:
loopback, private, link-local and metadata targets (refused unless the operator names the
host), other schemes, credentials in the URL, redirects, a slow or huge answer, an oversized
body, and a name whose DNS answer turns private. Each asserts the refusal and that nothing
reached any receiver."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import yaml

pytest.importorskip("a2a", reason="the a2a extra is not installed (pip install agentix[a2a])")
pytest.importorskip("uvicorn")

from a2a.client import ClientConfig, create_client  # noqa: E402
from a2a.types import (  # noqa: E402
    GetTaskPushNotificationConfigRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskPushNotificationConfig,
)

from agentix.sdk import Kernel  # noqa: E402
from tests.adapters._a2a import TOKEN, serve  # noqa: E402
from tests.adapters._harness import EXAMPLES  # noqa: E402
from tests.adapters._webhook import receiver  # noqa: E402
from tests.adapters.test_a2a_stream import STEPS  # noqa: E402

ECHO = EXAMPLES / "a2a" / "echo.yaml"
AUTH = {"Authorization": f"Bearer {TOKEN}", "A2A-Version": "1.0"}
HOOK_TOKEN = "hook-token-" + "q" * 20
HOOK_SECRET = "hook-credentials-" + "w" * 20


def _rpc(served, method: str, params: dict, headers=AUTH) -> dict:
    r = httpx.post(served.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                   headers=headers, timeout=60)
    return r.json()


def _send_params(text: str, hook_url: str | None, **config) -> dict:
    params: dict = {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": text}]}}
    if hook_url is not None:
        params["configuration"] = {"taskPushNotificationConfig": {
            "url": hook_url, "token": HOOK_TOKEN, "authentication": {"scheme": "Bearer", "credentials": HOOK_SECRET}},
            **config}
    return params


def _state(body: dict) -> str | None:
    for key in ("task", "statusUpdate"):
        if key in body:
            return body[key]["status"]["state"].removeprefix("TASK_STATE_").lower()
    return None


def _done(bodies: list[dict]) -> bool:
    return any(_state(b) in ("completed", "failed", "canceled") for b in bodies)


def _pushes(served) -> list[dict]:
    return [e["data"] for e in served.events("a2a.push")]


ORDER = {"submitted": 0, "working": 1, "completed": 2}


def test_a_registered_webhook_gets_every_update_in_order_with_the_client_s_credentials(tmp_path):
    with receiver() as hook, serve(tmp_path, yaml.safe_load(ECHO.read_text()), ECHO.parent,
                                   push_allow=("127.0.0.1",)) as served:
        card = httpx.get(served.url + ".well-known/agent-card.json", timeout=30).json()
        assert card["capabilities"]["pushNotifications"] is True
        out = _rpc(served, "SendMessage", _send_params("hello hook", hook.url))
        task_id = out["result"]["task"]["id"]
        bodies = hook.wait_for(_done)
        requests = list(hook.got)
        events = _pushes(served)

    # every update, in the order it happened: the task's states never go back, the result
    # artifact comes before the end, and the end is the last thing sent
    states = [s for s in map(_state, bodies) if s is not None]
    assert states[-1] == "completed" and "working" in states
    assert [ORDER[s] for s in states] == sorted(ORDER[s] for s in states)
    kinds = [next(iter(b)) for b in bodies]
    assert "artifactUpdate" in kinds and kinds.index("artifactUpdate") < len(kinds) - 1
    art = next(b["artifactUpdate"] for b in bodies if "artifactUpdate" in b)
    assert [p["text"] for p in art["artifact"]["parts"]] == ["echo: hello hook"]
    assert all((b.get("task") or b.get("statusUpdate") or b.get("artifactUpdate")).get("id", task_id) == task_id
               for b in bodies)
    # the client's credentials, as the spec says: its token and its authentication
    for r in requests:
        assert r["path"] == "/hook"
        assert r["headers"]["X-A2A-Notification-Token"] == HOOK_TOKEN
        assert r["headers"]["Authorization"] == f"Bearer {HOOK_SECRET}"
    # audited: the registration's check, then one delivery per request, by the a2a face,
    # naming the task; never the credentials or the URL's path
    checks = [e for e in events if e["check"]]
    sends = [e for e in events if not e["check"]]
    assert len(checks) == 1 and checks[0]["ok"] and checks[0]["sent"] is False
    assert len(sends) == len(requests) and all(e["ok"] and e["status"] == 200 and e["sent"] for e in sends)
    assert all(e["by"] == "a2a" and e["host"] == "127.0.0.1" and e["client"] == "default" for e in events)
    assert {e["task_id"] for e in sends} == {task_id}
    text = json.dumps(events)
    assert HOOK_TOKEN not in text and HOOK_SECRET not in text and "/hook" not in text


def test_a_webhook_set_on_a_running_task_gets_the_rest_of_it(tmp_path):
    with receiver() as hook, serve(tmp_path, dict(STEPS), tmp_path, push_allow=("127.0.0.1",)) as served:
        async def go():
            async with httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=60) as http:
                client = await create_client(served.url, ClientConfig(httpx_client=http, streaming=False,
                                                                      polling=True))
                msg = Message(role=Role.ROLE_USER, parts=[Part(text="20 later")], message_id=str(uuid.uuid4()))
                task = [ev async for ev in client.send_message(SendMessageRequest(message=msg))][-1].task
                cfg = await client.create_task_push_notification_config(TaskPushNotificationConfig(
                    task_id=task.id, id="mine", url=hook.url, token=HOOK_TOKEN))
                got = await client.get_task_push_notification_config(
                    GetTaskPushNotificationConfigRequest(task_id=task.id, id="mine"))
                return task, cfg, got

        task, cfg, got = asyncio.run(go())
        assert cfg.url == got.url == hook.url and got.task_id == task.id
        bodies = hook.wait_for(_done)
    assert _state(bodies[-1]) == "completed"
    texts = [p["text"] for b in bodies if "artifactUpdate" in b for p in b["artifactUpdate"]["artifact"]["parts"]]
    assert texts == ["done: later"]


REFUSED = [
    ("http://127.0.0.1:{port}/hook", "--push-allow"),            # loopback, not allowed
    ("http://localhost:{port}/hook", "--push-allow"),            # a name for loopback
    ("http://[::1]:{port}/hook", "--push-allow"),
    ("http://0.0.0.0:{port}/hook", "--push-allow"),              # unspecified
    ("http://169.254.169.254/latest/meta-data/", "--push-allow"),  # cloud metadata (link-local)
    ("http://10.1.2.3/hook", "--push-allow"),                    # private
    ("http://[fd00:ec2::254]/", "--push-allow"),                 # private v6 (a metadata address)
    ("file:///etc/passwd", "http or https"),
    ("ftp://127.0.0.1:{port}/", "http or https"),
    ("http://user:pw@127.0.0.1:{port}/hook", "user name or password"),
]


def test_refused_webhooks_are_refused_when_registered_and_nothing_is_sent_or_run(tmp_path):
    with receiver() as hook, serve(tmp_path, yaml.safe_load(ECHO.read_text()), ECHO.parent) as served:
        port = hook.server.server_address[1]
        for url, why in REFUSED:
            url = url.format(port=port)
            err = _rpc(served, "SendMessage", _send_params("never runs", url))["error"]
            assert "push notification URL refused" in err["message"] and why in err["message"], (url, err)
        # set on an existing task: refused the same way, nothing stored
        done = _rpc(served, "SendMessage", _send_params("runs", None))["result"]["task"]
        err = _rpc(served, "CreateTaskPushNotificationConfig",
                   {"taskId": done["id"], "url": hook.url, "token": HOOK_TOKEN})["error"]
        assert "--push-allow" in err["message"]
        listed = _rpc(served, "ListTaskPushNotificationConfigs", {"taskId": done["id"]})["result"]
        assert not listed.get("configs")
        agents = served.agents()
        events = _pushes(served)
        # a client may hold at most 4 webhooks on one task (replacing one is always allowed)
        public = "http://93.184.215.14/hook"  # a public address: decided without DNS, never sent to here
        for i in range(4):
            assert "result" in _rpc(served, "CreateTaskPushNotificationConfig",
                                    {"taskId": done["id"], "id": f"h{i}", "url": public})
        err = _rpc(served, "CreateTaskPushNotificationConfig", {"taskId": done["id"], "id": "h4", "url": public})
        assert "delete one first" in err["error"]["message"]
        assert "result" in _rpc(served, "CreateTaskPushNotificationConfig",
                                {"taskId": done["id"], "id": "h0", "url": public + "2"})
        assert "result" in _rpc(served, "DeleteTaskPushNotificationConfig", {"taskId": done["id"], "id": "h1"})
        assert "result" in _rpc(served, "CreateTaskPushNotificationConfig",
                                {"taskId": done["id"], "id": "h4", "url": public})
        listed = _rpc(served, "ListTaskPushNotificationConfigs", {"taskId": done["id"]})["result"]["configs"]
        assert sorted(c["id"] for c in listed) == ["h0", "h2", "h3", "h4"]
    assert hook.got == []  # nothing ever reached the receiver
    assert [a.name for a in agents] == ["echo"]  # only the task without a webhook ran
    assert len(events) == len(REFUSED) + 1 and not any(e["ok"] or e["sent"] for e in events)
    assert all(e["by"] == "a2a" and e["check"] for e in events)


# ------------------------------------------------------------------ the kernel's a2a.push itself
@pytest.fixture(scope="module")
def kernel_home(tmp_path_factory):
    """One kernel and face for the a2a.push tests: each reads only the pushes it made."""
    with serve(tmp_path_factory.mktemp("push"), yaml.safe_load(ECHO.read_text()), ECHO.parent) as served:
        yield served


def _push(served, **params):
    with Kernel(served.home) as k:
        k.bind("a2a")
        return k.call("a2a.push", **{"task_id": "t1", "body": "{}", "allow_hosts": ["127.0.0.1"], **params})


def test_a_redirect_is_not_followed(kernel_home):
    before = len(_pushes(kernel_home))
    with receiver() as first, receiver() as second:
        first.mode = f"redirect:{second.url}"
        with pytest.raises(Exception) as caught:
            _push(kernel_home, url=first.url)
        assert caught.value.code == "tool_error" and "redirects are not followed" in caught.value.message
        assert len(first.got) == 1 and second.got == []
    [last] = _pushes(kernel_home)[before:]
    assert last["ok"] is False and last["status"] == 302


def test_a_huge_answer_is_cut_off_and_a_slow_one_times_out(kernel_home):
    before = len(_pushes(kernel_home))
    with receiver() as hook:
        hook.mode = "huge"
        with pytest.raises(Exception) as caught:
            _push(kernel_home, url=hook.url)
        assert caught.value.code == "limit_exceeded"
        hook.mode = "slow"
        with pytest.raises(Exception) as caught:
            _push(kernel_home, url=hook.url, timeout=1)
        assert caught.value.code == "timeout" and "longer than 1 s" in caught.value.message
    assert [e["error"] for e in _pushes(kernel_home)[before:]] == ["limit_exceeded", "timeout"]


def test_an_oversized_body_is_refused_before_anything_is_sent(kernel_home):
    with receiver() as hook:
        with pytest.raises(Exception) as caught:
            _push(kernel_home, url=hook.url, body="x" * (512 * 1024 + 1))
        assert caught.value.code == "limit_exceeded" and "limit of 524288 bytes" in caught.value.message
        assert hook.got == []


def test_a_named_host_reaches_only_its_own_address_not_its_neighbours(kernel_home):
    """``allow_hosts: [127.0.0.1]`` allows that address, not another loopback or private one."""
    with receiver() as hook:
        port = hook.server.server_address[1]
        for url in (f"http://127.0.0.2:{port}/hook", "http://192.168.0.1/", "http://169.254.169.254/"):
            with pytest.raises(Exception) as caught:
                _push(kernel_home, url=url)
            assert caught.value.code == "capability_denied" and "--push-allow" in caught.value.message
        assert hook.got == []


# ------------------------------------------------------------------ DNS: decided, then pinned
def test_a_name_whose_answer_is_private_is_refused_and_nothing_is_sent():
    from agentix.core.errors import CapabilityDenied
    from agentix.kernel.a2a_push import push

    async def private(host, port):
        return ["10.0.0.7"]

    record: dict = {}
    with pytest.raises(CapabilityDenied, match="--push-allow"):
        asyncio.run(push("http://hooks.example.com/x", allow_hosts=frozenset(), body=b"{}", headers={},
                         timeout=5, record=record, resolve=private))
    assert record["sent"] is False and "status" not in record


def test_the_connection_goes_to_the_checked_address_under_the_name():
    """A name allowed by the operator is resolved once; the POST goes to that address (no second
    lookup a DNS rebinding could answer), with the name as ``Host``."""
    from agentix.kernel.a2a_push import push

    asked = []

    async def resolve(host, port):
        asked.append(host)
        return ["127.0.0.1"]

    with receiver() as hook:
        port = hook.server.server_address[1]
        record: dict = {}
        out = asyncio.run(push(f"http://hooks.internal:{port}/hook", allow_hosts=frozenset({"hooks.internal"}),
                               body=b'{"a": 1}', headers={"X-A2A-Notification-Token": "tok"}, timeout=10,
                               record=record, resolve=resolve))
        assert out["delivered"] and record["address"] == "127.0.0.1" and asked == ["hooks.internal"]
        (req,) = hook.got
        assert req["headers"]["Host"] == f"hooks.internal:{port}" and json.loads(req["body"]) == {"a": 1}
        assert req["headers"]["X-A2A-Notification-Token"] == "tok"
