"""Attack: unshare."""
libc = ctypes.CDLL(None, use_errno=True)
import subprocess
rs = [csys(lambda: libc.unshare(0x10000000)), csys(lambda: libc.unshare(0x00020000)),
      csys(lambda: libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0)),
      attempt(lambda: os.open("/proc/1/ns/net", os.O_RDONLY))]
p = subprocess.run(["/usr/bin/unshare", "-r", "true"], capture_output=True, text=True)
rs.append(("ok" if p.returncode == 0 else "error", p.stderr.strip()[:120]))
verdict(any(r[0] == "ok" for r in rs), results=rs)
