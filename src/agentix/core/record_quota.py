"""How many audit records a caller can make the kernel write with calls that change nothing.

Rule: a call that had no effect outside the kernel — a refusal of any call, a read method
(``no_effect`` in the method table), a bad bearer secret given to ``tokens.verify``, a
viewer's refused state change — may still leave an audit record, and every caller could
otherwise grow the log without bound by repeating it. So each caller identity (the label the
connection was bound to: ``http:<token>``, ``<name> (<agent id>)``, ``mcp-http``, ``operator``)
has a token bucket of ``burst`` records refilling at ``rate`` per second. A record within it
is written as always; one beyond it is *counted, not written*, by kind, and the count is
written later as one ``audit.suppressed`` record (``take``), so the log still accounts for
every refused call while its growth per identity stays at most ``rate`` records per second
plus one aggregate per flush interval. Records of calls with an effect are never held back.

Pure: the clock is passed in; the kernel edge (``kernel/record_gate.py``) writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentix.core.ratelimit import TokenBucket

__all__ = ["DEFAULT_BURST", "DEFAULT_RATE", "RecordQuota", "Suppressed"]

#: records an identity may make at once, and per second after that
DEFAULT_BURST = 100
DEFAULT_RATE = 1.0
#: identities kept at most; past it, idle ones (a full bucket, nothing counted) are forgotten
MAX_IDENTITIES = 10_000


@dataclass(frozen=True)
class Suppressed:
    """Records one identity made that were counted instead of written."""

    by: str
    count: int
    kinds: tuple[tuple[str, int], ...]   # (kind, count), sorted by kind
    first: float
    last: float

    def data(self) -> dict[str, object]:
        return {"by": self.by, "count": self.count, "kinds": dict(self.kinds),
                "first": self.first, "last": self.last}


@dataclass
class _Held:
    bucket: TokenBucket
    count: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0


class RecordQuota:
    """Per-identity buckets for the records of calls that changed nothing."""

    def __init__(self, burst: int = DEFAULT_BURST, rate: float = DEFAULT_RATE) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a record quota needs burst >= 1 and rate > 0")
        self.burst, self.rate = burst, rate
        self._by: dict[str, _Held] = {}
        self.written = 0
        self.suppressed = 0

    def admit(self, who: str, kind: str, now: float) -> bool:
        """True: write this record. False: it was counted under ``who`` (see ``take``)."""
        held = self._by.get(who)
        if held is None:
            if len(self._by) >= MAX_IDENTITIES:
                self._forget_idle(now)
            held = self._by[who] = _Held(TokenBucket(self.burst, self.rate, now))
        if held.bucket.can_take(1, now):
            held.bucket.take(1, now)
            self.written += 1
            return True
        if held.count == 0:
            held.first = now
        held.count += 1
        held.last = now
        held.kinds[kind] = held.kinds.get(kind, 0) + 1
        self.suppressed += 1
        return False

    def take(self, who: str) -> Suppressed | None:
        """The records counted under ``who`` since the last ``take`` (and reset the count)."""
        held = self._by.get(who)
        if held is None or held.count == 0:
            return None
        out = Suppressed(who, held.count, tuple(sorted(held.kinds.items())), held.first, held.last)
        held.count, held.kinds = 0, {}
        return out

    def holding(self) -> list[str]:
        """The identities with counted records not yet taken."""
        return [who for who, h in self._by.items() if h.count]

    def _forget_idle(self, now: float) -> None:
        for who in [w for w, h in self._by.items()
                    if h.count == 0 and h.bucket.level(now) >= h.bucket.capacity]:
            del self._by[who]
