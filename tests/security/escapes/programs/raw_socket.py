"""Attack: raw socket."""
rs = [attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
      attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300)),
      attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
