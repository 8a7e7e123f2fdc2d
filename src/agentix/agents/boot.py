"""The in-sandbox bootstrap: the first (trusted) code that runs in every agent process.

``python -m agentix.agents.boot TARGET [ARGS...]`` confines the process (when the sandbox
backend asked for it), then runs TARGET — a program file or package directory in the
workspace, or ``module:agentix.agents.NAME`` for a built-in program — as ``__main__``.

With ``AGENTIX_WARM_FD=FD`` in its environment (set only by the sandbox backend; a
manifest's env is applied after confinement, never seen here) it is a warm-pool worker
(``sandbox/warm.py``), and takes no argument: it
confines itself the same way, imports the agent SDK, and then waits on FD (a
SOCK_SEQPACKET socket to the kernel) for ONE assignment::

    JSON {"target", "args", "env", "fd", "rlimits", "umask"} + SCM_RIGHTS [identity socket, output]

Until then it holds no identity: no ``AGENTIX_FD``/``AGENTIX_AGENT_ID`` in its
environment, no socket to the kernel's system-call server, an empty workspace. On the
assignment it puts the output pipe on 1 and 2 and the identity socket at ``fd``, lowers its
rlimits to ``rlimits`` (only lowering is possible), closes every other descriptor, answers
``{"ok": true}`` on FD and closes it, sets ``env`` (the agent's, after confinement as in the
cold path) and runs ``target`` like the cold path. It is single use: it exits with its
program. EOF on FD (the kernel retired the worker, or went away) makes it exit quietly.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys

WARM_FD = "AGENTIX_WARM_FD"  # the control socket of a warm-pool worker (sandbox/warm.py)


def run_target(target: str, args: list[str]) -> None:
    """Run the agent's program as ``__main__`` (a workspace path or ``module:agentix.agents.X``)."""
    sys.argv = [target, *args]
    if target.startswith("module:"):
        runpy.run_module(target[len("module:"):], run_name="__main__", alter_sys=True)
        return
    sys.path.insert(0, os.getcwd())
    deps = os.path.join(os.getcwd(), "deps", "python")  # a package's Python dependencies (docs/packages.md)
    if os.path.isdir(deps):
        sys.path.insert(1, deps)
    runpy.run_path(target, run_name="__main__")


def warm_main(ctl_fd: int) -> None:
    """A warm-pool worker: confine, pre-import the SDK, wait for one assignment, run it."""
    import json
    import resource
    import socket

    from agentix.sandbox import confine  # type: ignore[attr-defined]
    from agentix.sandbox._launcher import one_message

    confine.apply_from_env()  # exits 125 (reported on the status pipe) if a layer fails
    importlib.import_module("agentix.sdk.agent")  # loaded now, before the program: it reads no
    # environment at import (no identity yet)

    sock = socket.socket(fileno=ctl_fd)
    data, fds = one_message(sock, 4)
    try:
        msg = json.loads(data)
        ident, out = fds
        fd = int(msg["fd"])
        if fd < 3:
            raise ValueError(f"identity descriptor {fd}")
    except (ValueError, KeyError, TypeError) as err:
        os.write(2, f"agentix warm worker: bad assignment: {err!r}\n".encode())
        os._exit(126)
    os.dup2(out, 1)
    os.dup2(out, 2)
    if fd == ctl_fd:  # keep the control socket out of the identity's way
        sock = socket.socket(fileno=os.dup(ctl_fd))
    if ident != fd:
        try:
            os.dup2(ident, fd)  # the kernel's number, as a cold agent inherits it
        except OSError:
            fd = ident  # at or above this worker's open-files limit: keep the number it arrived at
    os.set_inheritable(fd, True)
    keep = {0, 1, 2, fd, sock.fileno()}
    for name in os.listdir("/proc/self/fd"):
        n = int(name)
        if n not in keep:
            try:
                os.close(n)
            except OSError:
                pass  # the descriptor listdir used, already closed
    try:
        for name, value in msg.get("rlimits", {}).items():
            res = getattr(resource, "RLIMIT_" + name.upper())
            resource.setrlimit(res, (int(value), int(value)))
    except (ValueError, OSError, AttributeError) as err:
        sock.send(json.dumps({"ok": False, "why": f"rlimits: {err}"}).encode())
        os._exit(125)
    os.umask(int(msg.get("umask", 0o022)) & 0o777)  # the kernel's, as a cold agent inherits it
    sock.send(b'{"ok": true}')
    sock.close()
    for name, value in msg.get("env", {}).items():  # confined already: the agent's environment
        os.environ[name] = value
    os.environ["AGENTIX_FD"] = str(fd)
    os.chdir("/workspace")
    run_target(str(msg["target"]), [str(a) for a in msg.get("args", [])])


def main() -> None:
    warm = os.environ.pop(WARM_FD, None)
    if warm is not None and warm.isdigit():
        warm_main(int(warm))
        return
    if len(sys.argv) < 2:
        print("usage: python -m agentix.agents.boot TARGET [ARGS...]", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("AGENTIX_CONFINE"):
        from agentix.sandbox import confine  # type: ignore[attr-defined]

        confine.apply_from_env()
    run_target(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
