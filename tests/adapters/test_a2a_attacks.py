"""Attacks on the two A2A seams, below the kernel: the server's guard (auth and body bound,
a property over arbitrary credentials) and the ``a2a_call`` client (schemes, hosts, DNS
answers, an agent card that points elsewhere, an oversized answer). Each asserts the
refusal and that nothing reached the other side."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("a2a", reason="the a2a extra is not installed (pip install agentix[a2a])")
uvicorn = pytest.importorskip("uvicorn")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentix.a2a.server import A2AServerConfig, build_app  # noqa: E402
from agentix.core.errors import CapabilityDenied, InvalidRequest, LimitExceeded  # noqa: E402
from agentix.tools.a2a_call import a2a_call  # noqa: E402

TOKEN = "s3cret-" + "z" * 25


def _cfg(url: str = "http://127.0.0.1:9/", **kw) -> A2AServerConfig:
    return A2AServerConfig(home=None, manifest={"name": "probe"}, token=TOKEN, url=url, **kw)


class _Recorder:
    """An ASGI app standing behind the guard: records every request that got through."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope, receive, send):
        self.seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _guarded():
    from agentix.a2a.server import Guard

    rec = _Recorder()
    return Guard(rec, TOKEN, 1024), rec


async def _post(app, headers, body=b"{}"):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.post("/", content=body, headers=headers)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
def test_no_credential_but_the_token_gets_through_the_guard(cred):
    app, rec = _guarded()
    headers = {} if cred is None else {"Authorization": cred.encode("latin-1", "replace").decode("latin-1")}
    try:
        r = asyncio.run(_post(app, headers))
    except (httpx.LocalProtocolError, UnicodeEncodeError, ValueError):
        return  # not even sendable as a header
    ok = cred is not None and cred.split(" ", 1)[0].lower() == "bearer" and cred.split(" ", 1)[1:] and \
        cred.split(" ", 1)[1].strip() == TOKEN
    assert (r.status_code == 200) == bool(ok)
    assert rec.seen == (["/"] if ok else [])


@pytest.mark.parametrize("cred", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN}"])
def test_the_token_itself_gets_through(cred):
    app, rec = _guarded()
    assert asyncio.run(_post(app, {"Authorization": cred})).status_code == 200 and rec.seen == ["/"]


@pytest.mark.parametrize("length", ["abc", "-1", "99999999999999999999"])
def test_a_lying_or_huge_content_length_is_refused_before_the_app(length):
    app, rec = _guarded()
    r = asyncio.run(_post(app, {"Authorization": f"Bearer {TOKEN}", "Content-Length": length}))
    assert r.status_code in (400, 413) and rec.seen == []


def test_the_server_refuses_to_exist_without_a_real_token():
    for bad in ("", "short", None):
        with pytest.raises(ValueError, match="bearer token"):
            A2AServerConfig(home=None, manifest={"name": "x"}, token=bad, url="http://x/")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the a2a_call client
def _allow(*hosts):
    def permits(host, address):
        return host in hosts and (address is None or address in ("127.0.0.1",) or host == address)
    return permits


async def _resolver_to(addr):
    async def resolve(host, port):
        return [addr]
    return resolve


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/", "data:text/plain,hi", "gopher://x/"])
def test_only_http_and_https(url):
    with pytest.raises((CapabilityDenied, InvalidRequest)):
        asyncio.run(a2a_call(url, "hi", permits=lambda h, a: True))


def test_a_name_that_resolves_to_a_private_address_is_refused_without_a_grant_naming_it():
    seen = []

    def permits(host, address):
        seen.append((host, address))
        return address is None  # the host is granted; a private address is not

    async def go():
        return await a2a_call("http://agents.example.com/", "hi", permits=permits,
                              resolve=await _resolver_to("10.0.0.5"))

    with pytest.raises(CapabilityDenied, match="private"):
        asyncio.run(go())
    assert seen == [("agents.example.com", None), ("agents.example.com", "10.0.0.5")]


@pytest.mark.parametrize("message", ["", "x" * (256 * 1024 + 1)])
def test_an_empty_or_oversized_message_is_refused_before_any_lookup(message):
    asked = []
    with pytest.raises(InvalidRequest):
        asyncio.run(a2a_call("http://127.0.0.1:9/", message, permits=lambda h, a: asked.append(h) or True))
    assert asked == []


@pytest.fixture
def server():
    """A real A2A server (the guard, the SDK's routes) on loopback whose card names
    ``card_url``; no kernel behind it: nothing may reach its executor in these tests."""
    started = []

    def start(card_url_of):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        srv = uvicorn.Server(uvicorn.Config(build_app(_cfg(card_url_of(port))), host="127.0.0.1", port=port,
                                            log_level="warning"))
        t = threading.Thread(target=srv.run, daemon=True)
        t.start()
        while not srv.started:
            time.sleep(0.02)
        started.append((srv, t))
        return url

    yield start
    for srv, t in started:
        srv.should_exit = True
        t.join(10)


def test_an_agent_card_pointing_to_another_host_is_refused(server):
    url = server(lambda port: "http://203.0.113.7:80/")  # the card sends clients elsewhere
    with pytest.raises(CapabilityDenied, match="talks only to the host it was given"):
        asyncio.run(a2a_call(url, "hi", permits=_allow("127.0.0.1")))


def test_an_agent_card_pointing_to_another_port_is_refused(server):
    url = server(lambda port: f"http://127.0.0.1:{port + 1}/")
    with pytest.raises(CapabilityDenied):
        asyncio.run(a2a_call(url, "hi", permits=_allow("127.0.0.1")))


def test_an_answer_over_the_bound_is_cut_off(server):
    url = server(lambda port: f"http://127.0.0.1:{port}/")
    with pytest.raises(LimitExceeded, match="over 64 bytes"):
        asyncio.run(a2a_call(url, "hi", permits=_allow("127.0.0.1"), max_bytes=64))


# ------------------------------------------------------------------ folding a streamed answer
_chunk = st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans(), st.text(alphabet="xyz", max_size=3),
                   st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(_chunk, max_size=12), st.sampled_from(["completed", "failed", "canceled", "working"]))
def test_a_streamed_answer_folds_like_the_reference_and_ignores_other_tasks(chunks, final):
    """Artifact chunks (replace or append, by id) and status updates fold into the answer a
    simple model gives; updates a remote sends for another task change nothing."""
    from a2a.types import (Artifact, Part, StreamResponse, Task, TaskArtifactUpdateEvent, TaskState,
                           TaskStatus, TaskStatusUpdateEvent)

    from agentix.tools.a2a_call import _Folded

    fold = _Folded("http://r/")
    fold.add(StreamResponse(task=Task(id="t1", context_id="c1",
                                      status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED))))
    model: dict[str, list[str]] = {}
    for art, append, text, foreign in chunks:
        ev = TaskArtifactUpdateEvent(task_id="t-other" if foreign else "t1", context_id="c1", append=append,
                                     artifact=Artifact(artifact_id=art, parts=[Part(text=text)]))
        fold.add(StreamResponse(artifact_update=ev))
        if not foreign:
            model[art] = model.get(art, []) + [text] if append else [text]
    for tid, state in (("t-other", "rejected"), ("t1", final)):
        fold.add(StreamResponse(status_update=TaskStatusUpdateEvent(
            task_id=tid, context_id="c1", status=TaskStatus(state=TaskState.Value("TASK_STATE_" + state.upper())))))
    out = fold.answer()
    assert out["task_id"] == "t1" and out["state"] == final
    assert out["text"] == "\n".join(x for texts in model.values() for x in texts)
    assert fold.running == (final == "working")
