"""Attack: hostname and sysctl."""
libc = ctypes.CDLL(None, use_errno=True)
rs = [csys(lambda: libc.sethostname(b"pwned", 5)), attempt(lambda: open("/proc/sys/kernel/hostname", "w").write("pwned")),
      attempt(lambda: open("/proc/sysrq-trigger", "w").write("h")), attempt(lambda: open("/proc/sys/vm/drop_caches", "w").write("1"))]
rs.append(("ok" if os.uname().nodename != "agentix" else "error", os.uname().nodename))  # the fixed sandbox hostname
verdict(any(r[0] == "ok" for r in rs), results=rs)
