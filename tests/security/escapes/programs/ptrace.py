"""Attack: ptrace."""
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_TRACEME = 16, 0
pid = os.fork()
if pid == 0:
    time.sleep(5); os._exit(0)
rs = [csys(lambda: libc.ptrace(PTRACE_ATTACH, 1, 0, 0)), csys(lambda: libc.ptrace(PTRACE_ATTACH, pid, 0, 0)),
      csys(lambda: libc.ptrace(PTRACE_ATTACH, CTX["kernel_pid"], 0, 0)), csys(lambda: libc.ptrace(PTRACE_TRACEME, 0, 0, 0))]
os.kill(pid, 9)
verdict(any(r[0] == "ok" for r in rs), results=rs)
