"""``PinnedAdapter``: a ``requests`` adapter (the registry client, oras) whose connections ask
``address(scheme, host, port)`` for the checked address at the moment they connect
(``packages/registry_urls.pin_session`` decides with the same answers it checked); see
``net/pinned.py`` for why. Apart from it so that ``requests`` and ``urllib3`` load only with the
registry client, at the first push or pull, not at every kernel start."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from agentix.core.hosts import normalize_host

__all__ = ["AddressOf", "PinnedAdapter"]

#: ``address(scheme, host, port)``: the checked address a connection to ``host`` goes to, or
#: the caller's refusal (raised, and passed through ``requests`` unchanged)
AddressOf = Callable[[str, str, int], str]


class PinnedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose every new connection goes to ``address(scheme, host, port)``
    (resolved and checked by the caller, once); the URL, ``Host`` and TLS name stay the name.
    Not for a session that goes through a proxy (the proxy would resolve): mount it on one
    whose ``trust_env`` is off."""

    def __init__(self, address: AddressOf, connections: Any = None) -> None:
        """``connections``: a set (``weakref.WeakSet``) every connection made is added to (the
        registry client's watchdog shuts them down: ``packages/registry_clock.py``)."""
        self._address = address
        self._connections = connections
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pins = {scheme: _pinned_pool(pool, scheme, self._address, self._connections)
                for scheme, pool in (("http", HTTPConnectionPool), ("https", HTTPSConnectionPool))}
        self.poolmanager.pool_classes_by_scheme = pins


def _pinned_pool(pool: type[HTTPConnectionPool], scheme: str, address: AddressOf,
                 connections: Any = None) -> type[HTTPConnectionPool]:
    base: type[HTTPConnection] = HTTPSConnection if scheme == "https" else HTTPConnection

    class Pinned(base):  # type: ignore[valid-type, misc]
        def _new_conn(self) -> socket.socket:
            name = self._dns_host
            self._dns_host = address(scheme, normalize_host(name), self.port or (443 if scheme == "https" else 80))
            try:
                sock = super()._new_conn()
                if connections is not None:
                    connections.add(self)
                return sock  # type: ignore[no-any-return]
            finally:
                self._dns_host = name  # Host, SNI and the certificate check use the name

    return type(f"Pinned{pool.__name__}", (pool,), {"ConnectionCls": Pinned})
