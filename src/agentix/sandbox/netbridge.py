"""The in-sandbox half of a build step's network: a loopback port that leads to the kernel.

A build step that declares hosts (``network: [...]`` on a ``run`` step of an Agentfile)
runs confined like any build step, in a network namespace of its own where only its
loopback exists (``LaunchSpec.loopback_inet``: inet sockets are allowed, but there is
nowhere to reach). This program runs first, inside that sandbox, after confinement::

    python -m agentix.sandbox.netbridge SOCKET -- argv...

It listens on 127.0.0.1 (an ephemeral port of the sandbox's own loopback), copies the bytes
of every connection to the kernel's build proxy at the unix socket ``SOCKET`` (bound
read-only into the sandbox), sets ``HTTP_PROXY``/``HTTPS_PROXY`` (and the lower-case
forms) to that port, and runs ``argv`` (looked up on ``PATH``), exiting with its status.

It decides nothing: the kernel's proxy (``kernel/build_proxy.py``) checks every CONNECT and
request against the step's declared hosts. A command that kills this bridge or talks to the
socket itself meets the same proxy; a command that ignores the proxy variables reaches
nothing (there is no route out of the namespace and no resolver).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

__all__ = ["main"]

CHUNK = 64 * 1024


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(path)
        except OSError as err:
            msg = f"agentix build bridge: the kernel's build proxy is unreachable ({err.strerror})\n"
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: "
                         + str(len(msg)).encode() + b"\r\n\r\n" + msg.encode())
            conn.close()
            up.close()
            continue

        def both(a: socket.socket = conn, b: socket.socket = up) -> None:
            t = threading.Thread(target=_pump, args=(b, a), daemon=True)
            t.start()
            _pump(a, b)
            t.join()
            a.close()
            b.close()

        threading.Thread(target=both, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write("usage: python -m agentix.sandbox.netbridge SOCKET -- argv...\n")
        return 2
    path, cmd = args[0], args[2:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    threading.Thread(target=_serve, args=(listener, path), daemon=True).start()
    env = dict(os.environ)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[k] = proxy
    env["NO_PROXY"] = env["no_proxy"] = ""
    try:
        proc = subprocess.Popen(cmd, env=env)
    except OSError as err:
        sys.stderr.write(f"agentix build bridge: cannot execute {cmd[0]}: {err.strerror}\n")
        return 127
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    code = proc.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
