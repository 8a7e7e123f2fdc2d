"""The inference driver end to end: real HTTP to a loopback fake provider, real budgets."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentix.core.budget import BudgetLedger, BudgetLimits
from agentix.core.errors import BudgetExceeded, InvalidRequest, ProviderError, Timeout
from agentix.kernel.inference import InferenceService
from agentix.llm.inference_config import load_config
from conftest import until
from tests.fakes.openai_server import FakeOpenAIServer, Scripted

MSG = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


def service(tmp_path, server, toml="", events=None, stopped=None, **kw):
    (tmp_path / "config.toml").write_text(toml)
    cfg = load_config(tmp_path, {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url,
                                 "AGENTIX_MODEL": "openai:fake-1"}, local_installed=False)

    def record(kind, agent, data):
        if events is not None:
            events.append((kind, agent, data))

    def stop(agent, reason):
        if stopped is not None:
            stopped.append((agent, reason))

    return InferenceService(cfg, record=record, stop_agent=stop, **kw)


def test_think_returns_text_usage_and_records_usage(tmp_path, openai_server):
    events = []
    openai_server.push(Scripted(text="hi there", input_tokens=7, output_tokens=2))

    async def go():
        svc = service(tmp_path, openai_server, events=events)
        chunks = []
        try:
            r = await svc.think("agent-1", 1.0, dict(MSG, stream=True), BudgetLedger(BudgetLimits(), 0.0),
                                on_delta=chunks.append)
            return r, chunks, svc.stats()
        finally:
            await svc.aclose()

    r, chunks, stats = asyncio.run(go())
    assert r.text == "hi there" and "".join(chunks) == "hi there"
    assert r.to_data()["usage"] == {"input_tokens": 7, "output_tokens": 2}
    assert openai_server.stats.bodies[0]["model"] == "fake-1"
    kinds = [e[0] for e in events]
    assert kinds == ["usage.reported"] and events[0][2]["input_tokens"] == 7
    p = stats["providers"]["openai"]
    assert p["served"] == 1 and p["agents"][0]["agent_id"] == "agent-1"


def test_call_over_budget_never_reaches_the_provider(tmp_path, openai_server):
    """Scenario 38: call N+1 against a limit never reaches the backend."""
    events, stopped = [], []
    ledger = BudgetLedger(BudgetLimits(max_output_tokens=25, warn_at=0.5), 0.0)
    openai_server.push(*[Scripted(text="a b c d e f g h i j", output_tokens=10) for _ in range(3)])

    async def go():
        svc = service(tmp_path, openai_server, events=events, stopped=stopped)
        try:
            await svc.think("a", 1.0, MSG, ledger)
            await svc.think("a", 1.0, MSG, ledger)
            with pytest.raises(BudgetExceeded) as ei:
                await svc.think("a", 1.0, MSG, ledger)
            return ei.value
        finally:
            await svc.aclose()

    err = asyncio.run(go())
    assert "would exceed max_output_tokens of 25: output_tokens=30" in err.message
    assert openai_server.stats.requests == 2  # the third never left the kernel
    assert ledger.used.output_tokens == 20 and ledger.reserved.output_tokens == 0
    assert [e[0] for e in events] == ["usage.reported", "usage.reported", "budget.warning"]
    assert stopped == []


def test_overshoot_stops_the_agent(tmp_path, openai_server):
    events, stopped = [], []
    ledger = BudgetLedger(BudgetLimits(max_input_tokens=30), 0.0)
    openai_server.push(Scripted(text="x", input_tokens=45, output_tokens=1))  # far more than estimated

    async def go():
        svc = service(tmp_path, openai_server, events=events, stopped=stopped)
        try:
            return await svc.think("a", 1.0, MSG, ledger)
        finally:
            await svc.aclose()

    asyncio.run(go())
    assert stopped == [("a", "budget_exceeded")]
    ex = [e for e in events if e[0] == "budget.exceeded"]
    assert ex and ex[0][2]["limit"] == "max_input_tokens" and ex[0][2]["used"] == 45


def test_429_then_success_with_retry_after(tmp_path, openai_server):
    openai_server.push(Scripted(status=429, retry_after=0.2), Scripted(status=503), Scripted(text="ok"))

    async def go():
        svc = service(tmp_path, openai_server, "[inference]\nbackoff_base = 0.01\n")
        try:
            t = time.monotonic()
            r = await svc.think("a", 1.0, MSG)
            return r, time.monotonic() - t, svc.stats()["providers"]["openai"]
        finally:
            await svc.aclose()

    r, took, st = asyncio.run(go())
    assert r.text == "ok" and openai_server.stats.requests == 3
    assert took >= 0.2  # honoured retry-after
    assert st["retries"] == 2 and st["limiter"]["throttled"] == 1


def test_retry_budget_is_bounded(tmp_path, openai_server):
    openai_server.push(*[Scripted(status=500) for _ in range(10)])

    async def go():
        svc = service(tmp_path, openai_server, "[inference]\nretry_budget = 2\nbackoff_base = 0.01\n")
        try:
            await svc.think("a", 1.0, MSG)
        finally:
            await svc.aclose()

    with pytest.raises(ProviderError):
        asyncio.run(go())
    assert openai_server.stats.requests == 3


def test_concurrency_cap_holds_against_a_real_server(tmp_path):
    with FakeOpenAIServer(latency=0.05, concurrency=None) as srv:
        async def go():
            svc = service(tmp_path, srv, "[providers.openai]\nconcurrency = 3\n")
            try:
                await asyncio.gather(*[svc.think(f"a{i % 4}", 1.0, MSG) for i in range(20)])
            finally:
                await svc.aclose()

        asyncio.run(go())
        assert srv.stats.completed == 20 and srv.stats.max_concurrent == 3


def test_caller_that_gives_up_frees_its_place(tmp_path):
    with FakeOpenAIServer(latency=0.3) as srv:
        async def go():
            svc = service(tmp_path, srv, "[providers.openai]\nconcurrency = 1\n")
            try:
                st = lambda: svc.stats()["providers"]["openai"]  # noqa: E731
                first = asyncio.create_task(svc.think("a", 1.0, MSG))
                await until(lambda: st()["in_flight"] == 1)
                waiting = asyncio.create_task(svc.think("b", 1.0, MSG))
                await until(lambda: st()["queue_length"] == 1)
                waiting.cancel()  # b gave up
                await until(lambda: st()["queue_length"] == 0)
                n = svc.cancel_agent("a")  # a died while running: its slot is freed
                assert n >= 1
                with pytest.raises(asyncio.CancelledError):
                    await first
                r = await asyncio.wait_for(svc.think("c", 1.0, MSG), 2.0)
                return r, svc.stats()["providers"]["openai"]
            finally:
                await svc.aclose()

        r, st = asyncio.run(go())
        assert r.text and st["in_flight"] == 0 and st["cancelled"] >= 2


def test_deadline_in_queue_is_a_timeout(tmp_path):
    with FakeOpenAIServer(latency=0.5) as srv:
        async def go():
            svc = service(tmp_path, srv, "[providers.openai]\nconcurrency = 1\n")
            try:
                busy = asyncio.create_task(svc.think("a", 1.0, MSG))
                await until(lambda: svc.stats()["providers"]["openai"]["in_flight"] == 1)
                with pytest.raises(Timeout):
                    await svc.think("b", 1.0, MSG, deadline=0.1)
                await busy
            finally:
                await svc.aclose()

        asyncio.run(go())
        assert srv.stats.requests == 1


def test_cost_budget_needs_a_price(tmp_path, openai_server):
    async def go():
        svc = service(tmp_path, openai_server)
        try:
            await svc.think("a", 1.0, MSG, BudgetLedger(BudgetLimits(max_cost_usd=1.0), 0.0))
        finally:
            await svc.aclose()

    with pytest.raises(InvalidRequest, match="has no price"):
        asyncio.run(go())
    assert openai_server.stats.requests == 0


def test_cost_is_charged_from_the_price_table(tmp_path, openai_server):
    openai_server.push(Scripted(text="x", input_tokens=1_000_000, output_tokens=10))
    ledger = BudgetLedger(BudgetLimits(max_cost_usd=100.0), 0.0)

    async def go():
        svc = service(tmp_path, openai_server,
                      '[prices."openai:fake-1"]\ninput_per_mtok = 2.0\noutput_per_mtok = 1000.0\n')
        try:
            await svc.think("a", 1.0, MSG, ledger)
        finally:
            await svc.aclose()

    asyncio.run(go())
    assert ledger.used.cost_usd == pytest.approx(2.0 + 0.01)


def test_async_stop_agent_runs_as_its_own_task(tmp_path, openai_server):
    stopped = []
    ledger = BudgetLedger(BudgetLimits(max_output_tokens=12), 0.0)
    openai_server.push(Scripted(text="x", input_tokens=3, output_tokens=40))  # ignores max_tokens

    async def go():
        (tmp_path / "config.toml").write_text("")
        cfg = load_config(tmp_path, {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": openai_server.base_url,
                                     "AGENTIX_MODEL": "openai:m"}, local_installed=False)

        async def stop(agent, reason):
            stopped.append((agent, reason))

        svc = InferenceService(cfg, stop_agent=stop)
        try:
            r = await svc.think("a", 1.0, dict(MSG, max_tokens=12), ledger)  # the answer is still delivered
            await until(lambda: stopped)  # the stop runs as its own task
            with pytest.raises(BudgetExceeded):
                await svc.think("a", 1.0, dict(MSG, max_tokens=1), ledger)
            return r
        finally:
            await svc.aclose()

    r = asyncio.run(go())
    assert r.usage.output_tokens == 40 and stopped[0] == ("a", "budget_exceeded")
    assert openai_server.stats.requests == 1
