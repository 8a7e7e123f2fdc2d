"""Attack: udp socket."""
def go():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"escaped", ("127.0.0.1", CTX["udp_port"])); return "sent"
rs = [attempt(go)]
verdict(any(r[0] == "ok" for r in rs), results=rs)
