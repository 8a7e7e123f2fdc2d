"""The inference queue discipline: who goes next to a provider. Pure; the clock is passed in.
(Over 400 lines: one queue discipline with its four variants and their statistics, pure; the
driver is kernel/inference.py.)

One ``Scheduler`` per provider. The driver (``kernel/inference.py``) calls ``submit`` when a
request arrives, ``dispatch(now)`` whenever something changed (an arrival, a completion, a
timer it set from ``Dispatch.wake_at``), starts the tickets it is given, and reports back
with ``finish``, ``requeue`` (a retry) or ``cancel`` (the agent died or gave up).

Rules (discipline ``wfq``, the default):

* **Weighted fair queuing** (start-time fair queuing, SFQ): a request of estimated cost
  ``c`` tokens from an agent of weight ``w`` gets start tag ``S = max(V, F_agent)`` and
  finish tag ``F = S + c / w``; the agent's ``F_agent`` becomes ``F``. The waiting request
  with the smallest start tag goes first (ties: smallest finish tag, then arrival) and the
  virtual time ``V`` becomes its start tag. Over any interval in which two agents are
  backlogged, their served costs divided by their weights differ by at most one request's
  ``c / w`` each. An agent that was idle starts at ``V``, ahead of the backlog, so a short
  interactive request waits only for a free slot. Actual usage corrects ``F_agent``.
* **Aging**: a request that has waited ``max_wait`` seconds or more goes before every
  younger one (oldest first), so no request waits much longer than ``max_wait`` plus one
  service time, whatever the weights.
* **Deadlines**: a waiting request whose deadline passed is dropped (``Dispatch.expired``)
  and never started.
* **Limits**: a request starts only when the provider's ``ProviderLimiter`` admits it
  (concurrency cap, requests/min, tokens/min, 429 pause). The head request is never skipped
  for a smaller one, so a big request cannot be starved by the token bucket.
* **Cancel**: a waiting request is removed; a running one frees its slot at once.
* **Interactive reserve** (``reserve`` slots, default 0): a request is *interactive* when
  its agent had nothing waiting or running and its last request ended at least
  ``interactive_idle`` seconds before (a person or a sporadic agent, not a backlog; a new
  agent's first request is bulk, so a burst of new agents cannot take the reserve). Interactive requests may use every slot; the others
  (*bulk*) only ``cap - reserve`` of them, except that a reserved slot left idle for
  ``lend_after`` seconds while bulk work waits is lent to it. So a reserved slot never
  idle-blocks bulk work for longer than ``lend_after`` at a time (``lend_after = inf``: never
  lent -- a dedicated slot). Without pre-emption a lent slot is only returned when its
  request ends: the reserve bounds an interactive request's wait only while its slot is
  not lent, which is the trade between capacity and latency that docs/inference.md
  measures.

The disciplines ``fifo`` (arrival order), ``round_robin`` (one request per agent in turn,
no weights) and ``none`` (no queue, no limits: everything starts at once) exist for the
benchmark, behind the same interface.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal, get_args

from agentix.core.ratelimit import LimiterStats, ProviderLimiter, RateLimits

__all__ = [
    "DISCIPLINES",
    "AgentStats",
    "Dispatch",
    "Discipline",
    "Scheduler",
    "SchedulerStats",
    "Ticket",
    "weighted_jain",
]

Discipline = Literal["wfq", "fifo", "round_robin", "none"]
DISCIPLINES: tuple[str, ...] = get_args(Discipline)
TicketState = Literal["waiting", "running", "done", "cancelled", "expired"]
_WAIT_SAMPLES = 2048


@dataclass(eq=False)
class Ticket:
    """One request's place in the scheduler."""

    id: int
    agent_id: str
    weight: float
    cost: float
    enqueued_at: float
    deadline: float | None = None
    interactive: bool = False
    start_tag: float = 0.0
    finish_tag: float = 0.0
    started_at: float | None = None
    state: TicketState = "waiting"
    attempts: int = 0


@dataclass(frozen=True)
class Dispatch:
    """What the driver must do now: start these, fail these, wake again at ``wake_at``."""

    start: tuple[Ticket, ...] = ()
    expired: tuple[Ticket, ...] = ()
    wake_at: float | None = None


@dataclass(frozen=True)
class AgentStats:
    agent_id: str
    weight: float
    waiting: int
    running: int
    served: int
    tokens: float
    share: float
    weighted_share: float
    mean_wait: float
    p99_wait: float
    max_wait: float


@dataclass(frozen=True)
class SchedulerStats:
    discipline: str
    queue_length: int
    in_flight: int
    served: int
    expired: int
    cancelled: int
    requeued: int
    tokens: float
    fairness: float
    limiter: LimiterStats | None
    agents: tuple[AgentStats, ...]
    reserve: int = 0  # slots kept for interactive requests
    lent: int = 0  # times a reserved slot was lent to bulk work after lend_after


