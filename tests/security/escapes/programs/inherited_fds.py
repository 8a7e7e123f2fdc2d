"""Attack: inherited fds."""
chan = os.environ["AGENTIX_FD"]
fds = os.listdir("/proc/self/fd")
extra = [f for f in fds if f not in ("0", "1", "2", chan)]
extra = [f for f in extra if attempt(lambda f=f: os.fstat(int(f)))[0] == "ok"]  # drop the listdir fd
verdict(bool(extra), results=[("error" if not extra else "ok", f"fds={fds} channel={chan}")], extra=extra)
