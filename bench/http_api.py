"""Benchmark: the HTTP API's overhead over the same call on the operator's JSON-RPC socket.

One kernel serves both faces (``--http 127.0.0.1:PORT``). For each method, rounds alternate
between three clients, each timing every call with perf_counter_ns: the SDK's ``Kernel`` on
the Unix socket (``jsonrpc``); a minimal keep-alive HTTP/1.1 client over a raw socket
(``http``: the API's own cost, the figure the goal is about); and ``httpx.Client``
(``httpx``: what a Python caller typically pays, the client library's cost included).
Methods: ``agent.list`` (a read: no record) and ``tool.invoke echo`` (a state change:
recorded in the audit log; over HTTP it also gets its ``http.call`` record). Goal: ``http``
p50 <= ``jsonrpc`` p50 + 1 ms. Last line: one JSON object.

    python bench/http_api.py [--calls 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel, pct  # noqa: E402

import httpx  # noqa: E402

CASES = {"agent.list": {}, "tool.invoke": {"name": "echo", "args": {"message": "hi"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise SystemExit("a response without Content-Length")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000, help="calls per method per face")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warm", type=int, default=200)
    a = ap.parse_args()
    port = free_port()
    bk = BenchKernel(args=("--http", f"127.0.0.1:{port}"))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        token = bk.client.call("tokens.create", name="bench", role="operator")["token"]
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        rpc = bk.client
        raw, reconnects = _connect(port), 0
        results = {}
        for method, params in CASES.items():
            body = json.dumps(params).encode()
            hdr = {"Content-Type": "application/json"}

            def via_http() -> None:
                r = http.post(f"/v1/call/{method}", content=body, headers=hdr)
                if r.status_code != 200:
                    raise SystemExit(f"{method}: HTTP {r.status_code} {r.text}")

            def via_rpc() -> None:
                rpc.call(method, **params)

            raw_req = (f"POST /v1/call/{method} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body

            def via_raw() -> None:
                nonlocal raw, reconnects
                raw.sendall(raw_req)
                buf = b""
                while (i := buf.find(b"\r\n\r\n")) < 0 or len(buf) < i + 4 + _length(buf[:i]):
                    chunk = raw.recv(65536)
                    if not chunk:  # the server closed an idle keep-alive connection: reconnect, resend
                        if buf:
                            raise SystemExit(f"the server closed the connection mid-response: {buf[:200]!r}")
                        raw, buf = _connect(port), b""
                        reconnects += 1
                        raw.sendall(raw_req)
                        continue
                    buf += chunk
                if not buf.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"{method}: {buf[:200]!r}")

            faces = (("http", via_raw), ("httpx", via_http), ("jsonrpc", via_rpc))
            for _face, fn in faces:
                for _ in range(a.warm):
                    fn()
            lat: dict[str, list[float]] = {face: [] for face, _fn in faces}
            per = max(1, a.calls // a.rounds)
            pc = time.perf_counter_ns
            for _ in range(a.rounds):
                for face, fn in faces:
                    for _ in range(per):
                        t = pc()
                        fn()
                        lat[face].append((pc() - t) / 1000)
            r = {face: {"p50_us": round(pct(v, 50), 1), "p99_us": round(pct(v, 99), 1), "n": len(v)}
                 for face, v in lat.items()}
            r["overhead_p50_us"] = round(r["http"]["p50_us"] - r["jsonrpc"]["p50_us"], 1)
            r["httpx_overhead_p50_us"] = round(r["httpx"]["p50_us"] - r["jsonrpc"]["p50_us"], 1)
            r["goal_met"] = r["overhead_p50_us"] <= 1000
            results[method] = r
            print(f"{method:12s} " + " | ".join(f"{f} p50 {r[f]['p50_us']:7.1f} us p99 {r[f]['p99_us']:8.1f} us"
                                               for f, _fn in faces)
                  + f" | overhead p50 http {r['overhead_p50_us']:+.1f} us (goal <= +1000), "
                  f"httpx {r['httpx_overhead_p50_us']:+.1f} us")
        http.close()
        raw.close()
    finally:
        bk.close()
    print(json.dumps({"bench": "http", "results": results, "raw_reconnects": reconnects,
                      "goal_met": all(r["goal_met"] for r in results.values())}))
    return 0 if all(r["goal_met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