@dataclass
class _Agent:
    weight: float = 1.0
    last_finish: float = 0.0
    waiting: int = 0
    running: int = 0
    served: int = 0
    tokens: float = 0.0
    wait_sum: float = 0.0
    wait_max: float = 0.0
    dispatched: int = 0
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=_WAIT_SAMPLES))
    last_done: float = float("-inf")  # when its last request ended (interactive detection)


def weighted_jain(amounts: dict[str, tuple[float, float]]) -> float:
    """Jain's fairness index of ``amount / weight`` over agents: 1.0 is perfectly fair.

    ``amounts`` maps agent -> (amount received, weight). Empty input is fair (1.0)."""
    xs = [a / w for a, w in amounts.values() if w > 0]
    if not xs:
        return 1.0
    s, s2 = sum(xs), sum(x * x for x in xs)
    return 1.0 if s2 == 0 else (s * s) / (len(xs) * s2)


def _p99(values: deque[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Scheduler:
    """Queue discipline + limiter for one provider (see the module docstring)."""

    def __init__(
        self,
        limits: RateLimits,
        now: float,
        discipline: Discipline = "wfq",
        max_wait: float = 30.0,
        *,
        reserve: int = 0,
        interactive_idle: float = 1.0,
        lend_after: float = 0.05,
    ) -> None:
        if discipline not in DISCIPLINES:
            raise ValueError(f"unknown discipline {discipline!r}; expected one of {DISCIPLINES}")
        if max_wait <= 0:
            raise ValueError("max_wait must be positive")
        if reserve < 0 or interactive_idle < 0 or not lend_after >= 0:
            raise ValueError("reserve, interactive_idle and lend_after must not be negative")
        if reserve and (limits.concurrency is None or reserve >= limits.concurrency):
            raise ValueError(f"reserve ({reserve}) must be smaller than the concurrency cap "
                             f"({limits.concurrency})")
        self.reserve = reserve if discipline != "none" else 0
        self.interactive_idle = interactive_idle
        self.lend_after = lend_after
        #: since when bulk work has been held back from a free reserved slot (None: it is not)
        self._held_since: float | None = None
        self._lent = 0
        self._iwait: dict[int, Ticket] = {}  # waiting interactive tickets, oldest first
        self.discipline: Discipline = discipline
        self.max_wait = max_wait
        self.limiter = ProviderLimiter(limits if discipline != "none" else RateLimits(concurrency=None), now)
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._vtime = 0.0
        self._agents: dict[str, _Agent] = {}
        self._waiting: dict[int, Ticket] = {}
        self._running: dict[int, Ticket] = {}
        # wfq: heap of ((start_tag, finish_tag), seq, ticket); fifo/none: ((enqueued_at, 0), seq,
        # ticket); entries of tickets no longer waiting are dropped lazily
        self._heap: list[tuple[tuple[float, float], int, Ticket]] = []
        self._arrivals: deque[tuple[float, int, Ticket]] = deque()  # for aging, arrival order
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._rr: OrderedDict[str, deque[Ticket]] = OrderedDict()
        self._expired = self._cancelled = self._requeued = self._served = 0

    # -- arrivals -------------------------------------------------------------------------
    def submit(
        self, agent_id: str, weight: float, cost: float, now: float, deadline: float | None = None
    ) -> Ticket:
        """Queue a request of estimated ``cost`` tokens for ``agent_id`` at ``weight``."""
        if weight <= 0:
            raise ValueError(f"weight must be positive, got {weight}")
        cost = max(1.0, float(cost))
        ag = self._agents.get(agent_id)
        if ag is None:  # a new agent has shown no idleness yet: its first request is bulk
            ag = self._agents[agent_id] = _Agent(last_done=now)
        ag.weight = weight
        interactive = (ag.waiting == 0 and ag.running == 0
                       and now - ag.last_done >= self.interactive_idle)
        t = Ticket(next(self._ids), agent_id, weight, cost, now, deadline, interactive=interactive)
        t.start_tag = max(self._vtime, ag.last_finish)
        t.finish_tag = t.start_tag + cost / weight
        ag.last_finish = t.finish_tag
        self._enqueue(t)
        return t

    def _enqueue(self, t: Ticket) -> None:
        t.state = "waiting"
        self._waiting[t.id] = t
        if t.interactive and self.reserve:
            self._iwait[t.id] = t
        self._agents[t.agent_id].waiting += 1
        seq = next(self._seq)
        if self.discipline == "round_robin":
            self._rr.setdefault(t.agent_id, deque()).append(t)
        else:
            key = (t.start_tag, t.finish_tag) if self.discipline == "wfq" else (t.enqueued_at, 0.0)
            heapq.heappush(self._heap, (key, seq, t))
        self._arrivals.append((t.enqueued_at, seq, t))
        if t.deadline is not None:
            heapq.heappush(self._deadlines, (t.deadline, seq, t))

    def requeue(self, t: Ticket, now: float) -> None:
        """Put a started request back to wait (its slot is freed; it keeps its place)."""
        if t.state != "running":
            return
        self._release(t, now, actual=None, ok=False)
        self._requeued += 1
        if self.discipline == "round_robin":
            self._rr.setdefault(t.agent_id, deque()).appendleft(t)
            self._rr.move_to_end(t.agent_id, last=False)
            t.state = "waiting"
            self._waiting[t.id] = t
            if t.interactive and self.reserve:
                self._iwait[t.id] = t
            self._agents[t.agent_id].waiting += 1
            self._arrivals.appendleft((t.enqueued_at, -1, t))
            if t.deadline is not None:
                heapq.heappush(self._deadlines, (t.deadline, next(self._seq), t))
        else:
            self._enqueue(t)
            # keep arrival order sorted for aging: a requeued ticket is old
            self._arrivals = deque(sorted(self._arrivals, key=lambda x: (x[0], x[1])))

    # -- removals -------------------------------------------------------------------------
    def _unwait(self, t: Ticket) -> None:
        self._waiting.pop(t.id, None)
        self._iwait.pop(t.id, None)
        self._agents[t.agent_id].waiting -= 1
        if self.discipline == "round_robin":
            q = self._rr.get(t.agent_id)
            if q is not None:
                try:
                    q.remove(t)
                except ValueError:
                    pass
                if not q:
                    del self._rr[t.agent_id]

    def cancel(self, t: Ticket, now: float) -> bool:
        """Drop a request whose caller is gone. True if it was waiting or running."""
        if t.state == "waiting":
            self._unwait(t)
            ag = self._agents[t.agent_id]
            if ag.last_finish == t.finish_tag:
                ag.last_finish = t.start_tag  # it was the agent's last: do not charge it
        elif t.state == "running":
            self._release(t, now, actual=None, ok=False)
        else:
            return False
        t.state = "cancelled"
        self._cancelled += 1
        return True

    def cancel_agent(self, agent_id: str, now: float) -> list[Ticket]:
        """Drop every waiting and running request of an agent (it died)."""
        mine = [t for t in (*self._waiting.values(), *self._running.values()) if t.agent_id == agent_id]
        for t in mine:
            self.cancel(t, now)
        return mine

    def finish(self, t: Ticket, now: float, actual_tokens: float | None, ok: bool = True) -> None:
        """A started request ended; ``actual_tokens`` settles the estimate."""
        if t.state != "running":
            return
        self._release(t, now, actual_tokens, ok)
        t.state = "done"
        ag = self._agents[t.agent_id]
        if ok:
            self._served += 1
            ag.served += 1
            ag.tokens += t.cost if actual_tokens is None else actual_tokens
            if actual_tokens is not None and self.discipline == "wfq":
                ag.last_finish = max(self._vtime, ag.last_finish + (actual_tokens - t.cost) / t.weight)

    def _release(self, t: Ticket, now: float, actual: float | None, ok: bool) -> None:
        self._running.pop(t.id, None)
        ag = self._agents[t.agent_id]
        ag.running -= 1
        ag.last_done = now
        self.limiter.finish(t.cost, actual, now, ok)

    def throttled(self, now: float, retry_after: float | None, backoff: float = 1.0) -> None:
        """The provider said 429: pause it and learn a lower concurrency."""
        if self.discipline != "none":
            self.limiter.throttled(now, retry_after, backoff)

    # -- the decision -----------------------------------------------------------------------
    def _best(self, now: float) -> tuple[Ticket | None, bool]:
        """The next request and whether it was chosen by aging."""
        while self._arrivals and self._arrivals[0][2].state != "waiting":
            self._arrivals.popleft()
        if self._arrivals and now - self._arrivals[0][0] >= self.max_wait:
            return self._arrivals[0][2], True
        return self._by_discipline(), False

    def _by_discipline(self) -> Ticket | None:
        if self.discipline == "round_robin":
            for q in self._rr.values():
                return q[0]
            return None
        while self._heap and self._heap[0][2].state != "waiting":
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        # a ticket may sit in the heap twice after a requeue: skip stale duplicates
        return self._heap[0][2]

    def dispatch(self, now: float) -> Dispatch:
        """Start every request that may start now, in discipline order."""
        expired: list[Ticket] = []
        while self._deadlines and (
            self._deadlines[0][2].state != "waiting" or self._deadlines[0][0] <= now
        ):
            _, _, t = heapq.heappop(self._deadlines)
            if t.state == "waiting" and t.deadline is not None and t.deadline <= now:
                self._unwait(t)
                t.state = "expired"
                self._expired += 1
                expired.append(t)
        start: list[Ticket] = []
        wake: float | None = None
        while True:
            t, aged = self._best(now)
            if t is None:
                break
            if not self.limiter.admissible(t.cost, now):
                wake = self.limiter.wake_at(t.cost, now)
                break
            if self._reserved_for_interactive(t, now):
                # the free slot is for interactive work: the oldest interactive request
                # goes, even from behind the head (an aged bulk request, say)
                it = next(iter(self._iwait.values()), None)
                if it is None or not self.limiter.admissible(it.cost, now):
                    assert self._held_since is not None
                    lend = self._held_since + self.lend_after
                    wake = lend if lend != float("inf") else None  # never lent: no timer
                    break
                t, aged = it, True  # out of discipline order: virtual time stays
            self._unwait(t)
            t.state = "running"
            t.started_at = now
            t.attempts += 1
            self._running[t.id] = t
            ag = self._agents[t.agent_id]
            ag.running += 1
            w = now - t.enqueued_at
            ag.wait_sum += w
            ag.dispatched += 1
            ag.wait_max = max(ag.wait_max, w)
            ag.waits.append(w)
            if self.discipline == "wfq" and not aged:
                # an aged request jumped the line: it must not drag virtual time forward
                self._vtime = max(self._vtime, t.start_tag)
            self.limiter.start(t.cost, now)
            start.append(t)
            if self.discipline == "round_robin" and t.agent_id in self._rr:
                self._rr.move_to_end(t.agent_id)
        cap = self.limiter.cap
        if not self._waiting or (cap is not None and self.limiter.in_flight >= cap):
            self._held_since = None  # no free slot, or nothing waits: nothing is held back
        if self._waiting:
            nxt = [wake] if wake is not None else []
            if self._deadlines:
                nxt.append(self._deadlines[0][0])
            if self._arrivals:
                nxt.append(self._arrivals[0][0] + self.max_wait)
            nxt = [x for x in nxt if x > now]
            wake = min(nxt) if nxt else None
        else:
            wake = None
        return Dispatch(tuple(start), tuple(expired), wake)

    def _reserved_for_interactive(self, t: Ticket, now: float) -> bool:
        """True if bulk ticket ``t`` must leave the free slot to the interactive reserve
        for now (it is lent once it has stayed free ``lend_after``)."""
        if not self.reserve or t.interactive:
            return False
        cap = self.limiter.cap
        if cap is None or self.limiter.in_flight < max(1, cap - self.reserve):
            return False
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since >= self.lend_after:
            # lent; the other free reserved slots have been idle as long (the timer is
            # reset only when no slot is free or nothing waits, at the end of dispatch)
            self._lent += 1
            return False
        return True

    # -- observation ------------------------------------------------------------------------
    def statistics(self, now: float) -> SchedulerStats:
        total = sum(a.tokens for a in self._agents.values())
        wsum = sum(a.weight for a in self._agents.values() if a.tokens > 0) or 1.0
        agents = []
        for aid, a in sorted(self._agents.items()):
            agents.append(
                AgentStats(
                    agent_id=aid,
                    weight=a.weight,
                    waiting=a.waiting,
                    running=a.running,
                    served=a.served,
                    tokens=a.tokens,
                    share=a.tokens / total if total else 0.0,
                    weighted_share=(a.tokens / total) / (a.weight / wsum) if total else 0.0,
                    mean_wait=a.wait_sum / a.dispatched if a.dispatched else 0.0,
                    p99_wait=_p99(a.waits),
                    max_wait=a.wait_max,
                )
            )
        fair = weighted_jain({a.agent_id: (a.tokens, a.weight) for a in agents if a.tokens > 0})
        return SchedulerStats(
            discipline=self.discipline,
            queue_length=len(self._waiting),
            in_flight=len(self._running),
            served=self._served,
            expired=self._expired,
            cancelled=self._cancelled,
            requeued=self._requeued,
            tokens=total,
            fairness=fair,
            limiter=self.limiter.statistics(now) if self.discipline != "none" else None,
            agents=tuple(agents),
            reserve=self.reserve,
            lent=self._lent,
        )

    def forget_agent(self, agent_id: str) -> None:
        """Drop an idle agent's counters (it exited)."""
        a = self._agents.get(agent_id)
        if a is not None and a.waiting == 0 and a.running == 0:
            del self._agents[agent_id]
