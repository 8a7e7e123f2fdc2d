"""Attack: kernel attack surface."""
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
rs = [csys(lambda: libc.syscall(321, 0, None, 0)),          # bpf
      csys(lambda: libc.syscall(425, 8, None)),             # io_uring_setup
      csys(lambda: libc.syscall(323, 0)),                   # userfaultfd
      csys(lambda: libc.syscall(298, None, 0, -1, -1, 0)),  # perf_event_open
      csys(lambda: libc.personality(0x0040000)),            # ADDR_NO_RANDOMIZE
      csys(lambda: libc.chroot(b"/tmp")),
      csys(lambda: libc.syscall(246, 0, 0, None, 0))]       # kexec_load
verdict(any(r[0] == "ok" for r in rs), results=rs)
