"""Attack 8 (a, b) on the registry client: a registry — or the token server its challenge
names — that answers on its own clock. ``requests``' timeout bounds each wait for the socket,
so one byte every 0.3 s (of the body, of the headers, of a token answer) never tripped a 1 s
timeout: a pull lasted as long as the registry liked (``packages/registry_clock.py`` now bounds
the whole request: the timeout plus one second per 16 KiB carried). And an answer whose body
the client did not want (an error's) was read whole into memory, however large.

Each test fails on the old code: the drips finished (after ~12 s) and came out as some other
error (``malformed_manifest``, ``not_found``, ``unauthorized``, ``unsigned``), and the
oversized error body was read to its end."""

from __future__ import annotations

import hashlib
import http.server
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import PackageRejected, RegistryError
from agentix.packages.build import ARTIFACT_TYPE, CONFIG_TYPE
from agentix.packages.layout import MANIFEST_TYPE
from agentix.packages.service import PackageStore
from tests.fakes.http_serving import serving

DRIP = 0.3          # seconds between two bytes of a drip
DRIPPED = 40        # bytes a drip sends: 12 s in all, against a 1 s timeout
CONFIG = b'{"metadata": {"name": "x", "version": "1.0.0"}}'
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def _manifest(config_size: int = len(CONFIG), digest: str = CONFIG_DIGEST) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
                       "config": {"mediaType": CONFIG_TYPE, "digest": digest, "size": config_size},
                       "layers": []}).encode()


class _Registry(http.server.BaseHTTPRequestHandler):
    """``routes``: (path prefix, answer(handler)); anything else 404. ``written``: the bytes each
    answer managed to send before the client went away."""

    protocol_version = "HTTP/1.1"
    routes: list[tuple[str, Callable[[Any], None]]] = []
    written: list[int]

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        for prefix, answer in self.routes:
            if self.path.startswith(prefix):
                try:
                    answer(self)
                except OSError:  # the client hung up: what it cut short is the point
                    pass
                finally:
                    self.written.append(-1)  # this answer is over
                return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET


def _whole(status: int, headers: dict[str, str], body: bytes, *, drip: bool = False) -> Callable[[Any], None]:
    """An answer: ``body`` at once, or one byte every ``DRIP`` seconds."""
    def answer(h: Any) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not drip:
            h.wfile.write(body)
            return
        h.wfile.flush()
        for i in range(len(body)):
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()
            time.sleep(DRIP)
    return answer


def _drip_headers(h: Any) -> None:
    h.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Pad: ")
    for _ in range(DRIPPED):
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(DRIP)
    h.wfile.write(b"\r\n\r\n")


@pytest.fixture
def registry(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[int]]]:
    written: list[int] = []
    with serving(type("R", (_Registry,), {"routes": request.param, "written": written})) as host:
        yield host, written


def _nothing_stored(s: PackageStore) -> None:
    assert s.list() == []
    blobs = s.layout.root / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


def _pull(tmp_path: Path, host: str, timeout: float = 1.0) -> BaseException:
    s = PackageStore(tmp_path / "h", timeout=timeout)
    with pytest.raises((RegistryError, PackageRejected)) as ei:
        s.pull(f"{host}/team/x:1.0.0")
    _nothing_stored(s)
    return ei.value


MANIFEST = "/v2/team/x/manifests/1.0.0"
JSON = {"Content-Type": MANIFEST_TYPE}

DRIPS = {
    "manifest body": [(MANIFEST, _whole(200, JSON, b"{" * DRIPPED, drip=True))],
    "manifest headers": [(MANIFEST, _drip_headers)],
    "token answer": [("/token", _whole(200, {}, b"{" * DRIPPED, drip=True)),
                     (MANIFEST, lambda h: _whole(401, {"WWW-Authenticate": f'Bearer realm="http://{h.headers["Host"]}'
                                                                            '/token",service="r"'}, b"")(h))],
    "config blob": [(MANIFEST, _whole(200, JSON, _manifest())),
                    (f"/v2/team/x/blobs/{CONFIG_DIGEST}", _whole(200, {}, CONFIG, drip=True))],
}


