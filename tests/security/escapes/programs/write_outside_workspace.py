"""Attack: write outside workspace."""
targets = ["/usr/agentix-escape", "/etc/agentix-escape", "/agentix-escape", "/root/agentix-escape",
           CTX["home"] + "/agentix-escape", CTX["sibling_workspace"] + "/agentix-escape",
           "/proc/agentix-escape", "/dev/agentix-escape", sys.prefix + "/agentix-escape"]
rs = [attempt(lambda t=t: open(t, "w").write("x")) for t in targets]
verdict(any(r[0] == "ok" for r in rs), results=rs)
