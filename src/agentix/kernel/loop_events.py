"""``loop.event``: what an agent's tool loop reports to the kernel for the audit log.

(``kernel.KernelRoot`` registers it with ``register(pipeline, events=, home=, config=)``.)

    loop.event {kind, data}

Kinds and rules:

* ``repeat_call`` {tool, count, args_sha256} — the loop flagged a repeated identical call.
* ``context_summarised`` {span, messages, summary, tokens_before} — the originals are
  written to ``$AGENTIX_HOME/archive/<agent_id>/<n>-<unix_ms>.json`` (mode 0600) before the
  event is recorded; the event carries the archive path, not the messages. If the archive
  cannot be written the call fails and the loop keeps its history.
* ``context_summary_failed`` {span, tokens, error, message}
* ``skill_applied`` {skill, allowed_tools}
* ``progress`` {stage, ...} — orchestrator progress, streamed by the CLI.
* ``context_cut`` {messages_cut, window, budget} — messages were cut to fit a hard window.

Each is recorded as event ``loop.<kind>`` against the caller. Data is bounded
(``MAX_DATA`` as JSON; ``MAX_ARCHIVE`` bytes per archive, ``MAX_ARCHIVES`` archives per
agent, and all of an agent's archives together at most ``[kernel] archive_quota`` bytes,
32 MiB by default) so an agent cannot flood the log or the disk. Over the quota the call is
``limit_exceeded`` (``data.limit == "archive_quota"``) and nothing is written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from agentix.core.errors import InvalidRequest, LimitExceeded
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Call, EventSink, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.methods import method
from agentix.tools.thread_work import in_thread

__all__ = ["KINDS", "MAX_ARCHIVE", "MAX_ARCHIVES", "MAX_DATA", "register", "write_archive"]

KINDS = frozenset({"repeat_call", "context_summarised", "context_summary_failed", "skill_applied", "progress",
                   "context_cut"})
MAX_DATA = 16 * 1024
MAX_ARCHIVE = 16 * 1024 * 1024
MAX_ARCHIVES = 256   # per agent: a loop summarises a few times per run, not thousands


def write_archive(root: Path, agent_id: str, payload: dict[str, Any], quota: int | None = None) -> Path:
    """Write one archive file (0600) under ``root/agent_id``; return its path.

    Refused (nothing written) past ``MAX_ARCHIVES`` files or ``quota`` bytes for the agent.
    """
    d = root / agent_id
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = list(d.iterdir())
    n = len(files)
    if n >= MAX_ARCHIVES:
        raise LimitExceeded(f"this agent already has {n} context archives; the limit is {MAX_ARCHIVES}",
                            limit=MAX_ARCHIVES)
    data = orjson.dumps(payload)
    if quota is not None:
        used = sum(f.lstat().st_size for f in files)
        if used + len(data) > quota:
            raise LimitExceeded(
                f"context archives would take {used + len(data)} bytes (this one {len(data)}); the "
                f"quota is {quota} bytes per agent ([kernel] archive_quota)",
                limit="archive_quota", quota=quota, used=used, size=len(data))
    path = d / f"{n:05d}-{int(time.time() * 1000)}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def register(pipeline: Pipeline, *, events: EventSink, home: Home, config: KernelConfig) -> None:
    archive_root = home.root / "archive"

    async def loop_event(call: Call) -> dict[str, Any]:
        kind = call.params.get("kind")
        data = call.params.get("data") or {}
        if kind not in KINDS:
            raise InvalidRequest(f"loop.event kind must be one of {sorted(KINDS)}", field="kind")
        if not isinstance(data, dict):
            raise InvalidRequest("loop.event data must be an object", field="data")
        agent_id = call.caller.agent_id
        assert agent_id is not None
        if kind == "context_summarised":
            payload = {**data, "agent_id": agent_id, "at": time.time()}  # the kernel's fields win
            size = len(orjson.dumps(payload, default=str))
            if size > MAX_ARCHIVE:
                raise LimitExceeded(f"archive of {size} bytes exceeds {MAX_ARCHIVE}", limit=MAX_ARCHIVE)
            path = await in_thread(lambda: write_archive(archive_root, agent_id, payload, config.archive_quota))
            msgs = data.get("messages")
            data = {"archive": str(path), "span": data.get("span"),
                    "messages": len(msgs) if isinstance(msgs, list) else None,
                    "tokens_before": data.get("tokens_before"),
                    "summary_chars": len(str(data.get("summary", "")))}
        elif len(orjson.dumps(data, default=str)) > MAX_DATA:
            raise LimitExceeded(f"loop.event data is larger than {MAX_DATA} bytes", limit=MAX_DATA)
        await events.record(f"loop.{kind}", agent_id, data, tuple(sorted(call.taint)))
        return {"recorded": True, **({"archive": data["archive"]} if "archive" in data else {})}

    pipeline.register(method("loop.event", loop_event, agent=True))
