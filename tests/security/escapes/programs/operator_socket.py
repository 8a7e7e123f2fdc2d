"""Attack: operator socket."""
def go(addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2); s.connect(addr); s.sendall(b"escaped"); return "connected"
rs = [attempt(lambda: go(CTX["operator_socket"])), attempt(lambda: go("\0" + CTX["abstract_socket"]))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
