"""Attack: proc 1 root."""
rs = [attempt(lambda: os.listdir("/proc/1/root")), attempt(lambda: open("/proc/1/root/etc/shadow").read()),
      attempt(lambda: os.listdir("/proc/1/cwd")), attempt(lambda: os.readlink("/proc/1/exe"))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
