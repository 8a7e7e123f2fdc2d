"""Attack: device access."""
rs = [attempt(lambda d=d: open(d, "rb").read(1)) for d in ("/dev/vda", "/dev/mem", "/dev/kmsg", "/dev/kvm", "/dev/loop0", "/dev/fuse")]
rs.append(attempt(lambda: os.mknod("/workspace/vda", 0o600 | 0o060000, os.makedev(253, 0))))
rs.append(attempt(lambda: os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1))))
verdict(any(r[0] == "ok" for r in rs), results=rs)
