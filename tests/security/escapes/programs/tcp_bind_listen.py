"""Attack: tcp bind listen."""
def go():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.bind(("0.0.0.0", 0)); s.listen(); return s.getsockname()
rs = [attempt(go)]
verdict(any(r[0] == "ok" for r in rs), results=rs)
