"""Budget ledger: pure accounting of an agent's inference, children and tool calls.

Rules:

* **Check before, settle after.** ``reserve(estimate, now)`` refuses with
  ``BudgetExceeded`` when ``used + reserved + estimate`` would pass any limit; the message
  gives the numbers ("would exceed max_output_tokens of 5: output_tokens=11"). Otherwise
  the estimate is reserved until ``settle`` replaces it with the actual usage (or
  ``release`` drops it when the request failed or was cancelled).
* **Overshoot at most one request.** A request is only sent when its estimate fits, so
  usage passes a limit only when a request's actual usage exceeded its estimate; from then
  on every ``reserve`` refuses and ``settle`` returns a ``stop`` signal: the kernel stops
  the agent with reason ``budget_exceeded``.
* **Warn once.** The first settle that takes a dimension to ``warn_at`` of its limit or
  beyond returns a ``warning`` signal for it (re-armed by a reset).
* **Wall clock** counts from the ledger's creation; past ``max_wall_clock`` every reserve
  refuses and ``expired(now)`` is true.
* **Children.** ``carve(child_limits, now)`` gives a child a ledger whose limits are the
  smaller of what it asked for and the parent's remaining; that amount is set aside from
  the parent until ``close_child``, which returns the unused part and adds the child's use
  to the parent's. ``max_children`` counts children ever carved (in the period).
* **Reset.** With ``reset_period``, token, cost and tool-call counters restart every
  period (wall clock and carve-outs do not).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from agentix.core.errors import BudgetExceeded

if TYPE_CHECKING:
    from agentix.core.manifest import Budget

__all__ = [
    "BudgetLedger",
    "BudgetLimits",
    "BudgetSignal",
    "Reservation",
    "Usage",
]

Dimension = Literal["input_tokens", "output_tokens", "cost_usd"]
DIMENSIONS: tuple[Dimension, ...] = ("input_tokens", "output_tokens", "cost_usd")


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, o: Usage) -> Usage:
        return Usage(self.input_tokens + o.input_tokens, self.output_tokens + o.output_tokens, self.cost_usd + o.cost_usd)

    def __sub__(self, o: Usage) -> Usage:
        return Usage(self.input_tokens - o.input_tokens, self.output_tokens - o.output_tokens, self.cost_usd - o.cost_usd)

    def get(self, dim: Dimension) -> float:
        return getattr(self, dim)


@dataclass(frozen=True)
class BudgetLimits:
    """The manifest's ``budget`` as pure limits (``None`` = unlimited)."""

    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None
    max_wall_clock: float | None = None
    max_children: int | None = None
    max_tool_calls: int | None = None
    warn_at: float = 0.8
    reset_period: float | None = None

    @classmethod
    def from_manifest(cls, budget: Budget) -> BudgetLimits:
        """The manifest's ``budget``: every field of these limits is the manifest field of the
        same name (a limit the manifest does not declare is an ``AttributeError`` here, not a
        silent ``None``)."""
        return cls(**{f.name: getattr(budget, f.name) for f in fields(cls)})

    def limit(self, dim: Dimension) -> float | None:
        return getattr(self, "max_" + dim)


@dataclass(frozen=True)
class BudgetSignal:
    """What settling produced: a warning at ``warn_at`` or a stop (limit exceeded)."""

    kind: Literal["warning", "stop"]
    limit: str
    limit_value: float
    used: float

    def message(self) -> str:
        verb = "reached" if self.kind == "warning" else "exceeded"
        return f"{verb} {self.used:g} of {self.limit} {self.limit_value:g}"

    def to_data(self) -> dict[str, Any]:
        return {"limit": self.limit, "limit_value": self.limit_value, "used": self.used}


@dataclass(frozen=True)
class Reservation:
    id: int
    estimate: Usage


def _fmt(v: float) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


#: what a child that sets no limit in a dimension gets of its parent's remaining budget there
CHILD_SHARE = 0.1


def _share(remaining: float) -> float:
    """``CHILD_SHARE`` of ``remaining``; at least one unit when anything is left (a tenth of
    5 tool calls is one call, not none), so a child is never given nothing by default."""
    if remaining <= 0:
        return 0
    if isinstance(remaining, int):
        return max(1, int(remaining * CHILD_SHARE))
    return remaining * CHILD_SHARE


