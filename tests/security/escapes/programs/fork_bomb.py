"""Attack: fork bomb."""
n = 0; err = None
while n < 10000:
    try:
        pid = os.fork()
    except OSError as e:
        err = f"{type(e).__name__}: {e}"; break
    if pid == 0:
        time.sleep(30); os._exit(0)
    n += 1
verdict(err is None or n >= CTX["pids_limit"], results=[("error", err)], forked=n)
