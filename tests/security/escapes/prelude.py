# Prepended to every attack program by the harness (runs inside the sandbox, after confine).
import ctypes, json, os, signal, socket, sys, time

CTX = json.loads(os.environ["ESCAPE_CTX"])


def verdict(escaped, **detail):
    """One JSON line on the kernel channel: did the attack succeed, and what each step saw."""
    line = json.dumps({"escaped": bool(escaped), **detail}, default=str) + "\n"
    os.write(int(os.environ["AGENTIX_FD"]), line.encode())


def attempt(fn):
    try:
        return ("ok", repr(fn())[:200])
    except BaseException as e:  # noqa: BLE001 - the attack's outcome is the data
        return ("error", f"{type(e).__name__}: {e}"[:200])


def csys(fn):
    """A libc call returning -1/errno: ('ok', rc) or ('error', 'EPERM ...')."""
    rc = fn()
    if rc == -1:
        import errno as _e
        n = ctypes.get_errno()
        return ("error", f"{_e.errorcode.get(n, n)}: {os.strerror(n)}")
    return ("ok", rc)

