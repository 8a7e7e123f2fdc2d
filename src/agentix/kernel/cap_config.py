"""What the capability layer reads from ``$AGENTIX_HOME`` at start: the root key, the secrets
and the hosts each is bound to, the taint policy, and the prefixes no grant reaches.

Plain functions of the home directory (and the environment, passed in); the composition root
(``kernel/kernel.py``) calls them once and hands the values to the services.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentix.core.caps import generate_root_key
from agentix.core.errors import InvalidRequest
from agentix.core.toml_text import parse_toml
from agentix.core.grants import parse_secret_hosts
from agentix.core.hosts import HostPattern
from agentix.core.taint import DEFAULT_RULES, TaintPolicy, parse_rules, parse_untrusted_paths

__all__ = ["ROOT_KEY_FILE", "kernel_state_prefixes", "load_root_key", "load_secret_hosts",
           "load_secrets", "load_taint", "TaintConfig"]

ROOT_KEY_FILE = "root.key"


def load_root_key(keys_dir: Path) -> bytes:
    """The kernel's root private key: made (0600, O_EXCL) at first start, loaded after."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir / ROOT_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise InvalidRequest(f"{path} must be a regular file readable by its owner only (0600)",
                                 field="root.key") from None
        return path.read_bytes()
    key = generate_root_key()
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_secrets(home_root: Path, environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``NAME -> value`` from config.toml ``[secrets]`` (``NAME = "env:VAR"`` or
    ``[secrets.NAME] env = "VAR", hosts = [...]``; a literal value is refused: values belong in
    keys/secrets.toml, mode 0600) and ``keys/secrets.toml`` (``NAME = "value"`` or
    ``[NAME] value = "...", hosts = [...]``)."""
    return _load_vault(home_root, environ)[0]


def load_secret_hosts(home_root: Path) -> dict[str, tuple[HostPattern, ...]]:
    """``NAME -> the hosts it may be sent to`` (``hosts = [...]`` in either file; both lists
    count). A secret with none is refused for injection (``check_secret_host``)."""
    return _load_vault(home_root, {})[1]


def _load_vault(home_root: Path, environ: Any) -> tuple[dict[str, str], dict[str, tuple[HostPattern, ...]]]:
    out: dict[str, str] = {}
    hosts: dict[str, tuple[HostPattern, ...]] = {}
    cfg = home_root / "config.toml"
    if cfg.exists():
        table = parse_toml(cfg.read_bytes(), str(cfg), "config.toml").get("secrets", {})
        for name, spec in table.items():
            if isinstance(spec, dict):  # [secrets.NAME] env = "VAR", hosts = [...]
                if "hosts" in spec:
                    hosts[name] = hosts.get(name, ()) + parse_secret_hosts(name, spec["hosts"])
                extra = set(spec) - {"env", "hosts"}
                env = spec.get("env")
                if extra or (env is not None and not isinstance(env, str)):
                    raise InvalidRequest(f"{cfg}: [secrets.{name}] takes env = \"VARIABLE\" and hosts = "
                                         "[...] only (put values in keys/secrets.toml, mode 0600)",
                                         field=f"secrets.{name}")
                spec = f"env:{env}" if env else None
                if spec is None:
                    continue
            if not isinstance(spec, str) or not spec.startswith("env:"):
                raise InvalidRequest(f"{cfg}: [secrets] {name} must be \"env:VARIABLE\" (put values "
                                     "in keys/secrets.toml, mode 0600)", field=f"secrets.{name}")
            val = environ.get(spec[4:])
            if val:
                out[name] = val
    vault = home_root / "keys" / "secrets.toml"
    if vault.exists():
        st = vault.stat()
        if st.st_mode & 0o077:
            raise InvalidRequest(f"{vault} must be mode 0600", field="secrets.toml")
        data = parse_toml(vault.read_bytes(), str(vault), "secrets.toml")
        for k_, v in data.items():
            if isinstance(v, dict):  # [NAME] value = "...", hosts = [...]
                if "hosts" in v:
                    hosts[str(k_)] = hosts.get(str(k_), ()) + parse_secret_hosts(str(k_), v["hosts"])
                if isinstance(v.get("value"), (str, int)):
                    out[str(k_)] = str(v["value"])
            elif isinstance(v, (str, int)):
                out[str(k_)] = str(v)
    return out, hosts


@dataclass(frozen=True, slots=True)
class TaintConfig:
    """config.toml's ``[taint]``: the policy (``rules``, ``extend``) and ``untrusted_paths``."""

    policy: TaintPolicy
    untrusted_paths: tuple[str, ...]


def load_taint(home_root: Path) -> TaintConfig:
    """config.toml's ``[taint]`` section, read once: ``rules = [{tool, sources, action, when}]``
    (the defaults otherwise; ``extend = true`` keeps the defaults after the configured rules)
    and ``untrusted_paths = ["/data/inbox/**", ...]`` (``core.taint.parse_untrusted_paths``: a
    file read under one labels the reader ``untrusted_file:<path>``). A config.toml that is
    not TOML is refused, never read as "no rules"."""
    cfg = home_root / "config.toml"
    if not cfg.exists():
        return TaintConfig(TaintPolicy(), ())
    section = parse_toml(cfg.read_bytes(), str(cfg), "config.toml").get("taint", {})
    rules = parse_rules(section.get("rules", []))
    policy = TaintPolicy(rules + (DEFAULT_RULES if section.get("extend", True) else ())) if rules else TaintPolicy()
    return TaintConfig(policy, parse_untrusted_paths(section.get("untrusted_paths", [])))


def kernel_state_prefixes(home_root: Path) -> tuple[str, ...]:
    """The directories no grant reaches: ``$AGENTIX_HOME`` (keys, database, secrets,
    approvals, every agent's workspace and log), as written and as resolved."""
    out = [os.path.normpath(str(home_root.absolute()))]
    try:
        real = os.path.realpath(home_root)
    except OSError:
        real = out[0]
    if real not in out:
        out.append(real)
    return tuple(out)
