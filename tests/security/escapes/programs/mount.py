"""Attack: mount."""
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("/workspace/m", exist_ok=True)
rs = [csys(lambda: libc.mount(b"none", b"/workspace/m", b"tmpfs", 0, None)),
      csys(lambda: libc.mount(b"/", b"/workspace/m", None, 4096, None)),  # MS_BIND
      csys(lambda: libc.umount2(b"/usr", 2))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
