"""The registry items of issue #15's "Bad input" list that had no test of their own: every
failing status (401, 403, 404, 5xx) and a registry that does not answer give one clear
``registry_error`` for a pull *and* for a push, naming the registry, and change nothing
locally; a manifest that is not the digest asked for, or not the digest the registry claims,
is refused before anything is written. (The rest of the list: tests/packages/test_unpack.py,
test_build.py, test_registry.py, test_refused_pull.py — the report lists each.)"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentix.core.errors import PackageRejected, RegistryError
from agentix.packages.service import PackageStore
from tests.fakes.http_serving import serving

from .conftest import make_context, store_files as files

REASON = {401: "unauthorized", 403: "unauthorized", 404: "not_found", 500: "server_error",
          502: "server_error", 503: "server_error"}


class _Fixed(http.server.BaseHTTPRequestHandler):
    """A registry that answers every request the same way: ``status`` with an empty body, or
    (``hang``) nothing for longer than the client waits, or (``body``) 200 with that body and
    ``headers``."""

    status = 500
    hang = False
    body = b""
    headers: dict[str, str] = {}

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.hang:
            time.sleep(3)
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = self.body if self.status == 200 else b""
        self.send_response(self.status)
        for k, v in (self.headers_out or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    headers_out: dict[str, str] | None = None
    do_HEAD = do_POST = do_PUT = do_PATCH = do_GET


def _serve(**attrs: object) -> contextlib.AbstractContextManager[str]:
    return serving(type("H", (_Fixed,), attrs))


@pytest.fixture
def fixed(request: pytest.FixtureRequest) -> Iterator[str]:
    with _serve(**request.param) as host:
        yield host


@pytest.fixture
def built(tmp_path: Path) -> PackageStore:
    s = PackageStore(tmp_path / "h", timeout=1.0)
    s.build(make_context(tmp_path / "ctx"), "team/x:1.0.0")
    return s


def _retag(s: PackageStore, host: str) -> str:
    """team/x:1.0.0 tagged HOST/team/x:1.0.0 (the registry a push goes to)."""
    from agentix.core.package import parse_ref

    ref = f"{host}/team/x:1.0.0"
    s.layout.tag(parse_ref(ref), s.layout.resolve(parse_ref("team/x:1.0.0")))
    return ref


@pytest.mark.parametrize("op", ["pull", "push"])
@pytest.mark.parametrize("code", sorted(REASON))
def test_every_failing_status_is_one_clear_error_and_changes_nothing(built: PackageStore, code: int,
                                                                      op: str) -> None:
    with _serve(status=code) as host:
        ref = _retag(built, host)
        before = files(built)
        with pytest.raises(RegistryError) as exc:
            getattr(built, op)(ref)
    assert exc.value.data["reason"] == REASON[code], exc.value.message
    assert exc.value.data["status"] == code  # the registry's own (a 403 is never called a 401)
    assert exc.value.data["registry"] == host and host in exc.value.message
    assert {401: "credentials", 403: "credentials", 404: "not found", 500: "try again later",
            502: "try again later", 503: "try again later"}[code] in exc.value.message
    assert files(built) == before


@pytest.mark.parametrize("op", ["pull", "push"])
@pytest.mark.parametrize("fixed", [{"hang": True, "status": 200}], indirect=True)
def test_a_registry_that_does_not_answer_times_out_for_pull_and_push(built: PackageStore, fixed: str,
                                                                     op: str) -> None:
    ref = _retag(built, fixed)
    before = files(built)
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as exc:
        getattr(built, op)(ref)
    assert exc.value.data["reason"] == "timeout" and "did not answer in time" in exc.value.message
    assert files(built) == before
    assert time.monotonic() - t0 < 60  # bounded: no retry loop (generous: the host is shared)


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.agentix.package.config.v1+json",
                                  "digest": "sha256:" + "1" * 64, "size": 2}, "layers": []}).encode()


@pytest.mark.parametrize("fixed", [{"status": 200, "body": MANIFEST,
                                    "headers_out": {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}}],
                         indirect=True)
def test_a_manifest_that_is_not_the_digest_asked_for_is_refused_before_anything_is_written(
        tmp_path: Path, fixed: str) -> None:
    s = PackageStore(tmp_path / "h", timeout=2.0)
    before = files(s)
    asked = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(PackageRejected) as exc:
        s.pull(f"{fixed}/team/x@{asked}")
    assert exc.value.data["reason"] == "digest_mismatch"
    assert exc.value.data["expected"] == asked
    assert exc.value.data["actual"] == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert files(s) == before


@pytest.mark.parametrize("fixed", [{"status": 200, "body": MANIFEST,
                                    "headers_out": {"Docker-Content-Digest": "sha256:" + "2" * 64}}],
                         indirect=True)
def test_a_manifest_that_is_not_the_digest_the_registry_claims_is_refused(tmp_path: Path, fixed: str) -> None:
    s = PackageStore(tmp_path / "h", timeout=2.0)
    before = files(s)
    with pytest.raises(PackageRejected) as exc:
        s.pull(f"{fixed}/team/x:1.0.0")
    assert exc.value.data["reason"] == "digest_mismatch" and exc.value.data["expected"] == "sha256:" + "2" * 64
    assert files(s) == before


class _ManyLayers(_Fixed):
    """A registry whose manifest lists ``MAX_LAYERS + 1`` distinct one-byte layers; it notes
    every path asked for (only the manifest may be)."""

    status = 200
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).asked.append(self.path)
        super().do_GET()


def test_a_manifest_listing_more_layers_than_a_package_may_have_is_refused_before_any_fetch(
        tmp_path: Path) -> None:
    from agentix.core.package import MAX_LAYERS

    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
               "digest": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(), "size": 1}
              for i in range(MAX_LAYERS + 1)]
    body = json.dumps({**json.loads(MANIFEST), "layers": layers}).encode()
    handler = type("H", (_ManyLayers,), {"body": body, "asked": [],
                                         "headers_out": {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}})
    s = PackageStore(tmp_path / "h", timeout=2.0)
    before = files(s)
    with serving(handler) as host, pytest.raises(PackageRejected) as exc:
        s.pull(f"{host}/team/x:1.0.0")
    assert exc.value.data["reason"] == "too_large"
    assert exc.value.data["layers"] == MAX_LAYERS + 1 and exc.value.data["max"] == MAX_LAYERS
    assert "fewer steps" in exc.value.message
    assert all("/manifests/" in p for p in handler.asked), handler.asked  # no blob was asked for
    assert files(s) == before


def test_an_agentfile_that_would_make_too_many_layers_is_refused_before_anything_is_built(
        tmp_path: Path) -> None:
    from agentix.core.errors import InvalidRequest
    from agentix.core.package import MAX_LAYERS

    ctx = make_context(tmp_path / "ctx")
    steps = "".join("      - copy: data/notes.txt\n        to: n/%d.txt\n" % i for i in range(MAX_LAYERS - 1))
    text = (ctx / "Agentfile").read_text()
    (ctx / "Agentfile").write_text(text.replace("      - copy: agent\n", "      - copy: agent\n" + steps, 1))
    with PackageStore(tmp_path / "h", timeout=2.0) as s:
        before = files(s)
        with pytest.raises(InvalidRequest) as exc:
            s.build(ctx, "team/x:1.0.0")
        assert exc.value.data["field"] == "stages.0.steps"
        assert f"{MAX_LAYERS + 1} layers" in exc.value.message and "merge copy steps" in exc.value.message
        assert files(s) == before
    # one step fewer builds
    (ctx / "Agentfile").write_text(text.replace("      - copy: agent\n", "      - copy: agent\n" + steps[: steps.rindex("      - copy")], 1))
    with PackageStore(tmp_path / "h2", timeout=2.0) as s:
        assert s.build(ctx, "team/x:1.0.0")
