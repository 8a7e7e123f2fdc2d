"""Helpers for the stream attacks of test_attack2_http.py (kept apart: no tests here)."""

from __future__ import annotations

import json
import threading
from typing import Any


def sse_after_revocation(api: Any, name: str) -> dict[str, Any]:
    """Open an events stream with a fresh viewer token, revoke the token, make one more audit
    event, and report what the stream said afterwards (names of tokens.create events seen, and
    the error event's code)."""
    tok = api.daemon.client.call("tokens.create", name=name, role="viewer")["token"]
    out: dict[str, Any] = {"names": [], "error": None}
    opened = threading.Event()

    def read() -> None:
        with api.http(tok) as c, c.stream("GET", "/v1/events", params={"kind": "tokens"}) as s:
            opened.set()
            event = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "error":
                        out["error"] = data["error"]["code"]
                        return
                    if data.get("kind") == "tokens.create":
                        out["names"].append(data["data"]["name"])
                    event = None

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert opened.wait(20)
    api.daemon.client.call("tokens.revoke", name=name)
    api.daemon.client.call("tokens.create", name=f"{name}-after-revoke", role="viewer")
    t.join(40)
    out["names"] = [n.replace(f"{name}-", "") for n in out["names"]]
    return out