@pytest.mark.parametrize("registry", list(DRIPS.values()), indirect=True, ids=list(DRIPS))
def test_a_dripping_registry_or_token_server_times_out_on_our_clock(tmp_path: Path, registry: Any) -> None:
    host, _ = registry
    err = _pull(tmp_path, host)
    assert isinstance(err, RegistryError) and err.data["reason"] == "timeout", (type(err), err.data, err)
    assert "did not answer in time" in err.message


def _steady(size: int, piece: int, pause: float) -> Callable[[Any], None]:
    """A blob sent as a slow but honest link sends it: ``piece`` bytes every ``pause`` s."""
    def answer(h: Any) -> None:
        body = CONFIG + b" " * (size - len(CONFIG))
        h.send_response(200)
        h.send_header("Content-Length", str(size))
        h.end_headers()
        for i in range(0, size, piece):
            h.wfile.write(body[i:i + piece])
            h.wfile.flush()
            time.sleep(pause)
    return answer


BIG = 192 << 10
BIG_BODY = CONFIG + b" " * (BIG - len(CONFIG))
BIG_DIGEST = "sha256:" + hashlib.sha256(BIG_BODY).hexdigest()


@pytest.mark.parametrize("registry", [[(MANIFEST, _whole(200, JSON, _manifest(BIG, BIG_DIGEST))),
                                       (f"/v2/team/x/blobs/{BIG_DIGEST}", _steady(BIG, 48 << 10, 0.5))]],
                         indirect=True, ids=["96KiB/s"])
def test_a_slow_but_steady_blob_is_not_cut(tmp_path: Path, registry: Any) -> None:
    """192 KiB at 96 KiB/s takes 2 s, twice the 1 s timeout: the bytes keep coming faster
    than 16 KiB/s, so the clock moves on with them. The pull gets as far as the trust
    decision (the package is unsigned), not a timeout."""
    host, _ = registry
    err = _pull(tmp_path, host)
    assert isinstance(err, PackageRejected) and err.data["reason"] == "unsigned", (err.data, err)


def _endless(status: int, headers: dict[str, str]) -> Callable[[Any], None]:
    """An answer whose body is ``ERROR_BODY`` bytes, counted in ``written`` as they go out."""
    def answer(h: Any) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(ERROR_BODY))
        h.end_headers()
        piece = b" " * (1 << 20)
        for _ in range(ERROR_BODY >> 20):
            h.wfile.write(piece)
            h.written.append(len(piece))
    return answer


def _answered(written: list[int]) -> None:
    """Wait for the server's handler to be done with its answer (it marks that after the
    client may already have read it)."""
    deadline = time.monotonic() + 30
    while -1 not in written and time.monotonic() < deadline:
        time.sleep(0.05)
    assert -1 in written


def _hung_up_early(written: list[int]) -> None:
    """What the server got out before the client hung up: the head read, plus socket buffers."""
    _answered(written)
    assert sum(n for n in written if n > 0) < 32 << 20, sum(written)


ERROR_BODY = 96 << 20


@pytest.mark.parametrize("registry", [[(MANIFEST, _endless(400, {}))]], indirect=True)
def test_an_error_answer_is_read_no_further_than_its_first_mebibyte(tmp_path: Path, registry: Any) -> None:
    """A 400 whose body is 96 MiB: the client reads its head for the error codes, then hangs up
    (before: ``r.text`` read all of it into memory — an endless one, until memory ran out)."""
    host, written = registry
    err = _pull(tmp_path, host, timeout=5.0)
    assert isinstance(err, RegistryError) and err.data["reason"] == "protocol", err.data
    _hung_up_early(written)


@pytest.mark.parametrize("registry", [[(MANIFEST, _endless(302, {"Location": "/v2/team/x/manifests/elsewhere"}))]],
                         indirect=True)
