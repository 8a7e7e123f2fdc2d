"""Attack round 2 on the A2A server (a2a/server.py): its agent card is public (no token), so
it must carry nothing of the manifest but what a caller needs — never its env, system prompt,
capabilities, program, limits or the bearer token — and everything else needs the token.
These attacks held; the tests keep them held."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("a2a")

from agentix.a2a.server import CARD_PATH, A2AServerConfig, build_app  # noqa: E402

TOKEN = "s3cret-bearer-token-0123456789"
SECRETS = ["sk-live-ENVSECRET", "SYSTEM-PROMPT-SECRET", "/data/private/*", "secret: prodkey",
           "evil.example", TOKEN, "program-secret.py", "tool: exec"]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    manifest = {"name": "pub", "description": "answers questions", "version": "1.2.3",
                "program": "program-secret.py", "env": {"API_KEY": "sk-live-ENVSECRET"},
                "system_prompt": "SYSTEM-PROMPT-SECRET",
                "capabilities": ["file_read: /data/private/*", "secret: prodkey", "tool: exec",
                                 "network: evil.example"],
                "limits": {"memory": "512M"}}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = A2AServerConfig(home=None, manifest=manifest, token=TOKEN, url=f"http://127.0.0.1:{port}/")
    srv = uvicorn.Server(uvicorn.Config(build_app(cfg), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def test_the_public_agent_card_leaks_nothing_of_the_manifest_but_name_and_description(server):
    r = httpx.get(server + CARD_PATH, timeout=10)
    assert r.status_code == 200
    text = r.text
    for s in SECRETS:
        assert s not in text, s
    card = r.json()
    assert card["name"] == "pub" and card["description"] == "answers questions"


@pytest.mark.parametrize("path", [CARD_PATH + "/", CARD_PATH.upper(), "/.well-known/agent.json", "/",
                                  "/.well-known/../", "//.well-known/agent-card.json"])
def test_every_other_path_needs_the_token(server, path):
    body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}}
    r = httpx.post(server + path, json=body, timeout=10)
    g = httpx.get(server + path, timeout=10)
    for resp in (r, g):
        assert resp.status_code in (401, 404, 405), (path, resp.status_code, resp.text[:200])
        for s in SECRETS:
            assert s not in resp.text
    assert r.status_code != 200 and g.status_code != 200
