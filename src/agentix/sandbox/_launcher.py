"""A pre-started launcher: joins an agent cgroup ahead of time, then execs bwrap on request.

Run by the bwrap backend as ``python -S -I _launcher.py SOCKFD PROCS_FILE...`` (no site,
no agentix import: this file must stand alone). It starts its own session, writes its pid
into every ``cgroup.procs`` file it was given (moving a task between v1 cgroups costs an
RCU grace period, ~10 ms, which this takes off the spawn path), says ``R`` on the
SOCK_SEQPACKET socket and waits for one message::

    marshal((argv, env, cwd, targets)) + SCM_RIGHTS fds

It puts the received descriptors at the ``targets`` numbers (stdin becomes /dev/null),
closes every other descriptor and ``execve``s argv with exactly ``env`` — the backend's
fixed launcher environment (``bwrap.HOST_ENV`` and the confine policy), never a variable an
agent chose. EOF on the socket (the kernel went away or retired the slot) makes it exit
quietly.
"""

import marshal
import os
import socket
import sys


def one_message(sock: socket.socket, maxfds: int) -> tuple[bytes, list[int]]:
    """The one message (and descriptors) a waiting process gets on its control socket; EOF or
    a broken socket means the kernel went away or retired it: exit quietly. Also used by the
    warm pool's workers (``agentix.agents.boot.warm_main``)."""
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, maxfds)
    except OSError:
        os._exit(0)
    if not data:
        os._exit(0)
    return data, fds


def main() -> None:
    sock_fd = int(sys.argv[1])
    os.setsid()
    try:
        for path in sys.argv[2:]:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
    except OSError:
        os._exit(124)
    sock = socket.socket(fileno=sock_fd)
    sock.sendall(b"R")
    data, fds = one_message(sock, 16)
    argv, env, cwd, targets = marshal.loads(data)
    # park the received descriptors above every target, then place them
    high = max([*targets, *fds, sock_fd, 2]) + 1
    parked = [os.dup2(fd, high + i) for i, fd in enumerate(fds)]
    for fd in fds:
        os.close(fd)
    sock.close()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for src, dst in zip(parked, targets):
        os.dup2(src, dst)  # dup2 clears close-on-exec on dst
    keep = set(targets) | {0, 1, 2}
    for fd in keep:
        os.set_inheritable(fd, True)
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass  # the descriptor listdir used, already closed
    os.chdir(cwd)
    try:
        os.execve(argv[0], argv, env)
    except OSError as err:
        os.write(2, f"agentix launcher: cannot execute {argv[0]}: {err}\n".encode())
        os._exit(127)


if __name__ == "__main__":
    main()
