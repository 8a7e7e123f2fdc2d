"""What every provider over HTTP shares (``openai.py``, ``anthropic.py``): the endpoint, the
key and the client, one POST-and-read exchange (streamed or not) whose transport failures all
become the one provider error family, and the server's ``retry-after``.

A subclass names its ``path`` and supplies the wire format: ``body(req)``, ``_headers()``,
``_parse(data, req)``, ``_read_stream(r, req, on_delta)`` and ``_http_error(r)``
(CPython's ``asyncio.base_subprocess`` is the model: shared process, platform parts below).
"""

from __future__ import annotations

from typing import Any

import httpx

from agentix.llm.base import DeltaCallback, InferenceRequest, InferenceResponse, Provider, emit, provider_error

__all__ = ["HTTPProvider", "http_exchange", "parse_retry_after"]


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds form), if present."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            return None
    return None


async def http_exchange(p: Any, url: str, body: dict[str, Any], req: InferenceRequest,
                        on_delta: DeltaCallback | None) -> InferenceResponse:
    """POST ``body`` and read the answer (streamed or not) for an HTTP provider ``p``.

    ``p`` supplies ``_client``, ``_headers()``, ``_read_stream``, ``_parse``, ``_http_error``,
    ``name`` and ``base_url``; every transport failure becomes the one provider error family.
    """
    try:
        if req.stream:
            async with p._client.stream("POST", url, json=body, headers=p._headers()) as r:
                if r.status_code != 200:
                    await r.aread()
                    raise p._http_error(r)
                return await p._read_stream(r, req, on_delta)
        r = await p._client.post(url, json=body, headers=p._headers())
        if r.status_code != 200:
            raise p._http_error(r)
        resp = p._parse(r.json(), req)
        await emit(on_delta, resp.text)
        return resp
    except httpx.TimeoutException as e:
        raise provider_error(p.name, f"timed out talking to {p.base_url}: {type(e).__name__}") from None
    except httpx.HTTPError as e:
        raise provider_error(p.name, f"cannot reach {p.base_url}: {type(e).__name__}: {e}") from None
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise provider_error(p.name, f"malformed response: {type(e).__name__}: {e}", status=200,
                             retryable=False) from None


class HTTPProvider(Provider):
    """One HTTP endpoint (``base_url`` + ``path``). The key never leaves this object."""

    path = "/"

    def __init__(self, name: str, base_url: str, api_key: str | None, timeout: float = 120.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0),
                                                   limits=httpx.Limits(max_connections=256))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.base_url!r})"

    def body(self, req: InferenceRequest) -> dict[str, Any]:
        raise NotImplementedError

    async def _complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        return await http_exchange(self, self.base_url + self.path, self.body(req), req, on_delta)

    async def aclose(self) -> None:
        await self._client.aclose()
