"""Secrets never leave the kernel: redaction at every exit.

Rules:

- The values redacted are the vault's secrets (``[secrets]``/``keys/secrets.toml``, shown as
  ``[secret:NAME]``) and the inference providers' API keys of at least
  ``MIN_PROVIDER_KEY`` characters (``[secret:provider:NAME]``; shorter ones are placeholders
  such as ``ollama`` whose every mention would be rewritten). ``tools.secrets.redact`` knows
  the forms a value takes on the way out: as is, percent-encoded, ``+``-encoded, base64,
  JSON- and ``repr``-escaped.
- The composition root (``kernel/kernel.py``) builds the vault first and puts it on every
  exit of the kernel, by construction (nothing is patched afterwards):
  * every reply and every error (message and ``data``) of ``Pipeline.run`` — agent channels,
    the operator socket and any later face call it (``Pipeline(redactor=vault)``);
  * every event before it is appended to the audit log — the kernel's and the inference
    service's: both are given ``vault.sink(events)`` (``RedactingSink``), never the raw sink;
  * every log line (``watch_logs``): a ``logging.Filter`` on the handlers of the root logger
    (where the daemon's handler and the ``httpx``/``httpcore`` request logs end up) rewrites
    the formatted message and any exception text.
- ``uninstall`` (at kernel shutdown) removes the log filters.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from agentix.core.errors import AgentixError
from agentix.kernel.dispatch import EventSink
from agentix.llm.inference_config import InferenceConfig
from agentix.tools.secrets import redact

__all__ = ["MIN_PROVIDER_KEY", "RedactingFilter", "RedactingSink", "Vault", "provider_keys"]

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

    def sink(self, events: EventSink) -> EventSink:
        """``events`` as the kernel records through it: redacted when there is anything to hide."""
        return RedactingSink(events, self) if self.secrets else events

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


class RedactingSink:
    """An event sink that redacts every event's data before the sink it wraps records it.
    It only writes: reading is the log's (``KernelRoot.audit.sink``)."""

    def __init__(self, inner: EventSink, vault: Vault) -> None:
        self.inner = inner
        self.vault = vault

    async def record(self, kind: str, agent_id: str | None, data: dict[str, Any],
                     taint: tuple[str, ...] = (), *, durable: bool = True) -> Any:
        return await self.inner.record(kind, agent_id, self.vault.redact(data), taint, durable=durable)


def provider_keys(config: InferenceConfig) -> dict[str, str]:
    """The inference providers' API keys worth redacting (``[secret:provider:NAME]``)."""
    out: dict[str, str] = {}
    for name, p in (getattr(config, "providers", None) or {}).items():
        key = getattr(p, "api_key", None)
        if isinstance(key, str) and len(key) >= MIN_PROVIDER_KEY:
            out[f"provider:{name}"] = key
    return out
