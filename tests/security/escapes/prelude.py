# Prepended to every attack program by the harness (runs inside the sandbox, after confine).
import ctypes, json, os, signal, socket, sys, time  # noqa: F401 - used by the attack programs

CTX = json.loads(os.environ["ESCAPE_CTX"])


def verdict(escaped, **detail):
    """Report: did the attack succeed, and what each step saw.

    Substrate harness: one JSON line on the raw channel. Kernel harness: the agent's
    result (``sys.exit``); a progress report (``phase=...``) goes to the log instead.
    """
    data = json.loads(json.dumps({"escaped": bool(escaped), **detail}, default=str))
    if os.environ.get("ESCAPE_MODE") == "kernel":
        if "phase" in detail:
            print("VERDICT " + json.dumps(data), flush=True)
            return
        from agentix.sdk import agent
        agent.connect().exit(data)
    os.write(int(os.environ["AGENTIX_FD"]), (json.dumps(data) + "\n").encode())


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

