"""Attack: setuid exec."""
import subprocess
rs = []
for argv in (["/usr/bin/mount", "-t", "tmpfs", "none", "/workspace"], ["/usr/bin/su", "-c", "id", "root"],
             ["/usr/bin/newgrp", "root"]):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        rs.append(("ok" if p.returncode == 0 else "error", f"rc={p.returncode} {p.stderr.strip()[:120]}"))
    except OSError as e:
        rs.append(("error", f"{type(e).__name__}: {e}"))
verdict(any(r[0] == "ok" for r in rs) or os.geteuid() == 0, results=rs)
