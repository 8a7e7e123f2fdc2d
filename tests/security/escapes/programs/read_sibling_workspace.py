"""Attack: read sibling workspace."""
s = CTX["sibling_workspace"]
rs = [attempt(lambda: open(s + "/secret.txt").read()), attempt(lambda: os.listdir(s)),
      attempt(lambda: open("/workspace/../" + os.path.basename(s) + "/secret.txt").read())]
verdict(any(r[0] == "ok" for r in rs), results=rs)
