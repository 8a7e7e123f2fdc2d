"""Push and pull packages to and from a remote OCI registry (the OCI Distribution API).
(Over 400 lines: one client of the OCI Distribution API, with a bound on every response it
reads.)

Built on ``oras`` (the ORAS project's Python client): its ``Registry`` does the requests,
the blob upload protocol (POST, then PUT with the digest); the 401 challenges (Basic, or
Bearer tokens per scope from the registry's token realm) are answered by
``packages/registry_auth.py``. This module adds what a package manager needs on top:

* one error family: every failure is ``RegistryError`` with ``data.reason`` —
  ``unauthorized`` (401/403), ``not_found`` (404), ``server_error`` (5xx), ``timeout``,
  ``unreachable``, ``protocol`` (an answer that makes no sense) — and ``data.status``;
* a timeout on every request, and no retry loop with sleeps (oras's default retries for
  minutes; a CLI should answer);
* manifests are sent as the exact bytes that were hashed (a re-serialised manifest would
  change its digest);
* every byte pulled is checked against its digest before it is stored, and blobs go to a
  temporary file first: an interrupted pull leaves no partial package visible (the local
  tag is written last), and an interrupted push leaves no tag on the registry (the
  manifest is sent last, after every blob it names);
* a blob the registry already has is not sent again: re-pushing does not duplicate; a blob
  another repository of the registry holds is mounted from it (``push_blob(mount_from=)``:
  ``POST .../uploads/?mount=&from=``; the caller knows where from: ``packages/pushed.py``);
* error bodies are read for their codes and the digests they name (``data.codes``,
  ``data.digests``: ``MANIFEST_BLOB_UNKNOWN`` tells a push which blob the registry lacks);
* the OCI referrers API (distribution spec 1.1, ``GET /v2/NAME/referrers/DIGEST``):
  ``referrers`` lists the manifests whose ``subject`` is a digest, or says the registry does
  not implement it (a 404), so the caller falls back to the tag schema; ``put_referrer``
  pushes a manifest by digest and says whether the registry indexed its subject (the
  ``OCI-Subject`` answer header).

Credentials: ``$AGENTIX_HOME/registry/credentials.json`` maps a registry host to
``{"username": ..., "password": ...}`` or ``{"token": ...}``; ``"insecure": true`` speaks
plain HTTP (default only for loopback hosts: localhost, 127.0.0.0/8, [::1]).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import oras.auth
import oras.provider
import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error

from agentix.core.canonical import bounded_loads
from agentix.core.errors import AgentixError, NotFound, PackageRejected, RegistryError
from agentix.core.package import Ref, check_digest, sha256_digest
from agentix.packages.layout import CHUNK, MANIFEST_TYPE, Descriptor, Layout, start_writeback
from agentix.packages.registry_auth import MAX_TOKEN_ANSWER, Challenges
from agentix.packages.registry_clock import RequestClock
from agentix.packages.registry_urls import MAX_REDIRECTS, check_url, pin_session

__all__ = ["Credentials", "RemoteRegistry", "StagedBlob", "ACCEPT", "INDEX_TYPE"]

log = logging.getLogger(__name__)

ACCEPT = [MANIFEST_TYPE]
MAX_MANIFEST = 4 << 20
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
DIGEST_IN_TEXT = re.compile(r"sha256:[a-f0-9]{64}")
#: a blob up to this size is uploaded without a HEAD first (sending it again costs no more)
ASK_FIRST = 64 << 10
#: at most this many referrers of one artifact are looked at (the rest are ignored)
MAX_REFERRERS = 64
#: a blob being downloaded is handed to the disk every this many bytes (``start_writeback``)
WRITEBACK = 2 << 20
#: of an answer whose body is not wanted (an error's, an upload's, a challenge's) this much is
#: read (an error body is read for its codes), the rest never
MAX_ANSWER = 1 << 20


def _is_loopback(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return h in ("localhost", "[::1]") or h.startswith("127.")


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None
    insecure: bool | None = None

    @staticmethod
    def load(path: Path, host: str) -> Credentials:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return Credentials()
        except ValueError:
            raise RegistryError(f"{path} is not valid JSON", reason="config", registry=host) from None
        entry = data.get(host) or {}
        return Credentials(entry.get("username"), entry.get("password"), entry.get("token"),
                           entry.get("insecure"))


class _AuthFailed(Exception):
    """Answering a registry's 401/403 failed; ``status`` is the registry's last answer."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class _Registry(oras.provider.Registry):
    """oras's Registry with a timeout on every request and no sleeping retries."""

    timeout: float = 30.0
    last_status: int = 401

    def do_request(self, url: str, method: str = "GET", data: Any = None, headers: dict | None = None,
                   json: dict | None = None, stream: bool = False) -> requests.Response:
        inner = oras.provider.Registry.do_request.__wrapped__  # type: ignore[attr-defined]
        try:
            return inner(self, url, method, data, headers, json, stream)
        except (requests.RequestException, AgentixError):  # AgentixError: a refused redirect/realm
            raise
        except Exception as err:
            # everything else raised in there comes from answering a 401/403 challenge
            raise _AuthFailed(str(err), getattr(self, "last_status", 401)) from None


