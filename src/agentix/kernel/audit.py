"""The kernel's audit log: its store, signing key, periodic signed heads and RPC methods.

``KernelAudit.open(home, db)`` keeps the log in the kernel's one database (``$AGENTIX_HOME/
agentix.db``: SQLite, WAL, group commit, every table) and loads the audit signing key
``$AGENTIX_HOME/keys/audit_ed25519.key`` (created on first use, mode 0600; the public key is
written next to it as ``audit_ed25519.pub``, hex). The kernel uses ``.sink`` as
``kernel.events``; ``register(kernel)`` adds the operator methods::

    audit.tail    {after?, agent?, kind?, limit?, wait?} -> {entries: [...]}
    audit.verify  {} -> VerifyReport JSON (ok, entries, first_bad_seq, reason, detail, ...)
    audit.prove   {seq} -> inclusion proof JSON (docs/audit.md section 4)
    audit.head    {sign?: true} -> signed tree head JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from agentix.core.audit import public_key_bytes
from agentix.core.errors import InvalidRequest
from agentix.kernel.dispatch import Call
from agentix.kernel.methods import method
from agentix.kernel.home import Home
from agentix.store.audit import AuditEvents, AuditLog
from agentix.store.db import Database
from agentix.store.recovery import RecoveryReport, recover

if TYPE_CHECKING:
    from agentix.kernel.kernel import Kernel

__all__ = ["KEY_NAME", "KernelAudit", "load_or_create_key", "register"]

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


def register(k: Kernel, audit: KernelAudit) -> None:
    alog = audit.log

    def _int(params: dict[str, Any], key: str, default: int | None) -> int | None:
        v = params.get(key, default)
        if v is None:
            return None
        if type(v) is not int:
            raise InvalidRequest(f'parameter "{key}" must be an integer', field=key)
        return v

    async def audit_tail(call: Call) -> dict[str, Any]:
        p = call.params
        after = _int(p, "after", 0) or 0
        limit = _int(p, "limit", 100) or 100
        if not 1 <= limit <= 10_000:
            raise InvalidRequest('"limit" must be between 1 and 10000', field="limit")
        wait = p.get("wait", 0) or 0
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0:
            raise InvalidRequest('"wait" must be a number of seconds', field="wait")
        kw = dict(after=after, agent=p.get("agent"), kind=p.get("kind"), limit=limit)
        await audit.sink.sync()  # no-effect records not yet committed are shown too
        entries = audit.sink.tail(**kw)
        if not entries and wait:
            await audit.sink.wait_for_new(min(float(wait), 60.0))
            entries = audit.sink.tail(**kw)
        return {"entries": entries}

    async def audit_verify(call: Call) -> dict[str, Any]:
        await audit.sink.sync()
        rep = await asyncio.to_thread(alog.verify)
        return rep.to_json()

    async def audit_prove(call: Call) -> dict[str, Any]:
        seq = _int(call.params, "seq", None)
        if seq is None:
            raise InvalidRequest('missing parameter "seq" (an entry seq)', field="seq")
        await audit.sink.sync()
        return await asyncio.to_thread(alog.prove, seq)

    async def audit_head(call: Call) -> dict[str, Any]:
        sign = call.params.get("sign", True)
        if not isinstance(sign, bool):
            raise InvalidRequest('"sign" must be true or false', field="sign")
        await audit.sink.sync()
        head = await alog.head(sign=sign)
        assert alog.public_key is not None
        return {**head, "public_key": alog.public_key.hex()}

    for name, fn in [("audit.tail", audit_tail), ("audit.verify", audit_verify),
                     ("audit.prove", audit_prove), ("audit.head", audit_head)]:
        k.pipeline.register(method(name, fn, operator=True))
