"""Signatures as OCI referrers (distribution spec 1.1) and the tag-schema fallback.

Debian's docker-registry (distribution 2.8.2) has no referrers API: it answers
``GET /v2/NAME/referrers/DIGEST`` with 404, so against it a signature is pushed and found
under the tag ``sha256-<hex>.sig`` (tested against the real registry). The referrers path
is tested against ``ReferrersFront``: a small loopback server in front of that same real
registry that implements the referrers API as the spec describes it (it indexes a pushed
manifest's ``subject``, answers ``OCI-Subject``, and serves the image index, filtered by
``artifactType``); every other request goes through to the real registry unchanged."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentix.core.errors import NotFound, PackageRejected, RegistryError
from agentix.core.package import parse_ref
from agentix.packages.remote import INDEX_TYPE, RemoteRegistry
from agentix.packages.service import PackageStore
from agentix.packages.trust import SIGNATURE_ARTIFACT_TYPE

from .conftest import Registry, make_context


class ReferrersFront:
    """A referrers-API front for a registry without one (a real OCI 1.1 response on loopback).
    ``tamper(index)`` may rewrite the index it serves (attack tests)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.index: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.tamper: Callable[[dict[str, Any]], Any] | None = None
        self.supported = True   # False: answer the referrers API with 404, as distribution 2.8 does
        self.requests: list[tuple[str, str]] = []
        #: (method, path) -> None to go on, or (status, JSON body) to answer with instead
        self.intercept: Callable[[str, str], tuple[int, Any] | None] | None = None
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                front.requests.append((self.command, self.path))
                answer = front.intercept(self.command, self.path) if front.intercept is not None else None
                if answer is not None:
                    self._send(answer[0], json.dumps(answer[1]).encode(), {"Content-Type": "application/json"})
                    return
                parts = urlsplit(self.path)
                segs = parts.path.split("/")
                if self.command == "GET" and "referrers" in segs and not front.supported:
                    self._send(404, b"404 page not found\n", {"Content-Type": "text/plain"})
                    return
                if self.command == "GET" and "referrers" in segs:
                    i = segs.index("referrers")
                    name, digest = "/".join(segs[2:i]), segs[i + 1]
                    want = parse_qs(parts.query).get("artifactType", [None])[0]
                    found = [m for m in front.index.get((name, digest), [])
                             if want is None or m["artifactType"] == want]
                    index: Any = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": found}
                    if front.tamper is not None:
                        index = front.tamper(index)
                    data = index if isinstance(index, bytes) else json.dumps(index).encode()
                    self._send(200, data, {"Content-Type": INDEX_TYPE, "OCI-Filters-Applied": "artifactType"})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = httpx.request(self.command, f"http://{front.backend}{self.path}", headers=headers,
                                  content=body, timeout=10)
                out = dict(r.headers)
                if self.command == "PUT" and "manifests" in segs and r.status_code == 201:
                    m = json.loads(body)
                    subject = (m.get("subject") or {}).get("digest")
                    if subject and front.supported:
                        name = "/".join(segs[2:segs.index("manifests")])
                        entries = front.index.setdefault((name, subject), [])
                        d = r.headers["Docker-Content-Digest"]
                        if all(e["digest"] != d for e in entries):
                            entries.append({"mediaType": m["mediaType"], "digest": d, "size": len(body),
                                            "artifactType": m.get("artifactType")})
                        out["OCI-Subject"] = subject
                self._send(r.status_code, r.content, out)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _proxy

            def do_HEAD(self) -> None:
                front.requests.append(("HEAD", self.path))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                r = httpx.head(f"http://{front.backend}{self.path}", headers=headers, timeout=10)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.end_headers()

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(registry: Registry) -> Iterator[ReferrersFront]:
    f = ReferrersFront(registry.host)
    yield f
    f.close()


def publish(store: PackageStore, context: Path, ref: str) -> tuple[str, dict[str, Any]]:
    store.build(context, ref)
    store.keys.generate("publisher")
    store.sign(ref, "publisher")
    return store.keys.describe("publisher")["public_key"], store.push(ref)


def tags(host: str, name: str) -> list[str]:
    return httpx.get(f"http://{host}/v2/{name}/tags/list", timeout=5).json().get("tags") or []


def test_debians_registry_has_no_referrers_api_so_signatures_use_the_tag_schema(
        store: PackageStore, other_store: PackageStore, context: Path, registry: Registry) -> None:
    ref = registry.ref("team/tagged:1.0.0")
    pub, pushed = publish(store, context, ref)
    digest = pushed["digest"]
    assert RemoteRegistry(registry.host).referrers(parse_ref(ref), digest, SIGNATURE_ARTIFACT_TYPE) is None
    assert pushed["signatures_as"] == "tag"
    assert f"sha256-{digest[7:]}.sig" in tags(registry.host, "team/tagged")
    other_store.trust_add(pub, registry.ref("team/*"))
    r = other_store.pull(ref)
    assert r["verdict"]["basis"] == "signed" and r["signatures_via"] == "tag"
    assert other_store.verify(ref).basis == "signed"   # kept locally beside the package


