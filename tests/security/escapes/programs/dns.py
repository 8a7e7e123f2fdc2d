"""Attack: dns."""
rs = [attempt(lambda: socket.getaddrinfo("example.com", 80)), attempt(lambda: socket.gethostbyname("pypi.org"))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
