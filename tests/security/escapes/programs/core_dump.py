"""Attack: core dump."""
import resource
rs = [attempt(lambda: resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))]
pid = os.fork()
if pid == 0:
    os.chdir("/workspace"); os.kill(os.getpid(), signal.SIGSEGV)
_, st = os.waitpid(pid, 0)
dumped = os.WCOREDUMP(st)
cores = [f for f in os.listdir("/workspace") if f == "core" or (f.startswith("core.") and f[5:].isdigit())]
rs.append(("ok" if dumped or cores else "error", f"core dumped={dumped} files={cores} limit={resource.getrlimit(resource.RLIMIT_CORE)}"))
verdict(any(r[0] == "ok" for r in rs), results=rs)
