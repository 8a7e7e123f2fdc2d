"""Attack: cgroup escape."""
rs = [attempt(lambda: open("/sys/fs/cgroup/memory/cgroup.procs", "w").write(str(os.getpid()))),
      attempt(lambda: os.listdir("/sys/fs/cgroup")), attempt(lambda: open("/proc/self/cgroup").read().count("agentix") and (_ for _ in ()).throw(PermissionError("cgroup path hidden? no")))]
verdict(any(r[0] == "ok" for r in rs[:2]), results=rs)
