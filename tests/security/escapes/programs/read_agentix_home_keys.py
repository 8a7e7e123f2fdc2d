"""Attack: read agentix home keys."""
h = CTX["home"]
rs = [attempt(lambda: open(h + "/keys/root.key").read()), attempt(lambda: os.listdir(h)),
      attempt(lambda: open(h + "/agentix.db", "rb").read())]
verdict(any(r[0] == "ok" for r in rs), results=rs)
