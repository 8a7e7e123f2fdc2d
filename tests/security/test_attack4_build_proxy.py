"""Attack round 4 on the build proxy (kernel/build_proxy.py): domain fronting over plain HTTP.

A build step that declares ``pypi.example`` could send ``GET http://pypi.example/ HTTP/1.1``
with ``Host: other-site.example``: the proxy checked and connected to pypi.example's address,
but forwarded the step's ``Host``, so a CDN or virtual-hosting server there would serve
another site, one the step never declared. Now the forwarded request's ``Host`` is the checked
host (and port), whatever the step sent; its other headers pass.

(Held, tested in round 3: only the step's processes are served, ``SO_PEERCRED``; ``*`` never
reaches loopback or metadata.)"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from security.test_attack4_rebinding import CHECKED, _serve, _short_dir


@pytest.mark.parametrize("sent", [b"Host: other-site.example\r\n", b"host: other-site.example\r\nHost: x\r\n",
                                  b"HOST:other-site.example\r\n", b""])
def test_a_step_cannot_name_another_site_in_the_host_header(sent: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentix.kernel.build_proxy import BuildProxy

    srv, seen = _serve(CHECKED, 0)
    port = srv.server_address[1]

    async def resolve(host: str, p: int) -> list[str]:
        return [CHECKED] if host == "declared.example" else []

    async def main(tmp: Path) -> bytes:
        async with BuildProxy(("declared.example",), tmp / "p.sock", resolve=resolve) as proxy:
            proxy.serve_only(os.getpid())
            reader, writer = await asyncio.open_unix_connection(str(proxy.path))
            writer.write(b"GET http://declared.example:%d/ok HTTP/1.1\r\n" % port + sent + b"X-Kept: 1\r\n\r\n")
            await writer.drain()
            out = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return out

    try:
        with _short_dir() as d:
            answer = asyncio.run(main(Path(d)))
    finally:
        srv.shutdown()
        srv.server_close()
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert seen == [(f"declared.example:{port}", "/ok")]
