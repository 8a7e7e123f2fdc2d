"""Metrics (Prometheus) and traces (OpenTelemetry) of the kernel, both optional.

Off by default and free when off: nothing on the call path changes. ``install`` turns either
on by wrapping this kernel's ``pipeline.run`` (an instance attribute over the class's method;
every caller looks ``run`` up when it calls) and setting ``pipeline.observer``:

- **Metrics** (``prometheus_client``, the ``observe`` extra; on with ``--http``, served at
  ``GET /metrics`` to viewer and operator tokens). Counted per call, off the reply path only
  by a counter increment and a histogram observation:

  - ``agentix_calls_total{method, outcome}``  (outcome: ``ok`` or the error code)
  - ``agentix_call_seconds{method}``          latency histogram
  - ``agentix_refusals_total{code, reason}``   refusals (capability, taint, approval, budget, role…)
  - ``agentix_spawn_seconds{method}``         spawn latency (agent.spawn, spawn_child, submit_goal…)

  and read from the kernel's own snapshots when scraped (nothing on the call path):

  - ``agentix_agents{state}``, ``agentix_inference_queue_length{provider}``,
    ``agentix_inference_in_flight{provider}``, ``agentix_inference_tokens_per_second{provider}``,
    ``agentix_inference_agent_tokens{provider, agent}``, ``…_agent_waiting``,
    ``…_agent_mean_wait_seconds``, ``…_agent_p99_wait_seconds``, ``agentix_agent_cost_usd{agent}``,
    ``agentix_audit_entries`` (its ``rate()`` is the append rate) and ``agentix_audit_lag_entries``
    (appended, not yet committed).

- **Traces** (``opentelemetry-sdk``; ``AGENTIX_TRACES=otlp`` exports with the OTLP/HTTP exporter
  of the ``otlp`` extra, configured by the usual ``OTEL_EXPORTER_OTLP_*`` variables): one span
  per system call or operator method (``agentix.call``), and one per inference request
  (``agentix.inference``, a child of its ``think`` call). An agent's connection is served by a
  task created while its spawn call's span is current, so every call an agent makes is a child
  of the call that spawned it: a goal run — ``agent.submit_goal``, the orchestrator's calls, its
  ``agent.spawn_child`` calls and the children's calls — is one trace.

The tracer provider and the metrics registry belong to this kernel (no global registry). What the
scrape reads is named by ``MetricSources`` (the process table, the inference service, the audit
log); ``install`` takes it with the pipeline it wraps, never the whole kernel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agentix.core.errors import AgentixError
from agentix.kernel.audit_log import KernelAudit
from agentix.kernel.dispatch import Caller, Pipeline
from agentix.kernel.inference import InferenceService
from agentix.kernel.process import ProcessTable
from agentix.kernel.record_gate import RecordGate
from agentix.rpc.framing import Encoded

__all__ = ["MetricSources", "Metrics", "Telemetry", "install", "REFUSALS", "SPAWNS"]

log = logging.getLogger(__name__)

#: error codes that are the kernel saying no (as opposed to a tool or provider failing)
REFUSALS = frozenset({
    "capability_denied", "capability_expired", "capability_exhausted", "capability_revoked",
    "handoff_escalation_denied", "taint_violation", "approval_denied", "budget_exceeded",
    "limit_exceeded", "isolation_unavailable", "package_rejected",
})
#: methods that start agents (their latency is also the spawn latency)
SPAWNS = frozenset({"agent.spawn", "agent.spawn_child", "agent.submit_goal", "package.run",
                    "snapshot.restore", "snapshot.fork"})
INFERENCE = frozenset({"think"})
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricSources:
    """What the metrics read when scraped: the kernel's own snapshots."""

    table: ProcessTable
    inference: InferenceService
    audit: KernelAudit | None  # None: a kernel with a test event sink
    #: the audit quota's gate (kernel/record_gate.py): how many records it held back
    record_gate: RecordGate | None = None


