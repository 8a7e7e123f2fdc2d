"""Attack: symlink out."""
rs = []
for i, t in enumerate(["/etc/shadow", CTX["home"] + "/keys/root.key", CTX["sibling_workspace"] + "/secret.txt", "/proc/1/root/etc/shadow"]):
    link = f"/workspace/link{i}"
    os.symlink(t, link)
    rs.append(attempt(lambda: open(link).read()))
verdict(any(r[0] == "ok" for r in rs), results=rs)
