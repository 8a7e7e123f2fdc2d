"""The dashboard's static route serves a fixed set of files: traversal in any spelling gets 404
and reads nothing; every response, API ones too, carries the security headers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from agentix.rpc.static import CSP, load_static
from http_api.conftest import Api

STATIC = Path(__file__).resolve().parents[2] / "src" / "agentix" / "web" / "static"

TRAVERSALS = [
    "/ui/../openapi.json", "/ui/..%2f..%2fagentix.db", "/ui/%2e%2e/%2e%2e/etc/passwd",
    "/ui/..%252f..%252fetc%252fpasswd", "/ui//etc/passwd", "/ui/%2fetc%2fpasswd", "/ui/./app.js/..",
    "/ui/..\\..\\agentix.db", "/ui/.hidden", "/ui/app.js%00.css", "/ui/static/app.js",
    "/ui/../../../../../../etc/passwd",
]


def raw_get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (an HTTP client would normalise the dot segments away)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_on_the_static_route_is_refused(dash: Api, path: str) -> None:
    status, headers, body = raw_get(dash.url, path)
    assert status == 404, (path, status)   # not one of the fixed files: nothing else is read
    assert b'"not_found"' in body and b"root:" not in body and b"SQLite format" not in body
    assert headers["content-security-policy"] == CSP


def test_the_fixed_files_are_served(dash: Api) -> None:
    status, headers, body = raw_get(dash.url, "/ui/app.js")
    assert status == 200 and body.startswith(b"//") and headers["content-type"].startswith("text/javascript")
    status, headers, _ = raw_get(dash.url, "/ui/")
    assert status == 308 and headers["location"] == "/"


def test_every_response_carries_the_security_headers(dash: Api) -> None:
    with httpx.Client(base_url=dash.url) as c:
        for r in [c.get("/"), c.get("/ui/app.js"), c.get("/ui/nope.js"), c.get("/openapi.json"),
                  c.post("/v1/call/kernel.info"), c.get("/v1/whoami")]:
            h = r.headers
            assert h["content-security-policy"] == CSP, r.url
            assert "frame-ancestors 'none'" in h["content-security-policy"]
            assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY", r.url
            assert h["referrer-policy"] == "no-referrer"
        js = c.get("/ui/app.js")
        assert js.headers["content-type"].startswith("text/javascript")


def test_whoami_names_the_token_role_and_refuses_a_bad_token(dash: Api) -> None:
    with dash.http(dash.viewer) as c:
        assert c.get("/v1/whoami").json()["role"] == "viewer"
    with dash.http(dash.operator) as c:
        assert c.get("/v1/whoami").json()["role"] == "operator"
    with dash.http("agx_0000000000000000_" + "x" * 30) as c:
        r = c.get("/v1/whoami")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_a_symlink_or_dotfile_in_the_static_dir_is_never_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "secret.txt").write_text("s")
    os.symlink("/etc/passwd", tmp_path / "passwd.txt")
    (tmp_path / ".env.txt").write_text("k")
    (tmp_path / "tool.py").write_text("print(1)")
    files = load_static(tmp_path)
    assert sorted(files.files) == ["index.html", "secret.txt"]


def test_the_dashboard_code_never_parses_data_as_html() -> None:
    """textContent and createElement only: no innerHTML/outerHTML/insertAdjacentHTML,
    document.write or eval anywhere in the shipped JavaScript."""
    bad = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    offenders = {p.name: bad.findall(p.read_text()) for p in STATIC.glob("*.js") if bad.search(p.read_text())}
    assert not offenders, offenders


SEGMENTS = ["..", ".", "%2e%2e", "%2E%2E", "%2f", "%5c", "%00", "\\\\", "", "app.js", "index.html", "ui",
            "etc", "passwd", "agentix.db", "%252e%252e", ".%2e", "~", "static", "web"]


def test_no_request_path_under_ui_reads_anything_but_the_fixed_files(dash: Api) -> None:
    """Property: whatever path is asked under /ui/, the answer is 404 or exactly one of the
    shipped files' bytes (uvicorn's decoding and Starlette's routing included)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    shipped = {name: data for name, (data, _ctype) in load_static(STATIC).files.items()}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
    def check(parts: list[str]) -> None:
        path = "/ui/" + "/".join(parts)
        status, _headers, body = raw_get(dash.url, path)
        assert status in (200, 307, 308, 400, 404), (path, status)
        if status == 200:
            assert body in shipped.values(), path
        assert b"root:" not in body and b"SQLite format" not in body

    check()
