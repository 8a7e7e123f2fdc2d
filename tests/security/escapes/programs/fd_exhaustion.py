"""Attack: fd exhaustion."""
fds = []; err = None
while len(fds) < 100000:
    try:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        err = f"{type(e).__name__}: {e}"; break
for fd in fds:
    os.close(fd)
verdict(err is None or len(fds) > CTX["nofile"], results=[("error", err)], opened=len(fds))
