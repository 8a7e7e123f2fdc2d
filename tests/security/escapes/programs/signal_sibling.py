"""Attack: signal sibling."""
s = CTX["sibling_pid"]
rs = [attempt(lambda: os.kill(s, signal.SIGKILL)), attempt(lambda: os.kill(-1, signal.SIGKILL) if False else os.killpg(s, signal.SIGKILL))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
