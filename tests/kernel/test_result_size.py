"""A reply never carries more than ``rpc.framing.MAX_RESULT_BYTES`` of result.

Before, a handler's result went out whole however large: the kernel held it in its write
buffer until the agent read it, and a reply over ``MAX_UNREAD`` (16 MiB) closed the channel of
an agent with anything else unread. The kernel's own tools cap what they return (file_read 1
MiB, agent.logs 256 KiB, exec 256 KiB), but not every tool does: an MCP server may send up to
its ``max_message_bytes`` (at most 64 MiB), a registered tool what it likes. Here a tool of
the test's returns 20 MiB. Now such a call fails with ``limit_exceeded`` (``data.limit:
"result_bytes"``, saying what to do), is recorded as failed, and the channel goes on serving.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import LimitExceeded
from agentix.rpc.framing import MAX_RESULT_BYTES, check_result_size
from agentix.tools.base import ToolSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from security._world import World, run  # noqa: E402

READER = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=60)
got = {}
try:
    r = k.call("tool.call", name="bulk", args={})
    got["ok_chars"] = len(str(r))
except Exception as e:
    got.update(error=e.code, message=str(e), data=e.data)
got["after"] = k.call("tool.call", name="echo", args={"message": "still here"})
k.exit(got)
'''


class _World(World):
    programs = {"reader.py": READER}


def test_a_result_too_large_for_one_reply_is_a_clear_error_recorded_as_failed(tmp_path):
    async def body(w: World):
        async def bulk(ctx, args):
            return {"text": "x" * (20 * 1024 * 1024)}

        w.k.tools.register(ToolSpec("bulk", "20 MiB of text", {"type": "object"}, bulk))
        rec = await w.spawn(["tool: bulk", "tool: echo"], name="reader", program="reader.py")
        await w.k.deliver(None, rec, "go")
        await asyncio.wait_for(w.k.wait(rec, 120), 150)
        results = [e["data"] for e in w.events("tool.result", rec.agent_id)]
        return rec.exit, rec.result, results

    exit_, got, results = run(tmp_path, body, world=_World)
    assert exit_ is not None and exit_.reason == "completed", got
    assert "ok_chars" not in got, "the 20 MiB result was sent"
    assert got["error"] == "limit_exceeded"
    assert got["data"]["limit"] == "result_bytes" and got["data"]["reason"] == "result_too_large"
    assert got["data"]["max"] == MAX_RESULT_BYTES and got["data"]["size"] > MAX_RESULT_BYTES
    assert "in parts" in got["message"]          # it says what to do
    assert got["after"] == {"echo": "still here"}         # the channel goes on serving
    many = [r for r in results if r["tool"] == "bulk"]
    assert len(many) == 1 and many[0]["ok"] is False and many[0]["error"] == "limit_exceeded"


@pytest.mark.parametrize("size", [MAX_RESULT_BYTES - 2, MAX_RESULT_BYTES - 1])
def test_the_bound_is_on_the_results_json_size(size):
    check_result_size("m", "x" * (size - 2))  # its JSON: the quotes count
    with pytest.raises(LimitExceeded) as info:
        check_result_size("m", "x" * (size + 1 - 2) + "x" * (MAX_RESULT_BYTES - size))
    assert info.value.data["size"] == MAX_RESULT_BYTES + 1
    check_result_size("m", {1, 2})  # not JSON: left to encode_reply


class _Counting:
    """``orjson`` as rpc/framing sees it, counting the encodes that write a large string (what
    the hot path pays per reply; bytes already written, spliced in, are not written again)."""

    def __init__(self, real, floor: int) -> None:
        self._real, self._floor, self.large = real, floor, 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _writes_large(self, obj) -> bool:
        if isinstance(obj, str):
            return len(obj) >= self._floor
        if isinstance(obj, dict):
            return any(self._writes_large(v) for v in obj.values())
        if isinstance(obj, list):
            return any(self._writes_large(v) for v in obj)
        return False  # a number, None, or bytes spliced in as they are

    def dumps(self, obj, *a, **kw):
        if self._writes_large(obj):
            self.large += 1
        return self._real.dumps(obj, *a, **kw)


def _operator_channel(w: World):
    """The operator socket as agentixd serves it (one OperatorSession per connection), on a
    socket pair; returns (client socket, server task)."""
    import socket

    from agentix.kernel.dispatch import OperatorSession
    from agentix.rpc.server import serve_connection

    session = OperatorSession()
    a, b = socket.socketpair()
    a.setblocking(False)

    async def start():
        reader, writer = await asyncio.open_connection(sock=b)
        await serve_connection(reader, writer, lambda m, p: session.run(w.k.pipeline, m, p))

    return a, asyncio.create_task(start())


async def _ask(sock, frame: bytes) -> object:
    import orjson

    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, frame + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = await loop.sock_recv(sock, 1 << 20)
        assert chunk, "closed"
        buf += chunk
    return orjson.loads(buf)


def test_a_reply_writes_its_result_as_json_once(tmp_path, monkeypatch):
    """The pipeline wrote each result as JSON to size it (``check_result_size``) and the
    socket's writer wrote it again: two encodes of every reply on the hot path. Now the reply
    splices in the bytes the size check made: one encode of the 600 KB result, the same reply."""
    import orjson

    from agentix.rpc import framing

    counting = _Counting(orjson, 600_000)
    monkeypatch.setattr(framing, "orjson", counting)

    async def body(w: World):
        async def bulk(ctx, args):
            return {"text": "y" * 600_000, "n": [1, 2.5, None, "\u00e9"]}

        w.k.tools.register(ToolSpec("bulk", "600 KB of text", {"type": "object"}, bulk, durability="no_effect"))
        sock, task = _operator_channel(w)
        try:
            before = counting.large
            reply = await _ask(sock, b'{"jsonrpc":"2.0","id":7,"method":"tool.invoke","params":{"name":"bulk"}}')
            return reply, counting.large - before
        finally:
            sock.close()
            await asyncio.wait_for(task, 10)

    reply, encodes = run(tmp_path, body)
    assert reply == {"jsonrpc": "2.0", "id": 7, "result": {"text": "y" * 600_000, "n": [1, 2.5, None, "\u00e9"]}}
    assert encodes == 1, encodes


def test_a_batchs_results_are_bounded_in_all_like_one_result(tmp_path):
    """Each result was bounded (16 MiB) but a batch's were not summed: 24 results of 1 MiB went
    out as one 24 MiB reply, held whole (a batch of 64 near the bound: 1 GiB). Now the results
    of one batch are at most ``MAX_RESULT_BYTES`` in all; those past it are answered
    ``limit_exceeded`` (reason ``batch_too_large``, saying what to do), the rest as before."""
    import orjson

    async def body(w: World):
        async def bulk(ctx, args):
            return "z" * (1024 * 1024)

        w.k.tools.register(ToolSpec("bulk", "1 MiB of text", {"type": "object"}, bulk, durability="no_effect"))
        sock, task = _operator_channel(w)
        try:
            batch = [{"jsonrpc": "2.0", "id": i, "method": "tool.invoke", "params": {"name": "bulk"}}
                     for i in range(24)]
            return await _ask(sock, orjson.dumps(batch))
        finally:
            sock.close()
            await asyncio.wait_for(task, 10)

    replies = run(tmp_path, body)
    assert [r["id"] for r in replies] == list(range(24))
    ok = [r for r in replies if "result" in r]
    refused = [r["error"] for r in replies if "error" in r]
    assert len(ok) == MAX_RESULT_BYTES // (1024 * 1024 + 2) and all(r["result"] == "z" * (1024 * 1024) for r in ok)
    assert len(ok) + len(refused) == 24
    assert all(e["data"]["error"] == "limit_exceeded" and e["data"]["reason"] == "batch_too_large"
               and e["data"]["max"] == MAX_RESULT_BYTES for e in refused), refused[:1]
    assert "calls per batch" in refused[0]["message"]
    assert sum(len(orjson.dumps(r["result"])) for r in ok) <= MAX_RESULT_BYTES


_TEXT = st.text(st.characters(codec="utf-8"), max_size=3000)


@given(message=st.one_of(_TEXT, _TEXT.map(lambda t: t * 60)),
       data=st.dictionaries(st.text(max_size=20).filter(lambda k: k != "error"),
                            st.one_of(st.integers(-2**63, 2**63 - 1), _TEXT, _TEXT.map(lambda t: [t] * 40)), max_size=30))
@settings(max_examples=150, deadline=None)
def test_an_errors_reply_is_bounded_and_says_what_was_cut(message, data):
    """An error's message and data went out whole: text the kernel did not write (a remote MCP
    or A2A server's, a request's name echoed) could make one reply of any size, a batch of them
    more. Now an error's JSON is at most ``MAX_ERROR_BYTES``; one that fits is sent as it is,
    one that does not keeps the start of its message and its small fields, and says so."""
    import orjson

    from agentix.core.errors import ToolError
    from agentix.rpc.framing import MAX_ERROR_BYTES, error_reply

    err = ToolError(message, **data)
    whole = err.to_rpc()
    reply = error_reply(3, err)
    assert reply["id"] == 3 and reply["error"]["code"] == whole["code"]
    got = reply["error"]
    assert len(orjson.dumps(got)) <= MAX_ERROR_BYTES
    if len(orjson.dumps(whole)) <= MAX_ERROR_BYTES:
        assert got == whole
    else:
        assert got["message"][:1024] == message[:1024] and got["data"]["error"] == "tool_error"
        assert got["data"]["cut"]["bytes"] == len(orjson.dumps(whole))
        kept = {k: v for k, v in got["data"].items() if k not in ("cut", "error")}
        assert all(whole["data"][k] == v for k, v in kept.items())


def test_an_error_of_characters_that_escape_long_is_still_bounded():
    """The cut kept 8 KiB *characters* of the message and counted keys in characters: control
    characters escape to six bytes each, so a cut error could still pass the bound (66,707
    bytes here); the reply is measured again after the cut and cut to the code and a short
    message if it still does not fit."""
    import orjson

    from agentix.core.errors import ToolError
    from agentix.rpc.framing import MAX_ERROR_BYTES, error_reply

    data = {("\x01" * 60 + chr(65 + i)): "\x01" * 100 for i in range(40)}
    got = error_reply(1, ToolError("\x01" * 10000, **data))["error"]
    assert len(orjson.dumps(got)) <= MAX_ERROR_BYTES
    assert got["data"]["error"] == "tool_error" and got["data"]["cut"]["max"] == MAX_ERROR_BYTES


@given(st.lists(st.one_of(st.text(max_size=300), st.lists(st.integers(-2**63, 2**63 - 1), max_size=60), st.none()), max_size=40),
       st.integers(0, 3000))
@settings(max_examples=200, deadline=None)
def test_a_batchs_results_are_at_most_the_bound_in_all_whatever_their_sizes(results, limit):
    """Small results (under ``SPLICE_MIN``, not written ahead by the pipeline) count too: the
    results a bounded batch keeps are at most ``limit`` bytes of JSON in all, each is the value
    it was, and every other is ``batch_too_large``; the reply is the JSON of exactly that."""
    import orjson

    from agentix.rpc.framing import Encoded, bound_batch, encode_reply, result_reply

    replies = [result_reply(i, r) for i, r in enumerate(results)]
    out = bound_batch(replies, ["m"] * len(replies), limit)
    assert [r["id"] for r in out] == list(range(len(results)))
    kept = [r for r in out if "result" in r]
    assert sum(len(r["result"].raw) for r in kept) <= limit
    assert all(type(r["result"]) is Encoded and r["result"].value == results[r["id"]] for r in kept)
    assert all(r["error"]["data"]["reason"] == "batch_too_large" for r in out if "result" not in r)
    wire = orjson.loads(encode_reply(out)) if out else []
    assert [w.get("result") for w in wire if "result" in w] == [results[r["id"]] for r in kept]
