"""Attack: wall clock overrun."""
verdict(False, results=[("ok", "about to sleep past the wall clock")], phase="started")
time.sleep(3600)
