"""Attack: hardlink out."""
rs = []
for i, t in enumerate([CTX["home"] + "/keys/root.key", "/etc/ld.so.cache", sys.executable, "/etc/shadow"]):
    rs.append(attempt(lambda: os.link(t, f"/workspace/hard{i}")))
verdict(any(r[0] == "ok" for r in rs), results=rs)