def _fail(what: str, host: str, *, status: int | None = None, err: BaseException | None = None,
          body: str = "") -> RegistryError:
    if err is not None:
        if isinstance(err, requests.TooManyRedirects):
            return RegistryError(f"{what}: the registry {host} redirected more than {MAX_REDIRECTS} times",
                                 reason="redirect", registry=host)
        if isinstance(err, requests.Timeout):
            return RegistryError(f"{what}: the registry {host} did not answer in time", reason="timeout",
                                 registry=host)
        if isinstance(err, requests.ConnectionError):
            return RegistryError(f"{what}: cannot reach the registry {host} ({type(err).__name__})",
                                 reason="unreachable", registry=host)
        if isinstance(err, _AuthFailed) and err.status == 403:
            return _fail(what, host, status=403)
        if isinstance(err, (_AuthFailed, oras.auth.AuthenticationException)):
            return RegistryError(f"{what}: the registry {host} wants credentials we do not have; add "
                                 f"them to registry/credentials.json", reason="unauthorized",
                                 registry=host, status=401)
        return RegistryError(f"{what}: {err}", reason="protocol", registry=host)
    assert status is not None
    if status in (401, 403):
        return RegistryError(f"{what}: the registry {host} refused our credentials (HTTP {status}); "
                             "check registry/credentials.json", reason="unauthorized", registry=host,
                             status=status)
    if status == 404:
        return RegistryError(f"{what}: not found on {host} (HTTP 404)", reason="not_found", registry=host,
                             status=status)
    if status >= 500:
        return RegistryError(f"{what}: the registry {host} failed (HTTP {status}); try again later",
                             reason="server_error", registry=host, status=status)
    if status == 429:
        return RegistryError(f"{what}: the registry {host} is limiting our requests (HTTP 429); try "
                             "again later", reason="rate_limited", registry=host, status=status)
    return RegistryError(f"{what}: unexpected HTTP {status} from {host}: {body[:200]}", reason="protocol",
                         registry=host, status=status, **_error_details(body))


def _error_details(body: str) -> dict[str, list[str]]:
    """From a registry's error body (the distribution spec's ``{"errors": [{"code": ...,
    "detail": ...}]}``): ``codes``, e.g. ``MANIFEST_BLOB_UNKNOWN``, and ``digests``, the
    digests the details name (distribution names each unknown blob)."""
    try:
        errors = bounded_loads(body[:MAX_MANIFEST]).get("errors")
        codes = [str(e["code"]) for e in errors if isinstance(e, dict) and isinstance(e.get("code"), str)][:16]
        digests = [d for e in errors[:64] if isinstance(e, dict)
                   for d in DIGEST_IN_TEXT.findall(json.dumps(e.get("detail")))][:64]
        return {"codes": codes, "digests": digests}
    except (ValueError, AttributeError, TypeError):
        return {"codes": [], "digests": []}


