"""The inference driver: runs the ``think`` system call against the providers, in the
order the scheduler (``core/scheduler.py``) decides, charging the agent's budget.
(Just over 400 lines: one driver loop with its retry, streaming and settlement paths, which
read best together; the queue discipline itself is pure, in core/scheduler.py.)

One ``InferenceService`` per kernel. For each provider it keeps a ``Scheduler`` (queue
discipline + concurrency cap + rate limits) and the ``Provider``. ``think``:

1. resolves ``provider:model`` and validates the request;
2. pre-checks the budget with an estimate (prompt tokens + ``max_tokens``, priced) —
   ``BudgetExceeded`` before anything is queued or sent;
3. queues a ticket and waits until the scheduler starts it (or its deadline passes:
   ``Timeout``; or the agent is cancelled: the place is freed);
4. calls the provider; 429 pauses the provider for ``retry-after`` and puts the ticket back
   in its place; 5xx and connection errors back off exponentially; at most
   ``retry_budget`` retries, and never after partial text was streamed;
5. settles the budget with the actual usage and records ``usage.reported``, and
   ``budget.warning`` / ``budget.exceeded`` when settling crossed a threshold; on
   ``budget.exceeded`` it calls ``stop_agent(agent_id, "budget_exceeded")``.

Events go through ``record(kind, agent_id, data)`` (sync or async), which the kernel binds
to its audit log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentix.core.budget import BudgetLedger, Reservation, Usage
from agentix.core.errors import AgentixError, BudgetExceeded, InvalidRequest, ProviderError, StateError, Timeout
from agentix.core.scheduler import Scheduler, Ticket
from agentix.llm.base import (
    DeltaCallback,
    InferenceRequest,
    InferenceResponse,
    Provider,
    estimate_tokens,
)
from agentix.llm.inference_config import InferenceConfig, Price, ProviderConfig, SchedulerConfig

__all__ = ["InferenceService", "build_provider"]

log = logging.getLogger(__name__)
Record = Callable[[str, str | None, dict[str, Any]], Awaitable[None] | None]
StopAgent = Callable[[str, str], Awaitable[None] | None]


def _reserve(sc: SchedulerConfig, cap: int | None) -> dict[str, Any]:
    """The interactive reserve for a provider of concurrency ``cap`` (none where the cap
    cannot hold it: no cap, or a cap not above the reserve)."""
    r = sc.reserve_interactive
    if not r or cap is None or cap <= r:
        return {}
    return {"reserve": r, "interactive_idle": sc.interactive_idle, "lend_after": sc.lend_after}


def build_provider(cfg: ProviderConfig, model_dir: Path | None = None) -> Provider:
    """The provider object for one configured provider."""
    if cfg.kind == "openai":
        from agentix.llm.openai import OpenAIProvider

        return OpenAIProvider(cfg.name, cfg.base_url or "", cfg.api_key, cfg.timeout)
    if cfg.kind == "anthropic":
        from agentix.llm.anthropic import AnthropicProvider

        return AnthropicProvider(cfg.name, cfg.base_url or "", cfg.api_key, cfg.timeout)
    if cfg.kind == "scripted":
        from agentix.llm.scripted import ScriptedProvider

        return ScriptedProvider.from_file(cfg.script or "", loop=cfg.loop)
    from agentix.llm.local import LocalProvider

    return LocalProvider(cfg.name, cfg.model_path, cfg.parallel, cfg.threads, cfg.context, model_dir)


async def _maybe(r: Awaitable[None] | None) -> None:
    if r is not None:
        await r


@dataclass
class _Lane:
    name: str
    provider: Provider
    sched: Scheduler
    waiters: dict[int, asyncio.Future[str]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    overhead: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    done: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=100_000))
    output_tokens: int = 0
    overhead_total: float = 0.0
    retries: int = 0
    failures: int = 0


class InferenceService:
    """Scheduled, budgeted inference for every agent (see the module docstring)."""

    def __init__(
        self,
        config: InferenceConfig,
        clock: Callable[[], float] = time.monotonic,
        record: Record | None = None,
        stop_agent: StopAgent | None = None,
        providers: dict[str, Provider] | None = None,
        model_dir: Path | None = None,
        discipline: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._record = record
        self._stop_agent = stop_agent
        self._rng = random.Random()
        self._tasks: dict[str, set[asyncio.Task[Any]]] = {}
        self._bg: set[asyncio.Future[Any]] = set()
        now = clock()
        sc = config.scheduler
        self._lanes: dict[str, _Lane] = {}
        for name, pc in config.providers.items():
            prov = (providers or {}).get(name)
            self._lanes[name] = _Lane(
                name=name,
                provider=prov if prov is not None else _Lazy(pc, model_dir),
                sched=Scheduler(pc.limits, now, discipline or sc.discipline, sc.max_wait,  # type: ignore[arg-type]
                                **_reserve(sc, pc.limits.concurrency)),
            )

    # -- the system call -------------------------------------------------------------------
    async def think(
        self,
        agent_id: str,
        weight: float,
        request: InferenceRequest | dict[str, Any],
        ledger: BudgetLedger | None = None,
        *,
        model: str | None = None,
        on_delta: DeltaCallback | None = None,
        deadline: float | None = None,
        live: Callable[[], None] | None = None,
    ) -> InferenceResponse:
        """Run one inference for ``agent_id`` at scheduling ``weight``.

        ``request`` is an ``InferenceRequest`` or the ``think`` params (validated here);
        ``model`` is ``provider:model`` (default: the params' ``model``, then the config's
        default). ``deadline`` is seconds from now to wait in the queue at most. ``live`` is
        asked each time the request's turn comes (first, and after a retry's back-off), before
        the provider is called: it raises if the authority the call was decided on is gone
        (a model token revoked or expired while the request waited), and then nothing reaches
        the provider and the budget reservation is released."""
        if isinstance(request, dict):
            model = model or request.get("model")
            request = InferenceRequest.from_params(request, self.config.scheduler.default_max_tokens)
        pcfg, model_name = self.config.resolve(model)
        lane = self._lanes[pcfg.name]
        req = replace(request, model=model_name)
        price = self.config.price(pcfg.name, model_name)
        if ledger is not None and ledger.limits.max_cost_usd is not None and price is None:
            raise InvalidRequest(
                f"model {pcfg.name}:{model_name} has no price, so a max_cost_usd budget cannot be enforced; "
                f"add [prices.\"{pcfg.name}:{model_name}\"] to config.toml", field="model")
        est_in = estimate_tokens(req)
        est_cost = price.cost(est_in, req.max_tokens) if price else 0.0
        now = self.clock()
        reservation: Reservation | None = None
        if ledger is not None:
            try:
                reservation = ledger.reserve(Usage(est_in, req.max_tokens, est_cost), now)
            except BudgetExceeded as e:
                if e.data.get("stop"):
                    await self._emit("budget.exceeded", agent_id, dict(e.data, message=e.message))
                    await self._stop(agent_id)
                raise
        task = asyncio.current_task()
        if task is not None:
            self._tasks.setdefault(agent_id, set()).add(task)
        try:
            return await self._run(lane, agent_id, weight, req, ledger, reservation, price, est_in, on_delta,
                                   deadline if deadline is not None else self.config.scheduler.request_timeout,
                                   live)
        finally:
            if task is not None:
                s = self._tasks.get(agent_id)
                if s is not None:
                    s.discard(task)
                    if not s:
                        del self._tasks[agent_id]

    async def _run(self, lane: _Lane, agent_id: str, weight: float, req: InferenceRequest,
                   ledger: BudgetLedger | None, reservation: Reservation | None, price: Price | None, est_in: int,
                   on_delta: DeltaCallback | None, deadline: float | None,
                   live: Callable[[], None] | None = None) -> InferenceResponse:
        sc = self.config.scheduler
        cost = est_in + req.max_tokens
        t0 = self.clock()
        ticket = self._submit(lane, agent_id, weight, cost, None if deadline is None else t0 + deadline)
        streamed = False

        async def delta(text: str) -> None:
            nonlocal streamed
            streamed = True
            if on_delta is not None:
                r = on_delta(text)
                if r is not None:
                    await r

        retries = 0
        started_at = t0
        asked = False  # the provider is working on it (a cancel now does not undo its cost)
        try:
            while True:
                await self._wait_turn(lane, ticket)
                if live is not None:  # the wait may have outlived the call's authority
                    live()
                started_at = self.clock()
                asked = True
                try:
                    resp = await lane.provider.complete(req, delta if on_delta is not None else None)
                except ProviderError as e:
                    # the provider answered with an error: nothing to charge, unless it had
                    # already streamed text to the caller (then it worked, and is charged below)
                    asked = streamed
                    now = self.clock()
                    retryable = bool(e.data.get("retryable")) and not streamed and retries < sc.retry_budget
                    status = e.data.get("status")
                    if not retryable:
                        lane.failures += 1
                        self._timed(lane, lambda: lane.sched.finish(ticket, now, None, ok=False))
                        raise
                    retries += 1
                    lane.retries += 1
                    backoff = min(sc.backoff_max, sc.backoff_base * 2 ** (retries - 1)) * (0.5 + self._rng.random() / 2)
                    if status == 429:
                        ra = e.data.get("retry_after")
                        self._timed(lane, lambda: lane.sched.throttled(now, ra, backoff))
                        if lane.sched.discipline == "none":
                            # no limiter to pause: behave like a plain client and sleep it off
                            await asyncio.sleep(ra if ra is not None else backoff)
                        # back in its place; _wait_turn registers the waiter, then dispatches
                        self._timed(lane, lambda: lane.sched.requeue(ticket, self.clock()))
                    else:
                        self._timed(lane, lambda: lane.sched.finish(ticket, now, None, ok=False))
                        self._pump(lane)
                        await asyncio.sleep(backoff)
                        ticket = self._submit(lane, agent_id, weight, cost, ticket.deadline)
                    log.info("retry %d of %s for %s after %s", retries, lane.name, agent_id, e.message)
                    continue
                break
        except BaseException as exc:
            if ticket.state in ("waiting", "running"):
                now = self.clock()
                self._timed(lane, lambda: lane.sched.cancel(ticket, now))
                self._pump(lane)
            if asked:
                # given up while the provider generated (the caller disconnected, was killed or
                # stopped; its token revoked mid-stream), or the provider failed after streaming
                # part of its answer: its work is not undone, so it is charged as reserved (the
                # estimate, max_tokens out) and recorded — a caller cannot spend for free by
                # giving up before the answer, nor by making the stream break
                how = ({"error": exc.code, "partial": True} if isinstance(exc, ProviderError)
                       else {"cancelled": True})
                self._charge_cancelled(lane, agent_id, ledger, reservation, est_in, req.max_tokens, price,
                                       started_at, how)
            elif ledger is not None and reservation is not None:
                ledger.release(reservation)
            raise
        now = self.clock()
        actual = resp.usage.input_tokens + resp.usage.output_tokens
        self._timed(lane, lambda: lane.sched.finish(ticket, now, actual or None, ok=True))
        self._pump(lane)
        lane.output_tokens += resp.usage.output_tokens
        lane.done.append((now, resp.usage.output_tokens))
        u = resp.usage
        cost_usd = price.cost(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) if price else 0.0
        await self._emit("usage.reported", agent_id, {
            "provider": lane.name, "model": resp.model, **u.to_data(), "cost_usd": cost_usd,
            "queued_s": round(started_at - t0, 6),
            "duration_s": round(now - started_at, 6), "retries": retries, "scripted": resp.scripted,
        })
        if ledger is not None and reservation is not None:
            signals = ledger.settle(reservation, Usage(resp.usage.input_tokens, resp.usage.output_tokens, cost_usd), now)
            for s in signals:
                if s.kind == "warning":
                    await self._emit("budget.warning", agent_id, dict(s.to_data(), message=s.message()))
                else:
                    await self._emit("budget.exceeded", agent_id, dict(s.to_data(), message=s.message()))
            if any(s.kind == "stop" for s in signals):
                await self._stop(agent_id)
        return replace(resp, cost_usd=cost_usd if price else None)

    def _charge_cancelled(self, lane: _Lane, agent_id: str, ledger: BudgetLedger | None,
                          reservation: Reservation | None, est_in: int, est_out: int, price: Price | None,
                          started_at: float,
                          how: dict[str, Any]) -> None:
        """Settle a request ended while the provider worked on it at its reservation, and
        record that (``usage.reported``, ``estimated: true`` and ``how`` it ended: ``cancelled:
        true``, or the provider's ``error`` after ``partial`` text) from a task of its own: a
        cancelled caller cannot await."""
        now = self.clock()
        cost_usd = price.cost(est_in, est_out) if price else 0.0
        signals = []
        if ledger is not None and reservation is not None:
            signals = ledger.settle(reservation, Usage(est_in, est_out, cost_usd), now)

        async def record() -> None:
            await self._emit("usage.reported", agent_id, {
                "provider": lane.name, "input_tokens": est_in, "output_tokens": est_out, "cost_usd": cost_usd,
                **how, "estimated": True, "duration_s": round(now - started_at, 6)})
            for s in signals:
                kind = "budget.warning" if s.kind == "warning" else "budget.exceeded"
                await self._emit(kind, agent_id, dict(s.to_data(), message=s.message()))
            if any(s.kind == "stop" for s in signals):
                await self._stop(agent_id)

        task = asyncio.ensure_future(record())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # -- scheduling plumbing -------------------------------------------------------------------
    def _timed(self, lane: _Lane, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t
        lane.overhead.append(dt)
        lane.overhead_total += dt
        return r

    def _submit(self, lane: _Lane, agent_id: str, weight: float, cost: float, deadline: float | None) -> Ticket:
        now = self.clock()
        ticket = self._timed(lane, lambda: lane.sched.submit(agent_id, weight, cost, now, deadline))
        lane.waiters[ticket.id] = asyncio.get_running_loop().create_future()
        return ticket

    async def _wait_turn(self, lane: _Lane, ticket: Ticket) -> None:
        if ticket.state != "waiting":
            raise StateError(f"inference request is {ticket.state}, not waiting", provider=lane.name)
        fut = lane.waiters.get(ticket.id)
        if fut is None or fut.done():
            fut = lane.waiters[ticket.id] = asyncio.get_running_loop().create_future()
        self._pump(lane)
        try:
            outcome = await fut
        finally:
            lane.waiters.pop(ticket.id, None)
        if outcome == "expired":
            raise Timeout(f"inference request waited past its deadline in the {lane.name} queue",
                          provider=lane.name, agent_id=ticket.agent_id)

    def _pump(self, lane: _Lane) -> None:
        """Ask the scheduler what may start now; wake the waiters; set the next timer."""
        now = self.clock()
        d = self._timed(lane, lambda: lane.sched.dispatch(now))
        for t in d.start:
            fut = lane.waiters.get(t.id)
            if fut is None or fut.done():
                lane.sched.cancel(t, now)  # its caller is gone: free the place
                continue
            fut.set_result("start")
        for t in d.expired:
            fut = lane.waiters.get(t.id)
            if fut is not None and not fut.done():
                fut.set_result("expired")
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        if d.wake_at is not None:
            lane.timer = asyncio.get_running_loop().call_later(max(0.0, d.wake_at - now), self._pump, lane)

    def cancel_agent(self, agent_id: str) -> int:
        """The agent died or gave up: cancel its waiting and running requests and drop its
        counters (call it when an agent ends). Returns how many requests were cancelled."""
        tasks = list(self._tasks.get(agent_id, ()))
        for t in tasks:
            t.cancel()
        n = 0
        now = self.clock()
        for lane in self._lanes.values():
            dropped = lane.sched.cancel_agent(agent_id, now)
            n += len(dropped)
            for t in dropped:
                fut = lane.waiters.pop(t.id, None)
                if fut is not None and not fut.done():
                    fut.cancel()
            if dropped:
                try:
                    self._pump(lane)
                except RuntimeError:
                    pass
            lane.sched.forget_agent(agent_id)  # once idle, its counters leave the stats
        return max(n, len(tasks))

    async def _emit(self, kind: str, agent_id: str | None, data: dict[str, Any]) -> None:
        if self._record is not None:
            try:
                await _maybe(self._record(kind, agent_id, data))
            except AgentixError:
                raise
            except Exception:  # the audit sink failing must not eat the answer
                log.exception("recording %s failed", kind)

    async def _stop(self, agent_id: str) -> None:
        """Ask the kernel to stop the agent. An async ``stop_agent`` runs as its own task: it
        may cancel the very system call that is reporting the overshoot."""
        if self._stop_agent is not None:
            r = self._stop_agent(agent_id, "budget_exceeded")
            if r is not None:
                task = asyncio.ensure_future(r)
                self._bg.add(task)
                task.add_done_callback(self._bg.discard)

    # -- observation ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The ``inference.stats`` snapshot: per provider queue, shares, waits, tokens/s."""
        now = self.clock()
        out: dict[str, Any] = {"providers": {}}
        for name, lane in self._lanes.items():
            st = lane.sched.statistics(now)
            window = [(t, n) for t, n in lane.done if now - t <= 60.0]
            span = (now - window[0][0]) if len(window) > 1 else 0.0
            ov = sorted(lane.overhead)
            out["providers"][name] = {
                **dataclasses.asdict(st),
                "tokens_per_s": (sum(n for _, n in window[1:]) / span) if span > 0 else 0.0,
                "output_tokens": lane.output_tokens,
                "retries": lane.retries,
                "failures": lane.failures,
                "overhead_us_p50": ov[len(ov) // 2] * 1e6 if ov else 0.0,
                "overhead_us_p99": ov[min(len(ov) - 1, int(len(ov) * 0.99))] * 1e6 if ov else 0.0,
                "overhead_us_per_request": lane.overhead_total * 1e6 / max(1, st.served + st.expired + st.cancelled),
                "scripted": lane.provider.scripted,
            }
        return out

    def scheduler(self, provider: str) -> Scheduler:
        return self._lanes[provider].sched

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
            await lane.provider.aclose()


class _Lazy(Provider):
    """Builds the real provider on first use (so a local engine loads only if used)."""

    def __init__(self, cfg: ProviderConfig, model_dir: Path | None) -> None:
        self.name = cfg.name
        self.scripted = cfg.kind == "scripted"
        self._cfg = cfg
        self._dir = model_dir
        self._p: Provider | None = None

    async def _complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        if self._p is None:
            self._p = build_provider(self._cfg, self._dir)
        return await self._p.complete(req, on_delta)

    async def aclose(self) -> None:
        if self._p is not None:
            await self._p.aclose()