def test_where_the_registry_has_the_referrers_api_the_signature_is_a_referrer_with_no_tag(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront,
        registry: Registry) -> None:
    ref = front.ref("team/referred:1.0.0")
    pub, pushed = publish(store, context, ref)
    digest = pushed["digest"]
    assert pushed["signatures_as"] == "referrer"
    # no signature tag on the real registry behind: only the referrers API can find it
    assert tags(registry.host, "team/referred") == ["1.0.0"]
    [listed] = RemoteRegistry(front.host).referrers(parse_ref(ref), digest, SIGNATURE_ARTIFACT_TYPE) or []
    assert listed.media_type == "application/vnd.oci.image.manifest.v1+json"
    other_store.trust_add(pub, front.ref("team/*"))
    r = other_store.pull(ref)
    assert r["verdict"]["basis"] == "signed" and r["signatures_via"] == "referrers"
    assert other_store.verify(ref).basis == "signed"
    # pushing again sends nothing new: the referrer is listed already, no manifest is PUT again
    front.requests.clear()
    again = store.push(ref)
    assert again["blobs_sent"] == 0 and again["signatures_as"] == "referrer"
    assert len(front.index[("team/referred", digest)]) == 1
    assert [p for m, p in front.requests if m == "PUT"] == ["/v2/team/referred/manifests/1.0.0"]


def test_a_package_signed_before_the_registry_had_referrers_is_still_found_by_its_tag(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront,
        registry: Registry) -> None:
    front.supported = False        # the registry of yesterday: 404 for the referrers API
    ref = front.ref("team/older:1.0.0")
    pub, pushed = publish(store, context, ref)
    assert pushed["signatures_as"] == "tag" and not front.index.get(("team/older", pushed["digest"]))
    front.supported = True         # upgraded: the API answers, with an empty index for it
    assert RemoteRegistry(front.host).referrers(parse_ref(ref), pushed["digest"], SIGNATURE_ARTIFACT_TYPE) == []
    other_store.trust_add(pub, front.ref("team/*"))
    r = other_store.pull(ref)
    assert r["verdict"]["basis"] == "signed" and r["signatures_via"] == "tag"


# ------------------------------------------------------------------ a lying referrers answer
def test_a_referrer_naming_another_subject_is_ignored_and_the_package_counts_as_unsigned(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront) -> None:
    ref = front.ref("team/lie:1.0.0")
    pub, pushed = publish(store, context, ref)
    other = front.ref("team/lie:2.0.0")
    make_context(context, version="2.0.0")
    store.build(context, other)
    store.sign(other, "publisher")
    second = store.push(other)
    # the index for 1.0.0 now lists 2.0.0's signature manifest (its subject is 2.0.0)
    front.index[("team/lie", pushed["digest"])] = list(front.index[("team/lie", second["digest"])])
    other_store.trust_add(pub, front.ref("team/*"))
    with pytest.raises(PackageRejected) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "unsigned"
    with pytest.raises(NotFound):
        other_store.layout.resolve(parse_ref(ref))


@pytest.mark.parametrize("answer", [b"not json", {"manifests": "nope"}, {"schemaVersion": 2}, [1, 2]])
def test_a_malformed_referrers_answer_is_a_protocol_error_and_stores_nothing(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront, answer: Any) -> None:
    ref = front.ref("team/garbled:1.0.0")
    pub, _ = publish(store, context, ref)
    front.tamper = lambda index: answer
    other_store.trust_add(pub, front.ref("team/*"))
    with pytest.raises(RegistryError) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "protocol"
    assert other_store.list() == []


def test_a_referrer_whose_manifest_does_not_match_its_digest_is_refused(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront) -> None:
    ref = front.ref("team/swapped:1.0.0")
    pub, pushed = publish(store, context, ref)

    def swap(index: dict[str, Any]) -> dict[str, Any]:
        # point the signature's descriptor at the package manifest (another digest's bytes)
        for m in index["manifests"]:
            m["digest"] = pushed["digest"]
        return index

    front.tamper = swap
    other_store.trust_add(pub, front.ref("team/*"))
    with pytest.raises(PackageRejected):
        other_store.pull(ref)
    assert other_store.list() == []


def test_a_flood_of_referrers_is_bounded(store: PackageStore, other_store: PackageStore, context: Path,
                                         front: ReferrersFront) -> None:
    ref = front.ref("team/flood:1.0.0")
    pub, pushed = publish(store, context, ref)
    real = front.index[("team/flood", pushed["digest"])][0]
    bogus = {**real, "digest": "sha256:" + "0" * 64}
    front.tamper = lambda index: {**index, "manifests": [real] + [bogus] * 10_000}
    listed = RemoteRegistry(front.host).referrers(parse_ref(ref), pushed["digest"], SIGNATURE_ARTIFACT_TYPE)
    assert listed is not None and len(listed) == 2   # de-duplicated, at most MAX_REFERRERS
    front.tamper = lambda index: {**index, "manifests": [
        {**real, "digest": f"sha256:{i:064x}"} for i in range(10_000)]}
    from agentix.packages.remote import MAX_REFERRERS

    listed = RemoteRegistry(front.host).referrers(parse_ref(ref), pushed["digest"], SIGNATURE_ARTIFACT_TYPE)
    assert listed is not None and len(listed) == MAX_REFERRERS
    # a pull looks at the first MAX_SIGNATURES of them and fails closed: none is the real one
    other_store.trust_add(pub, front.ref("team/*"))
    with pytest.raises((PackageRejected, RegistryError)):
        other_store.pull(ref)
    assert other_store.list() == []


def test_other_artifact_types_among_the_referrers_are_not_signatures(
        store: PackageStore, other_store: PackageStore, context: Path, front: ReferrersFront) -> None:
    ref = front.ref("team/sbom:1.0.0")
    pub, pushed = publish(store, context, ref)
    for m in front.index[("team/sbom", pushed["digest"])]:
        m["artifactType"] = "application/spdx+json"
    front.tamper = lambda index: index  # the front filters; the client filters again anyway
    other_store.trust_add(pub, front.ref("team/*"))
    with pytest.raises(PackageRejected) as exc:
        other_store.pull(ref)
    assert exc.value.data["reason"] == "unsigned"