@dataclass
class BudgetLedger:
    """One agent's budget. Build with ``BudgetLedger(limits, now)``; see module rules."""

    limits: BudgetLimits
    created_at: float
    used: Usage = field(default_factory=Usage)
    reserved: Usage = field(default_factory=Usage)
    carved: Usage = field(default_factory=Usage)
    children: int = 0
    tool_calls: int = 0
    carved_tool_calls: int = 0  # tool calls handed to live children (given back when they end)
    stopped: BudgetSignal | None = None
    _period_start: float = 0.0
    _warned: set[str] = field(default_factory=set)
    _open: dict[int, Usage] = field(default_factory=dict)
    _next_id: int = 1
    _lifetime: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self._period_start = self.created_at

    # -- periods ---------------------------------------------------------------------------
    def _roll(self, now: float) -> None:
        p = self.limits.reset_period
        if p and now - self._period_start >= p:
            periods = int((now - self._period_start) // p)
            self._period_start += periods * p
            self.used = Usage()
            self.children = 0
            self.tool_calls = 0
            self._warned.clear()
            if self.stopped is not None and self.stopped.limit != "max_wall_clock":
                self.stopped = None

    def remaining(self, dim: Dimension, now: float | None = None) -> float | None:
        """What may still be reserved in ``dim`` (``None`` = unlimited)."""
        if now is not None:
            self._roll(now)
        lim = self.limits.limit(dim)
        if lim is None:
            return None
        return lim - self.used.get(dim) - self.reserved.get(dim) - self.carved.get(dim)

    def expired(self, now: float) -> bool:
        w = self.limits.max_wall_clock
        return w is not None and now - self.created_at > w

    # -- inference ---------------------------------------------------------------------------
    def reserve(self, estimate: Usage, now: float) -> Reservation:
        """Refuse with ``BudgetExceeded`` if ``estimate`` would pass a limit; else hold it."""
        self._roll(now)
        if self.expired(now):
            w = self.limits.max_wall_clock
            raise BudgetExceeded(
                f"would exceed max_wall_clock of {_fmt(w)}s: elapsed={now - self.created_at:.1f}s",
                limit="max_wall_clock", limit_value=w, used=now - self.created_at, stop=True,
            )
        if self.stopped is not None:
            s = self.stopped
            raise BudgetExceeded(
                f"budget exhausted: {s.limit} of {_fmt(s.limit_value)} already exceeded: {s.limit.removeprefix('max_')}={_fmt(s.used)}",
                limit=s.limit, limit_value=s.limit_value, used=s.used, stop=True,
            )
        for dim in DIMENSIONS:
            lim = self.limits.limit(dim)
            if lim is None:
                continue
            would = self.used.get(dim) + self.reserved.get(dim) + self.carved.get(dim) + estimate.get(dim)
            if would > lim + 1e-12:
                raise BudgetExceeded(
                    f"would exceed max_{dim} of {_fmt(lim)}: {dim}={_fmt(would)}"
                    f" (used {_fmt(self.used.get(dim))}, in flight {_fmt(self.reserved.get(dim))},"
                    f" set aside for children {_fmt(self.carved.get(dim))}, this request {_fmt(estimate.get(dim))})",
                    limit=f"max_{dim}", limit_value=lim, used=self.used.get(dim),
                    requested=estimate.get(dim), stop=False,
                )
        r = Reservation(self._next_id, estimate)
        self._next_id += 1
        self._open[r.id] = estimate
        self.reserved = self.reserved + estimate
        return r

    def release(self, r: Reservation) -> None:
        """Drop a reservation whose request never produced usage."""
        est = self._open.pop(r.id, None)
        if est is not None:
            self.reserved = self.reserved - est

    def settle(self, r: Reservation, actual: Usage, now: float) -> list[BudgetSignal]:
        """Replace the reservation with ``actual`` usage; return warning/stop signals."""
        self.release(r)
        self._roll(now)
        self.used = self.used + actual
        self._lifetime = self._lifetime + actual
        return self._signals()

    def charge(self, actual: Usage, now: float) -> list[BudgetSignal]:
        """Record usage that had no reservation (e.g. a child's returned usage)."""
        self._roll(now)
        self.used = self.used + actual
        self._lifetime = self._lifetime + actual
        return self._signals()

    def _signals(self) -> list[BudgetSignal]:
        out: list[BudgetSignal] = []
        for dim in DIMENSIONS:
            lim = self.limits.limit(dim)
            if lim is None:
                continue
            used = self.used.get(dim)
            if used > lim + 1e-12:
                s = BudgetSignal("stop", f"max_{dim}", lim, used)
                if self.stopped is None:
                    self.stopped = s
                out.append(s)
            elif lim > 0 and used >= self.limits.warn_at * lim and dim not in self._warned:
                self._warned.add(dim)
                out.append(BudgetSignal("warning", f"max_{dim}", lim, used))
        return out

    # -- children and tool calls -----------------------------------------------------------------
    def carve(self, child: BudgetLimits, now: float) -> BudgetLedger:
        """A ledger for a child, its limits carved out of this ledger's remaining budget: in
        each limited dimension, what the child asks (at most what is left) or, when it asks
        nothing there, ``CHILD_SHARE`` of what is left — never all of it, so the first child
        spawned without a budget cannot leave its siblings (and its parent) nothing."""
        self._roll(now)
        if self.limits.max_children is not None and self.children >= self.limits.max_children:
            raise BudgetExceeded(
                f"would exceed max_children of {self.limits.max_children}: children={self.children + 1}",
                limit="max_children", limit_value=self.limits.max_children, used=self.children, stop=False,
            )
        vals: dict[str, Any] = {}
        take: dict[str, float] = {}
        for dim in DIMENSIONS:
            rem = self.remaining(dim)
            want = child.limit(dim)
            if rem is None:
                vals["max_" + dim] = want
                take[dim] = 0
                continue
            rem = max(0, rem)
            got = _share(rem) if want is None else min(want, rem)
            if dim != "cost_usd":
                got = int(got)
            vals["max_" + dim] = got
            take[dim] = got
        wall = child.max_wall_clock
        if self.limits.max_wall_clock is not None:
            left = max(0.0, self.limits.max_wall_clock - (now - self.created_at))
            wall = left if wall is None else min(wall, left)
        calls = child.max_tool_calls
        left = self.tool_calls_left()
        if left is not None:  # tool calls are carved like tokens: a child never adds to the total
            calls = int(_share(left)) if calls is None else min(calls, left)
            self.carved_tool_calls += calls
        # a carved budget never resets: a child's reset_period would renew its share every period
        limits = replace(child, max_wall_clock=wall, max_tool_calls=calls, reset_period=None, **vals)
        self.children += 1
        self.carved = self.carved + Usage(int(take["input_tokens"]), int(take["output_tokens"]), float(take["cost_usd"]))
        return BudgetLedger(limits, now)

    def close_child(self, child: BudgetLedger, now: float) -> list[BudgetSignal]:
        """The child ended: give back its unused carve-out, charge its lifetime use."""
        give = Usage(
            int(child.limits.max_input_tokens or 0) if self.limits.max_input_tokens is not None else 0,
            int(child.limits.max_output_tokens or 0) if self.limits.max_output_tokens is not None else 0,
            float(child.limits.max_cost_usd or 0.0) if self.limits.max_cost_usd is not None else 0.0,
        )
        self.carved = self.carved - give
        if self.limits.max_tool_calls is not None:  # the unused share back; the calls made are ours
            self.carved_tool_calls = max(0, self.carved_tool_calls - (child.limits.max_tool_calls or 0))
            self.tool_calls += child.tool_calls
        return self.charge(child._lifetime, now)

    def tool_calls_left(self, now: float | None = None) -> int | None:
        """Tool calls this agent may still make (``None`` = unlimited): its limit less its own
        calls and what live children were given."""
        if now is not None:
            self._roll(now)
        lim = self.limits.max_tool_calls
        return None if lim is None else max(0, lim - self.tool_calls - self.carved_tool_calls)

    def charge_tool_call(self, now: float) -> None:
        """Count one tool call; refuse past ``max_tool_calls``."""
        self._roll(now)
        lim = self.limits.max_tool_calls
        left = self.tool_calls_left()
        if lim is not None and left is not None and left < 1:
            raise BudgetExceeded(
                f"would exceed max_tool_calls of {lim}: tool_calls={self.tool_calls + 1}",
                limit="max_tool_calls", limit_value=lim, used=self.tool_calls, stop=False,
            )
        self.tool_calls += 1

    def snapshot(self, now: float) -> dict[str, Any]:
        """Counters for ``inference.stats`` / ``agentix top``."""
        self._roll(now)
        return {
            "used": {d: self.used.get(d) for d in DIMENSIONS},
            "reserved": {d: self.reserved.get(d) for d in DIMENSIONS},
            "carved": {d: self.carved.get(d) for d in DIMENSIONS},
            "limits": {("max_" + d): self.limits.limit(d) for d in DIMENSIONS},
            "children": self.children,
            "tool_calls": self.tool_calls,
            "elapsed": now - self.created_at,
            "stopped": None if self.stopped is None else self.stopped.to_data(),
        }
