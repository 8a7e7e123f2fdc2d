"""Attack: keyctl."""
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
rs = [csys(lambda: libc.syscall(250, 0, -3, 0, 0, 0)),  # keyctl(KEYCTL_GET_KEYRING_ID, user session)
      csys(lambda: libc.syscall(248, b"user", b"k", b"v", 1, -3)),  # add_key
      csys(lambda: libc.syscall(249, b"user", b"k", None, 0))]  # request_key
verdict(any(r[0] == "ok" for r in rs), results=rs)