class RemoteRegistry:
    def __init__(self, host: str, credentials: Credentials = Credentials(), *, timeout: float = 30.0,
                 challenges: Challenges | None = None) -> None:
        """``challenges``: another client's answers to this host's 401s (``sibling``), so clients
        of one operation working in parallel log in once, not once each."""
        self.host = host
        self.credentials = credentials
        self.timeout = timeout
        self._side: RemoteRegistry | None = None
        insecure = credentials.insecure if credentials.insecure is not None else _is_loopback(host)
        # oras's basic backend adds no header of its own: ``challenges`` answers every 401
        self.reg = _Registry(hostname=host, insecure=insecure, auth_backend="basic")
        self.reg.timeout = timeout
        session_request = self.reg.session.request

        # every URL the registry sends us to (a redirect, a token realm) is checked first
        # (packages/registry_urls.py: no file://, no metadata or loopback address, no downgrade)
        scheme = self.reg.prefix
        # one lookup per host: what is checked is where the connection goes (no DNS rebinding)
        # every request on the kernel's clock, headers and body (packages/registry_clock.py):
        # its watchdog shuts these connections down when a registry drips
        self.clock = RequestClock(timeout)
        answers = pin_session(self.reg.session, host, scheme, connections=self.clock.connections)

        def checked_redirect(r: requests.Response, *a: Any, **kw: Any) -> None:
            if r.is_redirect:
                check_url(host, scheme, urljoin(r.url, r.headers.get("location", "")), resolve=answers)
                # requests reads a redirect's body whole before following it: its head only
                r._content = _read_head(r, MAX_ANSWER)

        self.reg.session.max_redirects = MAX_REDIRECTS
        self.reg.session.hooks["response"].append(checked_redirect)

        def request(*a: Any, **kw: Any) -> requests.Response:
            url = str(kw.get("url") or a[1])
            if "://" in url:  # no scheme at all: requests refuses it itself (MissingSchema)
                check_url(host, scheme, url, resolve=answers)
            kw.setdefault("timeout", timeout)
            body = kw.get("data")
            if hasattr(body, "seek"):
                body.seek(0)  # a retry after an auth challenge sends the whole blob again
            if isinstance(body, _Upload):
                body.clock = self.clock  # counts what it sends: a big upload is not a drip
            # always streamed: no body is read whole into memory unless we read it, bounded
            wanted_stream = kw.get("stream", False)
            kw["stream"] = True
            self.clock.start(len(body) if isinstance(body, (bytes, bytearray)) else 0)
            try:
                r = session_request(*a, **kw)
                self.reg.last_status = r.status_code  # a 403 we cannot answer is reported as a 403
                if not wanted_stream or r.status_code in (401, 403):  # its body: bounded, on the clock
                    r._content = _read_head(r, MAX_ANSWER)
                    self.clock.stop()
            except requests.RequestException:
                if self.clock.expired:
                    raise self._late(url) from None
                raise
            if self.clock.expired:  # cut short: what came is not the answer (headers end at EOF)
                r.close()
                raise self._late(url)
            return r

        self.reg.session.request = request  # type: ignore[method-assign]
        def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
            r = self.reg.session.request("GET", url, headers=headers, stream=True)  # checked, pinned
            try:
                body = _read_head(r, MAX_TOKEN_ANSWER + 1)  # one more: too large
            except requests.RequestException:
                if self.clock.expired:
                    raise self._late(url) from None
                raise
            finally:
                self.clock.stop()
            if self.clock.expired:
                raise self._late(url)
            return r.status_code, body

        #: answers to the registry's 401s, Basic or Bearer (packages/registry_auth.py), shared by
        #: siblings; a token is fetched under its lock, through the client that asks (its clock)
        self.challenges = challenges or Challenges(credentials.username, credentials.password,
                                                   credentials.token, fetch)

        def authenticate(original: Any, headers: Any, *a: Any, **kw: Any) -> Any:
            if not self._own(original.url):  # credentials are the registry host's, never another's
                return dict(headers or {}), False
            try:
                return self.challenges.answer(original, headers, *a, fetch=fetch, **kw)
            except AgentixError:  # a realm check_url refused
                raise
            except Exception as err:  # a token realm we cannot reach, an answer we cannot read...
                raise _AuthFailed(str(err)) from None

        self.reg.auth.authenticate_request = authenticate  # type: ignore[method-assign]

    def _own(self, url: str) -> bool:
        """Whether ``url`` is on the registry's own host and port (where its credentials go)."""
        default = 443 if self.reg.prefix == "https" else 80
        try:
            parts, own = urlsplit(url), urlsplit(f"{self.reg.prefix}://{self.host}")
            return (parts.scheme == own.scheme and parts.hostname == own.hostname
                    and (parts.port or default) == (own.port or default))
        except ValueError:  # a port that is not a number
            return False

    def _late(self, url: str) -> RegistryError:
        """The error of a request the clock cut short (``RequestClock``)."""
        return RegistryError(f"the registry {self.host} did not answer in time (a request to "
                             f"{url.split('?')[0][:200]} took over {self.timeout:g} s, and its bytes came slower "
                             "than 16 KiB/s)", reason="timeout", registry=self.host)

    def _read(self, r: requests.Response, limit: int, what: str) -> bytes:
        """``r``'s body, at most ``limit`` bytes (``too_large`` past it), on the clock."""
        try:
            data = _read_bounded(r, limit, what, self.clock)
        except RegistryError:
            if self.clock.expired:
                raise self._late(r.url or self.host) from None
            raise
        finally:
            self.clock.stop()
        if self.clock.expired:
            raise self._late(r.url or self.host)
        return data

    def sibling(self) -> RemoteRegistry:
        """A client of its own (a connection for another thread) that shares this one's answers
        to the registry's challenges."""
        return RemoteRegistry(self.host, self.credentials, timeout=self.timeout, challenges=self.challenges)

    def _url(self, ref: Ref, kind: str, what: str) -> str:
        return f"{self.reg.prefix}://{self.host}/v2/{ref.path}/{kind}/{what}"

    def _request(self, what: str, url: str, method: str, *, ok: tuple[int, ...] = (200,),
                 headers: dict[str, str] | None = None, data: Any = None,
                 stream: bool = False) -> requests.Response:
        headers = dict(headers or {})
        # what last answered a challenge, sent up front: no round trip, no body sent twice —
        # to the registry's own host only (an upload's Location may name another)
        if self._own(url):
            headers.update(self.challenges.up_front())
        try:
            r = self.reg.do_request(url, method, data=data, headers=headers, stream=stream)
        except AgentixError:
            raise
        except Exception as err:
            raise _fail(what, self.host, err=err) from None
        if r.status_code not in ok:
            body = ""
            try:
                if r._content is False:  # streamed, not read yet: its head only, on the clock
                    r._content = _read_head(r, MAX_ANSWER)
                body = r.text
            except Exception:
                pass
            finally:
                self.clock.stop()
                r.close()
            raise _fail(what, self.host, status=r.status_code, body=body)
        return r

    # ------------------------------------------------------------ reading
    def get_manifest(self, ref: Ref) -> tuple[Descriptor, bytes]:
        """The manifest bytes for NAME:TAG or NAME@DIGEST, verified against the digest."""
        what = f"fetching {ref}"
        url = self._url(ref, "manifests", ref.digest or ref.tag or "latest")
        r = self._request(what, url, "GET", headers={"Accept": ", ".join(ACCEPT)}, stream=True)
        data = self._read(r, MAX_MANIFEST, what)
        digest = sha256_digest(data)
        if ref.digest is not None and digest != ref.digest:
            raise PackageRejected(f"{what}: the registry sent a manifest whose digest is {digest}",
                                  reason="digest_mismatch", expected=ref.digest, actual=digest)
        claimed = r.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise PackageRejected(f"{what}: the manifest does not match the digest the registry "
                                  f"claims ({claimed})", reason="digest_mismatch", expected=claimed,
                                  actual=digest)
        mt = r.headers.get("Content-Type", MANIFEST_TYPE).split(";")[0].strip()
        return Descriptor(mt, digest, len(data)), data

    def exists(self, ref: Ref) -> bool:
        url = self._url(ref, "manifests", ref.digest or ref.tag or "latest")
        try:
            self._request(f"checking {ref}", url, "HEAD", headers={"Accept": ", ".join(ACCEPT)})
            return True
        except RegistryError as err:
            if err.data.get("reason") == "not_found":
                return False
            raise

    def fetch_blob(self, ref: Ref, desc: Descriptor, layout: Layout, max_size: int) -> bool:
        """Download a blob into ``layout`` (verified); False if it was there already."""
        if layout.has_blob(desc.digest):
            return False
        self.stage_blob(ref, desc, layout, max_size).commit()
        return True

    def stage_blob(self, ref: Ref, desc: Descriptor, layout: Layout, max_size: int,
                   stop: threading.Event | None = None) -> StagedBlob:
        """Download a blob into a private temporary file of ``layout`` (``tmp/``), hashed as it
        arrives, checked against its digest and size, and fsynced; it is not in the store until
        the caller ``commit()``s it (``discard()``: gone, as if never fetched). ``stop``: once set,
        the download ends at its next chunk (``PackageRejected``, reason ``stopped``): a pull
        refused meanwhile does not wait for the rest of a layer it will not keep."""
        if desc.size > max_size:
            raise PackageRejected(f"blob {desc.digest} is {desc.size} bytes; the limit is {max_size}",
                                  reason="too_large")
        what = f"downloading {desc.digest[:19]} of {ref}"
        r = self._request(what, self._url(ref, "blobs", desc.digest), "GET", stream=True)
        tmp = layout.temp_path("pull")
        f = None
        try:
            h = hashlib.sha256()
            n = written = flushed = 0
            # counted as each socket read arrives (the clock), written CHUNK at a time: one
            # read1 is at most 16 KiB on TLS, and a write per read is ~64 times the syscalls
            pieces: list[bytes] = []
            held = 0
            f = open(tmp, "wb", buffering=0)
            try:
                for chunk in _chunks(r, CHUNK):
                    self.clock.carried(len(chunk))
                    if stop is not None and stop.is_set():
                        raise PackageRejected(f"{what}: stopped (the pull was refused or failed)",
                                              reason="stopped")
                    n += len(chunk)
                    if n > desc.size:
                        raise PackageRejected(f"{what}: the registry sent more than the {desc.size} "
                                              "bytes the manifest names", reason="digest_mismatch")
                    h.update(chunk)
                    pieces.append(chunk)
                    held += len(chunk)
                    if held < CHUNK:
                        continue
                    written += _write_all(f.fileno(), pieces)
                    held = 0
                    if written - flushed >= WRITEBACK:  # the fsync below then finds most of it on disk
                        start_writeback(f.fileno(), flushed, written - flushed)
                        flushed = written
                _write_all(f.fileno(), pieces)
            except requests.RequestException as err:
                if self.clock.expired:
                    raise self._late(r.url or self.host) from None
                raise _fail(what, self.host, err=err) from None
            finally:
                self.clock.stop()
            if self.clock.expired:
                raise self._late(r.url or self.host)
            actual = "sha256:" + h.hexdigest()
            if actual != desc.digest or n != desc.size:
                raise PackageRejected(f"{what}: the content does not match its digest (got {actual}, "
                                      f"{n} bytes)", reason="digest_mismatch", expected=desc.digest,
                                      actual=actual)
            os.fsync(f.fileno())
            staged, f = StagedBlob(layout, tmp, f, desc.digest), None
            return staged
        finally:
            if f is not None:  # not handed out: nothing of it is left
                f.close()
                tmp.unlink(missing_ok=True)
            r.close()

    def referrers(self, ref: Ref, digest: str, artifact_type: str) -> list[Descriptor] | None:
        """The manifests in ``ref``'s repository whose ``subject`` is ``digest`` and whose
        artifact type is ``artifact_type`` (at most ``MAX_REFERRERS``), through the OCI
        referrers API; None when the registry does not implement it (it answers 404: the spec
        has a registry that does answer 200, with an empty index, for an unknown subject)."""
        what = f"listing the referrers of {check_digest(digest)[:19]} in {ref.name}"
        url = self._url(ref, "referrers", digest) + "?artifactType=" + quote(artifact_type, safe="")
        try:
            r = self._request(what, url, "GET", headers={"Accept": INDEX_TYPE}, stream=True)
        except RegistryError as err:
            if err.data.get("reason") == "not_found":
                return None
            raise
        data = self._read(r, MAX_MANIFEST, what)
        try:
            index = bounded_loads(data)
            manifests = index["manifests"]
            if not isinstance(manifests, list):
                raise TypeError("manifests is not a list")
        except (ValueError, KeyError, TypeError) as err:
            raise RegistryError(f"{what}: the registry's answer is not an OCI image index ({err})",
                                reason="protocol", registry=self.host) from None
        out: list[Descriptor] = []
        for m in manifests:
            # the registry may not apply the filter (no OCI-Filters-Applied): filter here too
            if not isinstance(m, dict) or m.get("artifactType") != artifact_type:
                continue
            d = Descriptor.from_data(m)
            if d.media_type == MANIFEST_TYPE and d.digest not in {x.digest for x in out}:
                out.append(d)
            if len(out) >= MAX_REFERRERS:
                break
        return out

    # ------------------------------------------------------------ writing
    def has_blob(self, ref: Ref, digest: str) -> bool:
        url = self._url(ref, "blobs", check_digest(digest))
        try:
            self._request(f"checking blob {digest[:19]}", url, "HEAD")
            return True
        except RegistryError as err:
            if err.data.get("reason") == "not_found":
                return False
            raise

    def push_blob(self, ref: Ref, desc: Descriptor, layout: Layout, *, mount_from: str | None = None) -> str:
        """Make sure ``ref``'s repository holds the blob: ``"mounted"`` from the repository
        ``mount_from`` of the same registry (no bytes sent; distribution answers 201), else
        ``"present"`` if the registry has it (asked only for blobs over ``ASK_FIRST`` bytes,
        while the upload session opens: ``_open_upload``), else ``"sent"`` (uploaded: POST,
        then PUT with the digest). A mount the registry does not do — the blob is not in
        ``mount_from``, the credentials cannot read it, no mount support — falls back to the
        upload: the upload session the registry opened instead (202), or, if it refused the
        mount outright (401/403/404), the ordinary HEAD and POST, then PUT."""
        what = f"uploading {desc.digest[:19]} to {ref.name}"
        uploads = f"{self.reg.prefix}://{self.host}/v2/{ref.path}/blobs/uploads/"
        r: requests.Response | None = None
        if mount_from is not None and mount_from != ref.path:
            try:
                r = self._request(what, f"{uploads}?mount={quote(desc.digest, safe='')}&from="
                                  f"{quote(mount_from, safe='/')}", "POST", ok=(201, 202),
                                  headers={"Content-Length": "0"})
            except RegistryError as err:
                if err.data.get("reason") not in ("unauthorized", "not_found"):
                    raise
                log.debug("%s: mount from %s refused (%s); uploading", what, mount_from, err.message)
                r = None
            if r is not None and r.status_code == 201:
                return "mounted"
        if r is None:
            # a small blob is sent without asking first: the HEAD would cost the same round trip
            r = self._open_upload(what, uploads, ref, desc)
            if r is None:
                return "present"
        location = self._location(what, r)
        sep = "&" if "?" in location else "?"
        try:
            f = open(layout.blob_path(desc.digest), "rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"blob {desc.digest} is not in the local store", digest=desc.digest) from None
        with f:
            body: Any = _Upload(f, desc) if desc.size else b""
            try:
                self._request(what, f"{location}{sep}digest={desc.digest}", "PUT", ok=(201,),
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(desc.size)}, data=body)
            except RegistryError:
                if desc.size:
                    body.check()  # an altered local blob is named as such, not by the registry's refusal
                raise
        return "sent"

    def _location(self, what: str, r: requests.Response) -> str:
        location = r.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: the registry gave no upload location", reason="protocol",
                                registry=self.host)
        return location if location.startswith("http") else f"{self.reg.prefix}://{self.host}{location}"

    def _open_upload(self, what: str, uploads: str, ref: Ref, desc: Descriptor) -> requests.Response | None:
        """Open an upload session (POST) for ``desc``; None if the registry holds the blob
        already. For a blob over ``ASK_FIRST`` bytes that is asked (HEAD) on a second client
        of this one's while the session opens — one round trip, not two, before the bytes go
        — and a session not needed is cancelled (DELETE). A failed HEAD is the error raised."""
        post = {"Content-Type": "application/octet-stream"}
        if desc.size <= ASK_FIRST:
            return self._request(what, uploads, "POST", ok=(202,), headers=post)
        if self._side is None:  # kept: it answers an auth challenge once, not per blob
            self._side = self.sibling()
        side_client = self._side
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="head") as side:
            has_f = side.submit(side_client.has_blob, ref, desc.digest)
            try:
                r = self._request(what, uploads, "POST", ok=(202,), headers=post)
            except BaseException:
                has_f.result()  # the HEAD's failure first, as when it was asked first
                raise
        if not has_f.result():
            return r
        try:  # the registry has it: the session opened meanwhile is not needed
            self._request(what, self._location(what, r), "DELETE", ok=(200, 202, 204))
        except RegistryError as err:  # a registry keeps an abandoned session for a while
            log.debug("%s: cancelling an upload not needed: %s", what, err.message)
        return None

    def put_manifest(self, ref: Ref, media_type: str, data: bytes) -> str:
        what = f"publishing {ref}"
        r = self._request(what, self._url(ref, "manifests", ref.tag or ref.digest or "latest"), "PUT",
                          ok=(201,), headers={"Content-Type": media_type}, data=data)
        digest = sha256_digest(data)
        claimed = r.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise RegistryError(f"{what}: the registry stored digest {claimed}, we sent {digest}",
                                reason="protocol", registry=self.host)
        return digest


    def put_referrer(self, ref: Ref, media_type: str, data: bytes, subject: str) -> bool:
        """Push a manifest naming ``subject`` by its digest (no tag); True if the registry
        says it indexed the subject (``OCI-Subject: SUBJECT``), so the referrers API finds it."""
        digest = sha256_digest(data)
        what = f"publishing {ref.name}@{digest[:19]}"
        r = self._request(what, self._url(ref, "manifests", digest), "PUT", ok=(201,),
                          headers={"Content-Type": media_type}, data=data)
        claimed = r.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise RegistryError(f"{what}: the registry stored digest {claimed}, we sent {digest}",
                                reason="protocol", registry=self.host)
        return r.headers.get("OCI-Subject") == subject
