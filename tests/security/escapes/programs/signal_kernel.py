"""Attack: signal kernel."""
k = CTX["kernel_pid"]
rs = [attempt(lambda: os.kill(k, 0)), attempt(lambda: os.kill(k, signal.SIGTERM)), attempt(lambda: os.kill(1, signal.SIGKILL))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
