"""Attack: leftover processes."""
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN)
        time.sleep(3600)
    os._exit(0)
os.waitpid(pid, 0)
verdict(False, results=[("ok", "daemonised a grandchild; the harness kills the agent and looks for it")], phase="started")
time.sleep(3600)
