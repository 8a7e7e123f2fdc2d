"""JSON-RPC 2.0 framing: one JSON value per line (newline-delimited JSON).

The wire format, on the operator socket and on every agent channel alike:

* a frame is one UTF-8 JSON text followed by ``\\n``; JSON escapes newlines inside
  strings, so a frame never contains a raw newline;
* a frame longer than the connection's limit (default 1 MiB, including the newline) is
  refused: the peer gets a ``invalid_request`` error naming the limit and the connection
  is closed, because the rest of the oversized frame cannot be told apart from the next;
* a frame that is not JSON gets a ``parse_error`` reply with ``id: null``; the connection
  stays open;
* a frame that is JSON but not a JSON-RPC 2.0 request gets ``invalid_request``;
* a JSON array is a batch: the reply is an array of the replies, in order;
* a connection closed in the middle of a frame is simply closed (the half frame is
  dropped, nothing runs);
* a call's result is at most ``MAX_RESULT_BYTES`` of JSON (``check_result_size``): a larger
  one is answered with ``limit_exceeded`` (``data.limit: "result_bytes"``) instead; the results
  of one batch are at most that in all (``bound_batch``: the ones past it are answered
  ``limit_exceeded``, reason ``batch_too_large``). A result of ``SPLICE_MIN`` bytes or more is
  written as JSON once: the pipeline sizes it so, and the reply puts those bytes in
  (``Encoded``); a smaller one is written again (cheaper than putting the bytes in);
* an error's JSON is at most ``MAX_ERROR_BYTES`` (``error_reply``): a longer message is cut
  and oversized data replaced, saying so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from agentix.core.errors import AgentixError, InvalidRequest, ParseError

__all__ = [
    "DEFAULT_FRAME_LIMIT",
    "Encoded",
    "MAX_ERROR_BYTES",
    "SPLICE_MIN",
    "bound_batch",
    "FrameTooLarge",
    "MAX_RESULT_BYTES",
    "check_result_size",
    "MAX_DEPTH",
    "decode",
    "encode",
    "encode_reply",
    "error_reply",
    "too_deep",
    "too_deep_reply",
    "read_frame",
    "result_reply",
    "validate_request",
]

DEFAULT_FRAME_LIMIT = 1024 * 1024
#: the largest result one reply carries (its JSON): a channel's whole allowance of unread
#: replies (``rpc.server.MAX_UNREAD``), so one reply never closes a channel by itself
MAX_RESULT_BYTES = 16 * 1024 * 1024
#: the smallest result a reply carries as the pipeline wrote it (``Encoded``): a smaller one is
#: written again, which costs less than putting the bytes in (bench: a 30-byte echo)
SPLICE_MIN = 2048
#: the largest error one reply carries (its JSON; ``error_reply`` cuts a larger one)
MAX_ERROR_BYTES = 64 * 1024
_ERROR_MESSAGE_CHARS = 8 * 1024  # a cut error keeps this much of its message
_ERROR_FIELD_BYTES = 1024  # and the fields of its data this small
#: how deep a request may nest. The decoder reads 1024 levels but the encoder writes only 254:
#: a value nested deeper than the kernel can write back (an exit result, a reply to
#: ``agent.run``, a tool's echo) would make every later reply that carries it fail — an
#: operator's ``agentix inspect``, a parent's ``agent.wait_child`` that never returns. So a
#: request is refused at the frame, before any handler keeps what it holds.
MAX_DEPTH = 128


class FrameTooLarge(InvalidRequest):
    """A frame over the size limit (``invalid_request``, ``data.limit``); the server replies
    with it and closes the connection."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"frame larger than the limit of {limit} bytes; connection closed",
                         limit=limit)
        self.limit = limit


class Encoded:
    """A result already written as JSON (``check_result_size`` wrote it to size it): a reply
    carrying it (``encode_reply``) puts these bytes in as they are, never writes ``value``
    again (``value`` is there for what looks at the result on its way out: telemetry's span
    attributes)."""

    __slots__ = ("raw", "value")

    def __init__(self, raw: bytes, value: Any) -> None:
        self.raw, self.value = raw, value


def encode(message: Any) -> bytes:
    """One frame: compact JSON plus newline."""
    return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)


