"""Attack: cpu hog."""
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + CTX["hog_seconds"]
        while time.monotonic() < end: pass
        os._exit(0)
    kids.append(pid)
for k in kids: os.waitpid(k, 0)
verdict(False, results=[("ok", "hogged; the harness judges throttling and sibling latency")])