class Metrics:
    """The kernel's Prometheus metrics, in a registry of its own."""

    def __init__(self, sources: MetricSources) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.sources = sources
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("agentix_calls", "system calls and operator methods by outcome",
                             ["method", "outcome"], registry=self.registry)
        self.latency = Histogram("agentix_call_seconds", "call latency in the kernel (decision, handler, record)",
                                 ["method"], buckets=_BUCKETS, registry=self.registry)
        self.refusals = Counter("agentix_refusals", "calls the kernel refused, by error code and reason",
                                ["code", "reason"], registry=self.registry)
        self.spawn = Histogram("agentix_spawn_seconds", "time to start an agent (the spawning call)",
                               ["method"], buckets=_BUCKETS, registry=self.registry)
        self.registry.register(_Snapshots(sources))
        # labelled children, looked up once (``labels()`` is most of the cost of a count)
        self._calls: dict[tuple[str, str], Any] = {}
        self._latency: dict[str, Any] = {}

    def observe(self, method: str, outcome: str, seconds: float, err: AgentixError | None,
                timed: bool = True) -> None:
        key = (method, outcome)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(method, outcome)
        child.inc()
        if timed:
            hist = self._latency.get(method)
            if hist is None:
                hist = self._latency[method] = self.latency.labels(method)
            hist.observe(seconds)
        if err is not None and err.code in REFUSALS:
            reason = err.data.get("reason")
            self.refusals.labels(err.code, reason[:40] if isinstance(reason, str) else "").inc()
        if method in SPAWNS and err is None:
            self.spawn.labels(method).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Snapshots:
    """Gauges read from the kernel's statistics when Prometheus scrapes (not on the call path)."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        src = self.sources
        states = GaugeMetricFamily("agentix_agents", "agents by state", labels=["state"])
        counts: dict[str, int] = {}
        names: dict[str, str] = {}
        cost = GaugeMetricFamily("agentix_agent_cost_usd", "inference cost spent per live agent", labels=["agent"])
        now = time.monotonic()
        for rec in src.table:
            counts[rec.state] = counts.get(rec.state, 0) + 1
            names[rec.agent_id] = rec.name
            if rec.live and rec.budget is not None:
                used = rec.budget.snapshot(now)["used"]
                cost.add_metric([rec.name], float(used.get("cost_usd") or 0.0))
        for state in ("spawning", "running", "paused", "stopping", "exited"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        yield cost
        # the inference scheduler's statistics
        stats = src.inference.stats()["providers"]
        q = GaugeMetricFamily("agentix_inference_queue_length", "requests waiting", labels=["provider"])
        fl = GaugeMetricFamily("agentix_inference_in_flight", "requests running", labels=["provider"])
        tps = GaugeMetricFamily("agentix_inference_tokens_per_second", "output tokens/s over the last minute",
                                labels=["provider"])
        tok = GaugeMetricFamily("agentix_inference_agent_tokens", "tokens served per live agent",
                                labels=["provider", "agent"])
        wait = GaugeMetricFamily("agentix_inference_agent_waiting", "requests waiting per agent",
                                 labels=["provider", "agent"])
        mean = GaugeMetricFamily("agentix_inference_agent_mean_wait_seconds", "mean queue wait per agent",
                                 labels=["provider", "agent"])
        p99 = GaugeMetricFamily("agentix_inference_agent_p99_wait_seconds", "p99 queue wait per agent",
                                labels=["provider", "agent"])
        for name, p in stats.items():
            q.add_metric([name], p["queue_length"])
            fl.add_metric([name], p["in_flight"])
            tps.add_metric([name], p["tokens_per_s"])
            for a in p["agents"]:
                who = names.get(a["agent_id"], a["agent_id"])
                tok.add_metric([name, who], a["tokens"])
                wait.add_metric([name, who], a["waiting"])
                mean.add_metric([name, who], a["mean_wait"])
                p99.add_metric([name, who], a["p99_wait"])
        yield from (q, fl, tps, tok, wait, mean, p99)
        audit = src.audit
        if audit is not None:
            alog = audit.log
            size = alog.size()
            entries = GaugeMetricFamily("agentix_audit_entries", "entries appended to the audit log")
            entries.add_metric([], size)
            yield entries
            lag = GaugeMetricFamily("agentix_audit_lag_entries", "entries appended but not yet committed")
            lag.add_metric([], max(0, alog.appended_size - alog.committed_size))
            yield lag
        gate = src.record_gate  # kernel/record_gate.py: records of no-change calls
        if gate is not None:
            st = gate.statistics()
            held = GaugeMetricFamily("agentix_audit_records_suppressed",
                                     "records of calls that changed nothing, counted into audit.suppressed "
                                     "instead of written (a caller over its audit quota)")
            held.add_metric([], st["suppressed"])
            yield held


class Telemetry:
    """The pipeline's observer: ``await telemetry(caller, method, params, run)``."""

    def __init__(self, metrics: Metrics | None = None, tracer_provider: Any = None) -> None:
        self.metrics = metrics
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("agentix.kernel") if tracer_provider is not None else None

    def refused(self, method: str, err: AgentixError) -> None:
        """A refusal at an edge before the pipeline (the HTTP API's role check)."""
        if self.metrics is not None:
            self.metrics.observe(method, err.code, 0.0, err, timed=False)

    def _span(self, caller: Caller, method: str, params: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
        if self.tracer is None:
            return contextlib.nullcontext()
        attrs: dict[str, Any] = {"agentix.method": method, "agentix.caller": caller.label()}
        if caller.agent_id:
            attrs["agentix.agent_id"] = caller.agent_id
        tool = params.get("name") if method in ("tool.call", "tool.invoke") else None
        if isinstance(tool, str):
            attrs["agentix.tool"] = tool
        return self.tracer.start_as_current_span(f"agentix.call {method}", attributes=attrs)

    async def __call__(self, caller: Caller, method: str, params: dict[str, Any],
                       run: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        err: AgentixError | None = None
        outcome = "ok"
        with self._span(caller, method, params) as span:
            try:
                if method in INFERENCE and self.tracer is not None:
                    with self.tracer.start_as_current_span("agentix.inference") as inf:
                        result = await run()
                        _inference_attrs(inf, params, _value(result))
                else:
                    result = await run()
                value = _value(result)
                if span is not None and method in SPAWNS and isinstance(value, dict) and value.get("agent_id"):
                    span.set_attribute("agentix.spawned", str(value["agent_id"]))
                return result
            except AgentixError as e:
                err, outcome = e, e.code
                if e.code == "method_not_found":  # a name the caller made up: not a label value
                    method = "(unknown)"
                if span is not None:
                    span.set_attribute("agentix.error", e.code)
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, e.code))
                raise
            except BaseException:
                outcome = "internal_error"
                raise
            finally:
                if self.metrics is not None:
                    self.metrics.observe(method, outcome, time.perf_counter() - t0, err)


