"""Streamed ``think``: partial text reaches the agent over its channel (``think.delta``
notifications) before the reply, through the SDK's ``on_text`` callback and ``think_stream``
iterator. Real kernel, real agent process, a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from tests.fakes.routed_openai import RoutedOpenAIServer, config_toml, text

PROGRAM = '''
import time
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=10)
msgs = [{"role": "user", "content": "count"}]
seen = []
reply = k.think(msgs, on_text=lambda t: seen.append(t), max_tokens=50)
stream = k.think_stream(msgs, max_tokens=50)
pieces = list(stream)
plain = k.think(msgs, max_tokens=50)
try:
    k.call("think", messages=msgs, stream=True, stream_id={"bad": 1})
    bad = None
except Exception as e:
    bad = e.code
try:
    k.think(msgs, stream=True)  # not a think() argument: the typed method refuses it
    unknown = None
except TypeError:
    unknown = "TypeError"
k.exit({"seen": seen, "reply": reply.text, "pieces": pieces, "stream_result": stream.result.text,
        "plain": plain.text, "bad": bad, "unknown": unknown, "types": [type(reply).__name__,
        type(stream.result).__name__], "usage": plain.usage, "raw_text": plain.raw["text"]})
'''


def test_streamed_text_reaches_the_agent_piece_by_piece(tmp_path):
    words = "one two three four five six"
    server = RoutedOpenAIServer(lambda data: text(words), tokens_per_second=200)
    server.start()

    async def go():
        home = Home(tmp_path / "home")
        home.create()
        (home.root / "config.toml").write_text(config_toml(server.base_url, kernel=False))
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
        await k.start()
        prog = tmp_path / "streamer.py"
        prog.write_text(PROGRAM)
        rec = await k.spawn(parse_manifest({"name": "streamer", "program": str(prog), "isolation": "degraded",
                                            "capabilities": ["model: fake:fake-model"]}),
                            message="go")
        await k.wait(rec, 60)
        await k.shutdown()
        return rec

    try:
        rec = asyncio.run(go())
    finally:
        server.stop()
    assert rec.exit.reason == "completed", Path(rec.log_path).read_text()
    out = rec.result
    # the callback got every piece, in order, before think returned
    assert len(out["seen"]) == 6 and "".join(out["seen"]) == words == out["reply"]
    assert len(out["pieces"]) == 6 and "".join(out["pieces"]) == words == out["stream_result"]
    assert out["plain"] == words
    assert out["bad"] == "invalid_request"
    # think returns a typed Reply (its raw reply kept); it takes only think's own arguments
    assert out["types"] == ["Reply", "Reply"] and out["raw_text"] == words
    assert out["usage"]["output_tokens"] > 0 and out["unknown"] == "TypeError"
    # streamed requests went out with stream: true, the plain one without
    assert [b.get("stream", False) for b in server.stats.bodies] == [True, True, False]