class StagedBlob:
    """A downloaded blob, verified and fsynced, waiting in the store's private ``tmp/``
    (``RemoteRegistry.stage_blob``): ``commit()`` moves it into the store (the file it was
    hashed into, so a run does not hash it again: ``Layout.commit_file(fd=)``); ``discard()``
    removes it. Each happens once; a context exit discards what was not committed."""

    def __init__(self, layout: Layout, path: Path, f: Any, digest: str) -> None:
        self.layout, self.path, self.f, self.digest = layout, path, f, digest

    def commit(self) -> None:
        try:
            # hashed as it arrived, written by us into the store's private tmp/ and
            # fsynced: not read and hashed a second time (nor by a run, while unchanged)
            self.layout.commit_file(self.path, self.digest, hashed=True, fd=self.f.fileno())
        finally:
            self.discard()

    def discard(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.path.unlink(missing_ok=True)  # after a commit: already gone

    def __enter__(self) -> StagedBlob:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()


class _Upload:
    """A local blob as a PUT body: sent in 1 MiB chunks (a file object would go out 16 KiB at a
    time). Not hashed on the way: the digest is in the PUT's URL and the registry checks the
    bytes against it (the distribution spec: it MUST; distribution answers 400
    ``DIGEST_INVALID``), so an altered blob is never stored under its digest. When the PUT
    fails, ``check()`` reads the local blob and hashes it, to name an altered one as such
    rather than by the registry's refusal. A local file of the wrong size is refused before a
    byte is sent (a short body would leave the registry waiting for the rest). Iterating starts
    over from the first byte (a request answered by an auth challenge is sent again)."""

    def __init__(self, f: Any, desc: Descriptor) -> None:
        self.f = f
        self.desc = desc
        self.clock: RequestClock | None = None  # the sending client's: told what went
        self._size_ok()

    def _size_ok(self) -> None:
        size = os.fstat(self.f.fileno()).st_size
        if size != self.desc.size:
            raise PackageRejected(f"blob {self.desc.digest} in the local store is {size} bytes, not "
                                  f"{self.desc.size} (it was altered)", reason="digest_mismatch",
                                  digest=self.desc.digest)

    def __len__(self) -> int:
        return self.desc.size

    def __iter__(self) -> Any:
        self.f.seek(0)
        left = self.desc.size
        while left > 0:
            chunk = self.f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            if self.clock is not None:
                self.clock.carried(len(chunk))
            yield chunk

    def check(self) -> None:
        """After a failed PUT: a local blob that is not what its digest names is refused as
        altered; one that is leaves the registry's error to be raised."""
        self._size_ok()
        h = hashlib.sha256()
        self.f.seek(0)
        while chunk := self.f.read(CHUNK):
            h.update(chunk)
        if "sha256:" + h.hexdigest() != self.desc.digest:
            raise PackageRejected(f"blob {self.desc.digest} in the local store does not match its digest "
                                  "(it was altered)", reason="digest_mismatch", digest=self.desc.digest)


def _requests_error(err: Exception) -> Exception:
    """A body read's failure as ``requests``' ``iter_content`` reports it (a length the body
    does not reach is a protocol error, not an unreachable registry), but a read that timed
    out as a timeout."""
    if isinstance(err, ReadTimeoutError):
        return requests.ReadTimeout(err)
    if isinstance(err, ProtocolError):
        return requests.exceptions.ChunkedEncodingError(err)
    if isinstance(err, DecodeError):
        return requests.exceptions.ContentDecodingError(err)
    if isinstance(err, (Urllib3Error, OSError)):
        return requests.ConnectionError(err)
    return err


def _read_head(r: requests.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of ``r``'s body (the rest is never read); closes ``r``: a body
    read to its end gives its connection back to the pool, one cut short closes it."""
    try:
        data = r.raw.read(limit + 1, decode_content=True) or b""
        if len(data) <= limit:
            r._content_consumed = True  # all of it: the connection can serve the next request
        return data[:limit]
    except Exception as err:
        raise _requests_error(err) from None
    finally:
        r.close()


def _write_all(fd: int, pieces: list[bytes]) -> int:
    """Write ``pieces`` to ``fd`` in one ``writev`` (no copy to join them; the rest, if it
    writes less, one write at a time) and empty the list; how many bytes that was."""
    n = sum(map(len, pieces))
    done = os.writev(fd, pieces) if pieces else 0
    if done < n:
        view = memoryview(b"".join(pieces))[done:]
        while view:
            view = view[os.write(fd, view):]
    pieces.clear()
    return n


def _chunks(r: requests.Response, size: int) -> Iterator[bytes]:
    """``r``'s body as it arrives: each piece what one read of the socket gave (at most
    ``size``), not ``size`` bytes gathered — so a slow link's bytes are counted as they come
    (``RequestClock``); exceptions as ``requests.iter_content`` raises them."""
    try:
        while chunk := r.raw.read1(size, decode_content=True):
            yield chunk
        r._content_consumed = True  # read to its end: the connection can serve the next request
    except Exception as err:
        raise _requests_error(err) from None


def _read_bounded(r: requests.Response, limit: int, what: str, clock: RequestClock | None = None) -> bytes:
    out = bytearray()
    try:
        for chunk in _chunks(r, 64 << 10):
            if clock is not None:
                clock.carried(len(chunk))
            out += chunk
            if len(out) > limit:
                raise PackageRejected(f"{what}: the manifest is larger than {limit} bytes", reason="too_large")
    except requests.RequestException as err:
        raise _fail(what, r.url or "registry", err=err) from None
    finally:
        r.close()
    return bytes(out)
