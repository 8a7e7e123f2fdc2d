"""The kernel's audit log: its store, signing key, periodic signed heads and RPC methods.

``KernelAudit.open(home, db)`` keeps the log in the kernel's one database (``$AGENTIX_HOME/
agentix.db``: SQLite, WAL, group commit, every table) and loads the audit signing key
``$AGENTIX_HOME/keys/audit_ed25519.key`` (created on first use, mode 0600; the public key is
written next to it as ``audit_ed25519.pub``, hex). The kernel uses ``.sink`` as
``kernel.events``; its operator methods (``audit.tail``, ``audit.verify``, ``audit.prove``,
``audit.head``) are in ``kernel/calls_audit.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from agentix.core.audit import public_key_bytes
from agentix.kernel.home import Home
from agentix.store.audit_store import AuditEvents, AuditLog
from agentix.store.db import Database
from agentix.store.recovery import RecoveryReport, recover

__all__ = ["KEY_NAME", "KernelAudit", "load_or_create_key"]

log = logging.getLogger(__name__)

KEY_NAME = "audit_ed25519"


def load_or_create_key(keys: Path) -> Ed25519PrivateKey:
    """The kernel's audit signing key (raw 32-byte seed file, 0600), created if missing."""
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys / f"{KEY_NAME}.key"
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seed)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = keys / f"{KEY_NAME}.pub"
    if not pub.exists():
        pub.write_text(public_key_bytes(key).hex() + "\n")
    return key


@dataclass
class KernelAudit:
    db: Database
    log: AuditLog
    sink: AuditEvents
    head_interval_s: float = 60.0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, home: Home, db: Database, *, head_interval_s: float = 60.0) -> KernelAudit:
        """The audit log in the kernel's database ``db`` (the kernel opens it: one for
        every table) and the signing key under ``home``."""
        alog = AuditLog(db, signing_key=load_or_create_key(home.keys), clock=time.time)
        return cls(db, alog, AuditEvents(alog), head_interval_s)

    async def start(self) -> RecoveryReport:
        """Recover what the last run left, then sign heads periodically."""
        report = await recover(self.db, self.log)
        self._task = asyncio.create_task(self._sign_periodically(), name="audit-heads")
        return report

    async def _sign_periodically(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(self.head_interval_s)
            try:
                size = self.log.size()
                if size != last:
                    await self.log.head(sign=True)
                    last = size
            except Exception:  # a failed head is retried next period, never fatal
                log.exception("signing an audit tree head failed")

    async def stop(self) -> None:
        """Sign a final head, record the clean stop and close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.log.head(sign=True)
        await self.sink.close()
