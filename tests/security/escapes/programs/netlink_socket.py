"""Attack: netlink socket."""
rs = [attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)),
      attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)),
      attempt(lambda: socket.socket(40, socket.SOCK_STREAM, 0))]  # AF_VSOCK
verdict(any(r[0] == "ok" for r in rs), results=rs)
