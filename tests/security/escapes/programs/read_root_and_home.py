"""Attack: read root and home."""
rs = [attempt(lambda: open("/root/.bashrc").read()), attempt(lambda: os.listdir("/home")),
      attempt(lambda: open("/root/.ssh/id_rsa").read()),
      attempt(lambda: [x for x in os.listdir("/root") if x != ".pyenv"] or (_ for _ in ()).throw(FileNotFoundError("only .pyenv")))]
verdict(any(r[0] == "ok" for r in rs), results=rs)
