"""Flood the kernel over the raw channel: FRAMES frames, each a batch of BATCH ``ipc.recv``
calls with a long timeout, sent as fast as the socket takes them (argv: frames batch timeout).

Writes from a thread (the kernel may stop reading: back-pressure), reads replies on the main
thread, prints one JSON summary line per second to stdout: frames written, replies seen by
error code. Runs until killed.
"""
import json
import os
import socket
import sys
import threading
import time

frames, batch, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(fileno=int(os.environ["AGENTIX_FD"]))
written = 0


def writer() -> None:
    global written
    n = 0
    for _ in range(frames):
        msg = [{"jsonrpc": "2.0", "id": (n := n + 1), "method": "ipc.recv", "params": {"timeout": timeout}}
               for _ in range(batch)]
        sock.sendall(json.dumps(msg if batch > 1 else msg[0]).encode() + b"\n")
        written += 1


threading.Thread(target=writer, daemon=True).start()
codes: dict[str, int] = {}
buf = b""
sock.settimeout(1.0)
last = 0.0
while True:
    try:
        data = sock.recv(1 << 16)
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            rep = json.loads(line)
            for r in rep if isinstance(rep, list) else [rep]:
                key = r["error"]["data"].get("limit", "?") if "error" in r else "ok"
                codes[key] = codes.get(key, 0) + 1
    except socket.timeout:
        pass
    if time.monotonic() - last > 0.5:
        last = time.monotonic()
        print(json.dumps({"written": written, "replies": codes}), flush=True)