def too_deep(frame: bytes, msg: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether the decoded ``msg`` of ``frame`` nests deeper than ``limit`` (a frame with fewer
    brackets than that cannot, so the common case costs two ``bytes.count``)."""
    if frame.count(b"[") + frame.count(b"{") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(msg, 1)]
    while stack:
        val, depth = stack.pop()
        if isinstance(val, dict):
            if depth >= limit and val:
                return True
            stack.extend((v, depth + 1) for v in val.values())
        elif isinstance(val, list):
            if depth >= limit and val:
                return True
            stack.extend((v, depth + 1) for v in val)
    return False


def _id_of(msg: Any) -> Any:
    rid = msg.get("id") if isinstance(msg, dict) else None
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def too_deep_reply(msg: Any, limit: int = MAX_DEPTH) -> Any:
    """The refusal of a frame that ``too_deep`` found: one error per request, with its id."""
    err = InvalidRequest(f"the request nests deeper than {limit} levels of arrays and objects; "
                         "send flatter data", limit=limit)
    if isinstance(msg, list) and msg:
        return [error_reply(_id_of(m), err) for m in msg]
    return error_reply(_id_of(msg), err)


def encode_reply(reply: Any) -> bytes:
    """``encode`` for a reply (or a batch of replies); a result that cannot be written as JSON
    becomes that request's ``internal_error``, so no caller waits for a reply that never comes."""
    try:
        if type(reply) is list:
            return b"[" + b",".join(map(_reply_bytes, reply)) + b"]\n"
        if type(reply) is dict and type(reply.get("result")) is Encoded:
            return _reply_bytes(reply) + b"\n"
        return orjson.dumps(reply, option=orjson.OPT_APPEND_NEWLINE)  # the common case: one call
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        from agentix.core.errors import InternalError

        err = InternalError("the reply could not be written as JSON; see the kernel log")
        if isinstance(reply, list):
            return encode([error_reply(_id_of(r), err) for r in reply])
        return encode(error_reply(_id_of(reply), err))


def _reply_bytes(reply: Any) -> bytes:
    """One reply's JSON; an ``Encoded`` result is put in as it was written."""
    res = reply.get("result") if type(reply) is dict else None
    if type(res) is Encoded:
        return b'{"jsonrpc":"2.0","id":%b,"result":%b}' % (orjson.dumps(reply.get("id")), res.raw)
    return orjson.dumps(reply)


def check_result_size(method: str, result: Any, limit: int = MAX_RESULT_BYTES) -> bytes | None:
    """``result`` written as JSON (a reply may put these bytes in as they are: ``Encoded``);
    ``limit_exceeded`` (``data.limit: "result_bytes"``) if that takes more than ``limit`` bytes:
    such a reply would be held whole in the kernel's memory and close the channel of a peer
    with anything else unread. A result that is not JSON: None (left to ``encode_reply``)."""
    try:
        raw = orjson.dumps(result)
    except (TypeError, ValueError):
        return None
    if len(raw) > limit:
        raise _result_too_large(method, len(raw), limit)
    return raw


def _result_too_large(method: str, size: int, limit: int, batch: bool = False) -> AgentixError:
    from agentix.core.errors import LimitExceeded

    what = "this batch's results" if batch else "the result"
    return LimitExceeded(
        f"{method}: {what} would be {size} bytes of JSON, more than a reply may carry ({limit} "
        "bytes); it was not sent. Ask for less at a time: read a file in parts (offset and "
        "limit), fewer files per file_read_many or calls per batch, a log with max_bytes, or have "
        "the work write its output to a file in the workspace and read that in parts",
        limit="result_bytes", reason="batch_too_large" if batch else "result_too_large", size=size, max=limit)


def bound_batch(replies: list[Any], methods: list[str], limit: int = MAX_RESULT_BYTES) -> list[Any]:
    """A batch's replies with at most ``limit`` bytes of results in all: each result that would
    take the sum over it is answered ``limit_exceeded`` (reason ``batch_too_large``) instead (one
    result is bounded by ``check_result_size``). This bounds the reply that is written, not what
    the batch's calls held while they ran: their results are all in memory when this runs (at
    most ``batch_limit`` of them, each bounded). Each result is ``Encoded`` on the way (written
    once here if the pipeline did not); an error is kept as it is."""
    total = 0
    out = []
    for reply, method in zip(replies, methods):
        if type(reply) is not dict or "result" not in reply:
            out.append(reply)
            continue
        res = reply["result"]
        if type(res) is not Encoded:  # a small one (SPLICE_MIN): sized here, written once more
            try:
                res = Encoded(orjson.dumps(res), res)
            except (TypeError, ValueError):
                out.append(reply)  # not JSON: encode_reply answers it
                continue
            reply = {**reply, "result": res}
        if total + len(res.raw) > limit:
            reply = error_reply(reply.get("id"), _result_too_large(method, total + len(res.raw), limit, batch=True))
        else:
            total += len(res.raw)
        out.append(reply)
    return out


def decode(frame: bytes) -> Any:
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as err:
        raise ParseError(f"frame is not valid JSON: {err}") from None


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The next frame without its newline; None at a clean or mid-frame EOF.

    The reader must have been created with ``limit`` >= our limit so that readuntil
    reports overruns rather than buffering without bound.
    """
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None  # EOF, possibly in the middle of a frame: drop the half frame
    except asyncio.LimitOverrunError:
        raise FrameTooLarge(limit) from None
    if len(line) > limit:
        raise FrameTooLarge(limit)
    return line[:-1]


def validate_request(msg: Any) -> tuple[Any, str, dict[str, Any], bool]:
    """Check a decoded JSON-RPC request; return (id, method, params, is_notification)."""
    if not isinstance(msg, dict):
        raise InvalidRequest("a JSON-RPC request must be an object")
    if msg.get("jsonrpc") != "2.0":
        raise InvalidRequest('a JSON-RPC request must have "jsonrpc": "2.0"')
    method = msg.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidRequest('a JSON-RPC request must have a string "method"')
    params = msg.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest('"params" must be an object (named parameters)')
    is_notification = "id" not in msg
    req_id = msg.get("id")
    if req_id is not None and not isinstance(req_id, (str, int)) or isinstance(req_id, bool):
        raise InvalidRequest('"id" must be a string, an integer or null')
    return req_id, method, params, is_notification


def result_reply(req_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


def error_reply(req_id: Any, err: AgentixError) -> dict[str, Any]:
    """The reply carrying ``err``, at most ``MAX_ERROR_BYTES`` of JSON: an error can carry text
    the kernel did not write (a remote MCP or A2A server's, a request's name echoed), and a batch
    of such would be held whole. Past the bound the message is cut and each field of the data
    longer than ``_ERROR_FIELD_BYTES`` (or past 8 KiB of them) dropped, both said in the data
    (``cut``)."""
    body = err.to_rpc()
    try:
        size = len(orjson.dumps(body))
    except (TypeError, ValueError):
        size = MAX_ERROR_BYTES + 1  # data that is not JSON: only the fields that are survive
    if size > MAX_ERROR_BYTES:
        body = _cut_error(body, size)
        if len(orjson.dumps(body)) > MAX_ERROR_BYTES:  # characters that escape to six bytes, long keys
            body = {**body, "message": body["message"][:1024],
                    "data": {k: body["data"][k] for k in ("error", "cut") if k in body["data"]}}
    return {"jsonrpc": "2.0", "id": req_id, "error": body}


def _cut_error(body: dict[str, Any], size: int) -> dict[str, Any]:
    message = body["message"]
    if len(message) > _ERROR_MESSAGE_CHARS:
        message = message[:_ERROR_MESSAGE_CHARS] + f" [{len(message) - _ERROR_MESSAGE_CHARS} more characters cut]"
    data: dict[str, Any] = {}
    dropped, kept = [], 0
    for key, value in body["data"].items():
        try:
            n = len(orjson.dumps(value)) + len(key)
        except (TypeError, ValueError):
            n = MAX_ERROR_BYTES
        if n <= _ERROR_FIELD_BYTES and kept + n <= _ERROR_MESSAGE_CHARS:
            data[key] = value
            kept += n
        else:
            dropped.append(key[:64])
    data["cut"] = {"bytes": size, "max": MAX_ERROR_BYTES, "fields": dropped[:16]}
    return {**body, "message": message, "data": data}
