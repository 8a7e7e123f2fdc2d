"""Attack: tcp socket."""
def go():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2); s.connect(("127.0.0.1", CTX["tcp_port"])); s.sendall(b"escaped"); return "connected"
def go6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(2); s.connect(("::1", CTX["tcp_port"])); return "connected"
rs = [attempt(go), attempt(go6)]
verdict(any(r[0] == "ok" for r in rs), results=rs)
