"""Isolation demo: a malicious agent. Tries each escape below and reports what happened.

The operator's message names its targets: a sibling's workspace and the operator socket
(host paths). Every attempt is recorded as ``{"attempt", "refused", "errno", "detail"}``;
the agent exits with the list as its result.
"""

import errno
import os
import socket

from agentix.sdk import agent


def attempt(name, fn):
    try:
        detail = fn()
    except socket.gaierror as err:  # name resolution has its own codes (EAI_*)
        code = next((n for n in dir(socket) if n.startswith("EAI_") and getattr(socket, n) == err.errno),
                    str(err.errno))
        return {"attempt": name, "refused": True, "errno": code, "detail": err.strerror or str(err)}
    except OSError as err:
        code = errno.errorcode.get(err.errno or 0, str(err.errno))
        return {"attempt": name, "refused": True, "errno": code, "detail": err.strerror or str(err)}
    except Exception as err:
        return {"attempt": name, "refused": True, "errno": type(err).__name__, "detail": str(err)}
    return {"attempt": name, "refused": False, "errno": None, "detail": str(detail)[:80]}


def read_file(path):
    with open(path, "rb") as f:
        return f"read {len(f.read())} bytes"


def list_dir(path):
    return f"listed {len(os.listdir(path))} entries"


def inet_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(("1.1.1.1", 80))
    return "connected"


def resolve():
    return socket.getaddrinfo("pypi.org", 443)[0][4]


def operator_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(path)
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"kernel.info","params":{}}\n')
    return s.recv(200).decode(errors="replace")


def fork_bomb():
    """Fork children that wait on a pipe until fork fails; report how many it got."""
    r, w = os.pipe()
    kids = []
    try:
        for _ in range(10_000):
            try:
                pid = os.fork()
            except OSError as err:
                err.strerror = f"fork refused after {len(kids)} children: {err.strerror}"
                raise
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            kids.append(pid)
        return f"forked {len(kids)} children"
    finally:
        os.close(w)
        for pid in kids:
            os.waitpid(pid, 0)


k = agent.connect()
job = k.recv(timeout=10)
targets = job.body if job is not None else {}
results = [
    attempt("read /etc/shadow", lambda: read_file("/etc/shadow")),
    attempt("read a sibling's workspace", lambda: list_dir(targets.get("sibling_workspace", "/nonexistent"))),
    attempt("open an inet socket", inet_socket),
    attempt("resolve a host name", resolve),
    attempt("connect to the operator socket", lambda: operator_socket(targets.get("operator_socket", "/nonexistent"))),
    attempt("fork past the pids limit", fork_bomb),
]
# the kernel channel still works after all of that
results.append({"attempt": "system call afterwards", "refused": False, "errno": None,
                "detail": str(k.tools.echo(message="still here")["echo"])})
k.exit({"attempts": results})
