"""System calls of the audit log (operator)::

    audit.tail    {after?, agent?, kind?, limit?, wait?} -> {entries: [...]}
    audit.verify  {} -> VerifyReport JSON (ok, entries, first_bad_seq, reason, detail, ...)
    audit.prove   {seq} -> inclusion proof JSON (docs/audit.md section 4)
    audit.head    {sign?: true} -> signed tree head JSON

The log itself (store, signing key, periodic signed heads) is ``kernel/audit_log.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentix.core.errors import InvalidRequest
from agentix.kernel.audit_log import KernelAudit
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.methods import method

__all__ = ["register"]


def register(pipeline: Pipeline, audit: KernelAudit) -> None:
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
        pipeline.register(method(name, fn, operator=True))
