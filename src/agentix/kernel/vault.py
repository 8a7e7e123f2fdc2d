"""Secrets never leave the kernel: redaction at every exit.

Rules:

- The values redacted are the vault's secrets (``[secrets]``/``keys/secrets.toml``, shown as
  ``[secret:NAME]``) and the inference providers' API keys of at least
  ``MIN_PROVIDER_KEY`` characters (``[secret:provider:NAME]``; shorter ones are placeholders
  such as ``ollama`` whose every mention would be rewritten). ``tools.secrets.redact`` knows
  the forms a value takes on the way out: as is, percent-encoded, ``+``-encoded, base64,
  JSON- and ``repr``-escaped.
- ``install`` puts redaction on every exit of the kernel:
  * every reply and every error (message and ``data``) of ``Pipeline.run`` — agent channels,
    the operator socket and any later face call it;
  * every event before it is appended to the audit log — the kernel's and the inference
    service's;
  * every log line: a ``logging.Filter`` on the handlers of the root logger (where the
    daemon's handler and the ``httpx``/``httpcore`` request logs end up) rewrites the
    formatted message and any exception text.
- ``uninstall`` (at kernel shutdown) removes the log filters.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from agentix.core.errors import AgentixError
from agentix.tools.secrets import redact

if TYPE_CHECKING:
    from agentix.kernel.kernel import Kernel

__all__ = ["MIN_PROVIDER_KEY", "RedactingFilter", "Vault", "install"]

MIN_PROVIDER_KEY = 16


class Vault:
    """The values that must not leave, and the one ``redact`` that removes them."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = {k: v for k, v in secrets.items() if v}
        self._filters: list[tuple[logging.Handler, logging.Filter]] = []

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def redact(self, obj: Any) -> Any:
        return redact(obj, self.secrets) if self.secrets else obj

    def redact_error(self, err: AgentixError) -> AgentixError:
        """``err`` itself if it holds no secret, else a copy of the same type without them."""
        if not self.secrets:
            return err
        message, data = self.redact(err.message), self.redact(err.data)
        if message == err.message and data == err.data:
            return err
        new = copy.copy(err)
        new.message, new.data, new.args = message, data, (message,)
        return new

    # ------------------------------------------------------------ logs
    def watch_logs(self) -> None:
        if not self.secrets:
            return
        for h in logging.getLogger().handlers:
            f = RedactingFilter(self)
            h.addFilter(f)
            self._filters.append((h, f))

    def uninstall(self) -> None:
        for h, f in self._filters:
            h.removeFilter(f)
        self._filters.clear()


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and exception text) with the vault's values redacted."""

    def __init__(self, vault: Vault) -> None:
        super().__init__()
        self.vault = vault

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: show it raw, redacted
            msg = f"{record.msg!r} % {record.args!r}"
        clean = self.vault.redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.vault.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.vault.redact(record.stack_info)
        return True


def provider_keys(k: Kernel) -> dict[str, str]:
    cfg = getattr(getattr(k, "inference", None), "config", None)
    out: dict[str, str] = {}
    for name, p in (getattr(cfg, "providers", None) or {}).items():
        key = getattr(p, "api_key", None)
        if isinstance(key, str) and len(key) >= MIN_PROVIDER_KEY:
            out[f"provider:{name}"] = key
    return out


def install(k: Kernel, secrets: dict[str, str]) -> Vault:
    """Redaction on every exit of ``k`` (see the module rules); returns the vault."""
    vault = Vault({**provider_keys(k), **secrets})
    k.vault = vault
    if not vault:
        return vault
    raw_record = k.events.record

    async def record(kind: str, agent_id: str | None, data: dict[str, Any],
                     taint: tuple[str, ...] = (), **kw: Any) -> Any:
        return await raw_record(kind, agent_id, vault.redact(data), taint, **kw)  # durable=

    k.events.record = record  # type: ignore[method-assign]
    inference = getattr(k, "inference", None)
    if inference is not None and getattr(inference, "_record", None) is not None:
        inner = inference._record

        async def inference_record(kind: str, agent_id: str | None, data: dict[str, Any]) -> Any:
            res = inner(kind, agent_id, vault.redact(data))
            return await res if hasattr(res, "__await__") else res

        inference._record = inference_record
    raw_run = k.pipeline.run

    async def run(caller: Any, method: str, params: dict[str, Any], **kw: Any) -> Any:
        try:
            result = await raw_run(caller, method, params, **kw)
        except AgentixError as err:
            raise vault.redact_error(err) from None
        return vault.redact(result)

    k.pipeline.run = run  # type: ignore[method-assign]
    vault.watch_logs()
    return vault
