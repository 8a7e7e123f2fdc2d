"""Attack: proc kernel mem."""
k = CTX["kernel_pid"]
rs = [attempt(lambda: open(f"/proc/{k}/mem", "rb").read(16)), attempt(lambda: open("/proc/1/mem", "rb").read(16)),
      attempt(lambda: open("/proc/kcore", "rb").read(16))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
