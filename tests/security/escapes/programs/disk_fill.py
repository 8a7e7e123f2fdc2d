"""Attack: disk fill."""
def fill(path):
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(b"\0" * (1 << 20)); f.flush()
    return "wrote 1 GiB"
rs = [attempt(lambda: fill("/workspace/fill.bin")), attempt(lambda: fill("/tmp/fill.bin"))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
