"""Attack: proc kernel environ."""
k = CTX["kernel_pid"]
rs = [attempt(lambda: open(f"/proc/{k}/environ", "rb").read()), attempt(lambda: open("/proc/1/environ", "rb").read())]
verdict(any(r[0] == "ok" for r in rs), results=rs)