def _value(result: Any) -> Any:
    """The result itself, also when the pipeline gave it written for the wire (``Encoded``)."""
    return result.value if isinstance(result, Encoded) else result


def _inference_attrs(span: Any, params: dict[str, Any], result: Any) -> None:
    if isinstance(params.get("model"), str):
        span.set_attribute("gen_ai.request.model", params["model"])
    if not isinstance(result, dict):
        return
    for key, attr in (("provider", "gen_ai.system"), ("model", "gen_ai.response.model")):
        if isinstance(result.get(key), str):
            span.set_attribute(attr, result[key])
    usage = result.get("usage")
    if isinstance(usage, dict):
        for key, attr in (("input_tokens", "gen_ai.usage.input_tokens"),
                          ("output_tokens", "gen_ai.usage.output_tokens")):
            if isinstance(usage.get(key), int):
                span.set_attribute(attr, usage[key])


def tracer_provider_from_env(exporter: Any = None) -> Any:
    """A tracer provider exporting to ``exporter``, else per ``AGENTIX_TRACES`` (``otlp``), else None."""
    mode = os.environ.get("AGENTIX_TRACES", "").strip().lower()
    if exporter is None and mode in ("", "0", "off", "none"):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("AGENTIX_TRACES=%s but opentelemetry-sdk is not installed: pip install 'agentix[observe]'", mode)
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "agentixd"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider
    if mode != "otlp":
        log.warning("AGENTIX_TRACES=%s is not known (use otlp); traces are off", mode)
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("AGENTIX_TRACES=otlp needs the OTLP exporter: pip install 'agentix[otlp]'")
        return None
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def install(pipeline: Pipeline, *, metrics: MetricSources | None = None,
            span_exporter: Any = None) -> Telemetry | None:
    """Turn on what is asked (and installed): metrics read from ``metrics`` when given, traces
    per ``span_exporter`` or ``AGENTIX_TRACES``; None (and the pipeline untouched) if nothing is."""
    m: Metrics | None = None
    if metrics is not None:
        try:
            m = Metrics(metrics)
        except ImportError:
            log.warning("metrics are off: prometheus_client is not installed (pip install 'agentix[observe]')")
    provider = tracer_provider_from_env(span_exporter)
    if m is None and provider is None:
        return None
    tel = Telemetry(m, provider)
    inner = pipeline.run

    async def observed(caller: Caller, method: str, params: dict[str, Any], *,
                       taint: set[str] | None = None, encoded: bool = False) -> Any:
        return await tel(caller, method, params, lambda: inner(caller, method, params, taint=taint,
                                                               encoded=encoded))

    pipeline.run = observed  # type: ignore[method-assign]
    pipeline.observer = tel
    return tel


async def shutdown(tel: Telemetry | None) -> None:
    if tel is not None and tel.tracer_provider is not None:
        with contextlib.suppress(Exception):
            tel.tracer_provider.shutdown()
