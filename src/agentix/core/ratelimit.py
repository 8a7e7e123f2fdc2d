"""Token buckets and the per-provider limiter: pure arithmetic, the clock passed in.

Rules:

* A ``TokenBucket`` holds at most ``capacity`` units and refills at ``rate`` units per
  second. ``take`` may drive the level negative (a request whose actual usage exceeded its
  estimate is charged in full); the bucket then refuses until it has refilled above zero.
* A ``ProviderLimiter`` admits a request only when (a) fewer than the effective
  concurrency cap are in flight, (b) the requests-per-minute bucket has one unit, (c) the
  tokens-per-minute bucket has the request's estimated tokens (or is full, so a request
  bigger than the bucket can still run alone) and (d) the provider is not paused.
* Learning from 429: a ``throttled`` report pauses the provider until ``retry_after``
  (or a backoff when the server gave none) and lowers the effective concurrency cap to what
  was in flight minus one (never below 1). Each success raises it again by
  ``1 / effective_cap`` (additive increase), never above the configured cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LimiterStats", "ProviderLimiter", "RateLimits", "TokenBucket"]


class TokenBucket:
    """A bucket of ``capacity`` units refilling at ``rate`` units/second from ``now``."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError("a token bucket needs a positive capacity and rate")
        self.capacity = float(capacity)
        self.rate = float(rate)
        self._level = float(capacity)
        self._at = now

    def level(self, now: float) -> float:
        """Units available at ``now`` (may be negative after an overcharge). A query never
        changes the bucket, so asking about a later time is harmless."""
        return min(self.capacity, self._level + max(0.0, now - self._at) * self.rate)

    def _advance(self, now: float) -> None:
        if now > self._at:
            self._level = self.level(now)
            self._at = now

    def can_take(self, n: float, now: float) -> bool:
        """True if ``n`` units may be taken now (an oversized ``n`` needs a full bucket)."""
        lvl = self.level(now)
        return lvl >= min(n, self.capacity) - 1e-9

    def take(self, n: float, now: float) -> None:
        """Take ``n`` units (the level may go negative)."""
        self._advance(now)
        self._level -= n

    def give(self, n: float, now: float) -> None:
        """Return ``n`` units (an estimate that was larger than the actual usage)."""
        self._advance(now)
        self._level = min(self.capacity, self._level + n)

    def time_until(self, n: float, now: float) -> float:
        """Seconds from ``now`` until ``can_take(n)`` holds."""
        need = min(n, self.capacity) - self.level(now)
        return 0.0 if need <= 1e-9 else need / self.rate


@dataclass(frozen=True)
class RateLimits:
    """Configured limits of one provider. ``None`` means unlimited."""

    concurrency: int | None = 4
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")


@dataclass(frozen=True)
class LimiterStats:
    in_flight: int
    concurrency_cap: int | None
    effective_cap: float | None
    paused_for: float
    throttled: int
    request_tokens_left: float | None
    tokens_left: float | None


class ProviderLimiter:
    """Concurrency cap + request and token buckets + 429 pause for one provider."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.in_flight = 0
        self._eff_cap: float | None = None if limits.concurrency is None else float(limits.concurrency)
        self._paused_until = -math.inf
        self._throttled = 0
        self._rpm = (
            TokenBucket(limits.requests_per_minute, limits.requests_per_minute / 60.0, now)
            if limits.requests_per_minute
            else None
        )
        self._tpm = (
            TokenBucket(limits.tokens_per_minute, limits.tokens_per_minute / 60.0, now)
            if limits.tokens_per_minute
            else None
        )

    @property
    def cap(self) -> int | None:
        """The concurrency cap in force now (learned, never above the configured one)."""
        return None if self._eff_cap is None else max(1, int(self._eff_cap))

    def admissible(self, tokens: float, now: float) -> bool:
        """True if a request of ``tokens`` estimated tokens may start now."""
        if now < self._paused_until:
            return False
        cap = self.cap
        if cap is not None and self.in_flight >= cap:
            return False
        if self._rpm is not None and not self._rpm.can_take(1, now):
            return False
        return self._tpm is None or self._tpm.can_take(tokens, now)

    def wake_at(self, tokens: float, now: float) -> float | None:
        """Earliest time a request of ``tokens`` could start, ignoring the concurrency cap
        (a completion wakes the driver for that); ``None`` if it could start now."""
        t = max(now, self._paused_until)
        if self._rpm is not None:
            t = max(t, now + self._rpm.time_until(1, now))
        if self._tpm is not None:
            t = max(t, now + self._tpm.time_until(tokens, now))
        return None if t <= now else t

    def start(self, tokens: float, now: float) -> None:
        self.in_flight += 1
        if self._rpm is not None:
            self._rpm.take(1, now)
        if self._tpm is not None:
            self._tpm.take(tokens, now)

    def finish(self, estimated: float, actual: float | None, now: float, ok: bool) -> None:
        """A started request ended; settle the token bucket with the actual usage."""
        self.in_flight = max(0, self.in_flight - 1)
        if self._tpm is not None and actual is not None:
            diff = actual - estimated
            if diff > 0:
                self._tpm.take(diff, now)
            elif diff < 0:
                self._tpm.give(-diff, now)
        if ok and self._eff_cap is not None and self.limits.concurrency is not None:
            self._eff_cap = min(float(self.limits.concurrency), self._eff_cap + 1.0 / max(1.0, self._eff_cap))

    def throttled(self, now: float, retry_after: float | None, backoff: float = 1.0) -> None:
        """The provider answered 429: pause and lower the effective concurrency cap."""
        self._throttled += 1
        pause = retry_after if retry_after is not None and retry_after >= 0 else backoff
        self._paused_until = max(self._paused_until, now + pause)
        if self._eff_cap is not None:
            # the request that was refused is still counted in in_flight here
            self._eff_cap = max(1.0, min(self._eff_cap, float(self.in_flight - 1)))

    def statistics(self, now: float) -> LimiterStats:
        return LimiterStats(
            in_flight=self.in_flight,
            concurrency_cap=self.limits.concurrency,
            effective_cap=self._eff_cap,
            paused_for=max(0.0, self._paused_until - now),
            throttled=self._throttled,
            request_tokens_left=None if self._rpm is None else self._rpm.level(now),
            tokens_left=None if self._tpm is None else self._tpm.level(now),
        )