def test_a_redirects_body_is_read_no_further_than_its_first_mebibyte(tmp_path: Path, registry: Any) -> None:
    """A 302 whose body is 96 MiB: the redirect is followed (to a 404 here) after its head is
    read (before: ``requests`` read all of it, ``resp.content``, before following it)."""
    host, written = registry
    err = _pull(tmp_path, host, timeout=5.0)
    assert isinstance(err, RegistryError) and err.data["reason"] == "not_found", err.data
    _hung_up_early(written)


# ---------------------------------------------------------------------- catalogue (held before)
@pytest.mark.parametrize("registry", [[(MANIFEST, _whole(429, {"Retry-After": "31536000"}, b""))],
                                      [(MANIFEST, _whole(503, {"Retry-After": "31536000"}, b""))]],
                         indirect=True, ids=["429", "503"])
def test_a_retry_after_of_a_year_is_reported_not_waited_for(tmp_path: Path, registry: Any) -> None:
    """No retry loop: the registry's answer is the error, at once (the request is made once)."""
    host, written = registry
    err = _pull(tmp_path, host, timeout=30.0)
    assert isinstance(err, RegistryError), err
    assert (err.data["status"], err.data["reason"]) in ((429, "rate_limited"), (503, "server_error")), err.data
    assert "try again later" in err.message
    _answered(written)
    assert written.count(-1) == 1


def test_credentials_do_not_follow_a_redirect_to_another_port(tmp_path: Path) -> None:
    """The registry's Basic credentials go with the first request (to the registry); a
    redirect to another host or port gets none (requests drops ``Authorization`` across
    origins; the up-front header is put on the request, not the session)."""
    seen: list[str | None] = []

    def elsewhere(h: Any) -> None:
        seen.append(h.headers.get("Authorization"))
        _whole(404, {}, b"")(h)

    with serving(type("B", (_Registry,), {"routes": [("/", elsewhere)], "written": []})) as other:
        to_other = _whole(307, {"Location": f"http://{other}/v2/team/x/manifests/1.0.0"}, b"")
        mine: list[str | None] = []

        def registry_answer(h: Any) -> None:
            mine.append(h.headers.get("Authorization"))
            to_other(h)

        with serving(type("A", (_Registry,), {"routes": [(MANIFEST, registry_answer)], "written": []})) as host:
            (tmp_path / "h" / "registry").mkdir(parents=True)
            (tmp_path / "h" / "registry" / "credentials.json").write_text(
                json.dumps({host: {"username": "me", "password": "secret"}}))
            err = _pull(tmp_path, host, timeout=5.0)
    assert isinstance(err, RegistryError) and err.data["reason"] == "not_found", err.data
    assert mine and all(a is not None and a.startswith("Basic ") for a in mine)   # the registry: yes
    assert seen and seen == [None] * len(seen)                                      # elsewhere: never


# ---------------------------------------------------------------------- JSON nested too deeply
DEEP = b"[" * 50000 + b"]" * 50000
DEEP_IN_OBJECT = b'{"errors": [{"code": "X", "detail": ' + DEEP + b"}]}"
DEEPS = {
    "manifest": ([(MANIFEST, _whole(200, JSON, DEEP))], PackageRejected, "malformed_manifest"),
    "error body": ([(MANIFEST, _whole(400, {}, DEEP_IN_OBJECT))], RegistryError, "protocol"),
    "token answer": ([("/token", _whole(200, {}, b'{"token": ' + DEEP + b"}")),
                      (MANIFEST, lambda h: _whole(401, {"WWW-Authenticate": f'Bearer realm="http://'
                                                  f'{h.headers["Host"]}/token",service="r"'}, b"")(h))],
                     RegistryError, "unauthorized"),
    "config": ([(MANIFEST, _whole(200, JSON, _manifest(len(DEEP), "sha256:" + hashlib.sha256(DEEP).hexdigest()))),
                ("/v2/team/x/blobs/", _whole(200, {}, DEEP))], PackageRejected, "malformed_manifest"),
    "not as deep, deeper than canonical JSON": (
        [(MANIFEST, _whole(200, JSON, b"[" * 900 + b"]" * 900))], PackageRejected, "malformed_manifest"),
}


