"""Server-sent events over real HTTP: the audit log and an agent's output, resumable with
Last-Event-ID (the audit seq; for logs the byte offset)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import STANDARD, program


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into {id, event, data} dicts (comments skipped)."""
    cur: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "data" in cur:
                yield cur
            cur = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            cur[field] = cur.get(field, "") + ("\n" if field == "data" and field in cur else "") + value


def take(events: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [next(events) for _ in range(n)]


def _token(api, name: str) -> None:
    api.daemon.client.call("tokens.create", name=name, role="viewer")


def test_resume_with_last_event_id_gets_exactly_the_missed_events(api):
    params = {"kind": "tokens.create"}
    with api.http(api.viewer) as c:
        with c.stream("GET", "/v1/events", params=params) as s:
            assert s.status_code == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            _token(api, "sse-0")
            _token(api, "sse-1")
            got = take(sse_events(s.iter_lines()), 2)
        assert [json.loads(e["data"])["data"]["name"] for e in got] == ["sse-0", "sse-1"]
        assert [int(e["id"]) for e in got] == [json.loads(e["data"])["seq"] for e in got]
        last = got[-1]["id"]
        for i in (2, 3, 4):  # while the client is away
            _token(api, f"sse-{i}")
        with c.stream("GET", "/v1/events", params=params, headers={"Last-Event-ID": last}) as s:
            events = sse_events(s.iter_lines())
            missed = take(events, 3)
            _token(api, "sse-5")
            after = take(events, 1)
    assert [json.loads(e["data"])["data"]["name"] for e in missed] == ["sse-2", "sse-3", "sse-4"]
    # nothing else came between the missed ones and the next live one
    assert [json.loads(e["data"])["data"]["name"] for e in after] == ["sse-5"]
    ids = [int(e["id"]) for e in missed + after]
    assert ids == sorted(ids) and int(last) < ids[0]


def test_a_stream_without_last_event_id_starts_now(api):
    _token(api, "old-one")
    with api.http(api.operator) as c, c.stream("GET", "/v1/events", params={"kind": "tokens.create"}) as s:
        _token(api, "new-one")
        (ev,) = take(sse_events(s.iter_lines()), 1)
    assert json.loads(ev["data"])["data"]["name"] == "new-one"


def test_following_logs_streams_the_output_to_the_end(api):
    aid = api.daemon.spawn("lines.py", "20", name="sse-logs")
    with api.http(api.viewer) as c, c.stream("GET", f"/v1/agents/{aid}/logs") as s:
        assert s.status_code == 200
        chunks = []
        for ev in sse_events(s.iter_lines()):
            if ev.get("event") == "end":
                break
            chunks.append(ev)
    text = "".join(json.loads(e["data"])["data"] for e in chunks)
    assert text == "".join(f"line {i}\n" for i in range(20))
    # resume from the middle: exactly the rest
    mid = chunks[len(chunks) // 2]
    offset = int(mid["id"])
    with api.http(api.viewer) as c, c.stream("GET", f"/v1/agents/{aid}/logs",
                                             headers={"Last-Event-ID": str(offset)}) as s:
        rest = []
        for ev in sse_events(s.iter_lines()):
            if ev.get("event") == "end":
                break
            rest.append(json.loads(ev["data"])["data"])
    assert "".join(rest) == text.encode()[offset:].decode()


def test_logs_of_an_unknown_agent_is_404_before_the_stream(api):
    with api.http(api.viewer) as c:
        r = c.get("/v1/agents/no-such-agent/logs")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/v1/events", "/v1/agents/x/logs"])
def test_streams_need_a_token(api, path):
    with api.http() as c:
        r = c.get(path)
    assert r.status_code == 401


@pytest.mark.parametrize("bad", ["abc", "-1", "1e3"])
def test_a_bad_last_event_id_is_400(api, bad):
    with api.http(api.viewer) as c:
        r = c.get("/v1/events", headers={"Last-Event-ID": bad})
    assert r.status_code == 400 and r.json()["error"]["data"]["field"] == "Last-Event-ID"
