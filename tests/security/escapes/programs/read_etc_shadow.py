"""Attack: read etc shadow."""
r = attempt(lambda: open("/etc/shadow").read())
r2 = attempt(lambda: open("/workspace/../etc/shadow").read())
verdict(r[0] == "ok" or r2[0] == "ok", results=[r, r2])