@pytest.mark.parametrize("registry,expected", [(r, (c, why)) for r, c, why in DEEPS.values()],
                         indirect=["registry"], ids=list(DEEPS))
def test_json_nested_too_deeply_is_a_refusal_not_a_recursion_error(tmp_path: Path, registry: Any,
                                                                    expected: Any) -> None:
    """``json.loads`` of 50,000 nested arrays raised ``RecursionError`` (an internal error,
    not the refusal every bad input gets); 900 parsed, then broke whatever recursed over it.
    Everything a registry or the store hands the package code is now read by
    ``core.canonical.bounded_loads``: at most as deep as canonical JSON (65 levels)."""
    host, _ = registry
    s = PackageStore(tmp_path / "h", timeout=5.0)
    with pytest.raises(expected[0]) as ei:
        s.pull(f"{host}/team/x:1.0.0")
    assert ei.value.data["reason"] == expected[1], (ei.value.data, ei.value)
    _nothing_stored(s)


def test_bounded_loads_reads_what_canonical_json_writes_and_nothing_deeper() -> None:
    from agentix.core.canonical import MAX_DEPTH, bounded_loads, canonical_json

    for scalar in (b"null", b"1", b'"x"', b"true"):
        assert bounded_loads(scalar) == json.loads(scalar)
    v: list[Any] = []
    cur = v
    for _ in range(MAX_DEPTH - 1):
        cur.append([])
        cur = cur[0]
    assert bounded_loads(canonical_json(v)) == v                        # as deep as it writes
    for bad in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b'{"a": NaN}', b"[1e999]", b"", b"{"):
        with pytest.raises(ValueError):
            bounded_loads(bad)


def test_credentials_do_not_go_to_an_upload_location_on_another_host(tmp_path: Path) -> None:
    """A registry's upload session may be on another host (its ``Location``): the client PUT
    the blob there with the registry's ``Authorization`` sent up front, and answered a Basic
    challenge from there with the registry's password. Now the registry's credentials go to the
    registry's host and port only: the other host sees none, and its challenge is not answered
    (``unauthorized``). Fails on the old code (the other host got ``Basic …``)."""
    from tests.packages.conftest import make_context

    seen: list[str | None] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_PUT(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="elsewhere"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Elsewhere) as other:
        class Registry(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str]) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(404, {})

            do_GET = do_HEAD

            def do_POST(self) -> None:  # noqa: N802
                self._answer(202, {"Location": f"http://{other}/upload/1"})

        with serving(Registry) as host:
            s = PackageStore(tmp_path / "h", timeout=5.0)
            (s.layout.root / "credentials.json").write_text(json.dumps({host: {"username": "me",
                                                                               "password": "secret"}}))
            s.build(make_context(tmp_path / "ctx"), f"{host}/team/x:1.0.0")
            with pytest.raises(RegistryError) as ei:
                s.push(f"{host}/team/x:1.0.0")
    assert ei.value.data["reason"] == "unauthorized", ei.value.data
    assert seen and seen == [None] * len(seen), seen


def test_the_clocks_share_one_watchdog_thread_not_a_timer_per_request() -> None:
    """Every request armed a ``threading.Timer`` (an OS thread, again per re-arm): twenty
    requests in flight were twenty threads. Now one watchdog thread serves every clock."""
    import threading

    from agentix.packages.registry_clock import RequestClock

    clocks = [RequestClock(30.0) for _ in range(20)]
    for c in clocks:
        c.start()
    try:
        assert all(c.armed() for c in clocks)
        assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        assert len([t for t in threading.enumerate() if t.name == "registry-clock"]) == 1
    finally:
        for c in clocks:
            c.stop()
    assert not any(c.armed() for c in clocks) and not any(c.expired for c in clocks)
