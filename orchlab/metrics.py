"""Prometheus metrics of every call, in orchlab's own registry (prometheus-client).

Off until asked: `serve` (an HTTP endpoint for a notebook or an app), `enable` (then expose
`exposition()` yourself), the gateway's ``GET /metrics``, or ``ORCH_METRICS=1`` when a client is
built. Each client has a `MetricsObserver` (a call observer: nothing on the call path is patched);
while metrics are off it returns at once.

Series (every label from a set the config bounds; a name the config does not know is ``other``;
never a user, a key, a prompt or a URL)::

    orchlab_requests_total{role,logic,provider,model,status}        calls by status class
    orchlab_request_latency_seconds{role,logic,provider,model}      histogram, whole call
    orchlab_time_to_first_token_seconds{role,logic}                 histogram, streamed calls
    orchlab_overhead_seconds{role,logic}                            histogram, call minus its attempts
    orchlab_tokens_total{role,provider,model,direction}             input / output, every attempt
    orchlab_cost_usd_total{role,provider,model}                     every attempt (losers included)
    orchlab_errors_total{role,provider,model,error}                 failed attempts by error class
    orchlab_failovers_total{role,logic}                             a failed attempt another followed
    orchlab_cache_total{role,result}                                hit / miss
    orchlab_budget_remaining_usd{scope}                             session, or a role with a budget

``status``: ok, 4xx, 5xx, timeout, cancelled, error. ``error``: a class of `orchlab.errors`
(else other). Several gateway workers: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before
they start; each writes its own files and ``/metrics`` adds them up.

For example:

    import orchlab.metrics
    orchlab.metrics.serve(9464)        # http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from orchlab.budgets import Budgets
    from orchlab.calls import CallRecord
    from orchlab.config.schema import OrchestratorConfig

ENV = "ORCH_METRICS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_BUILT_IN_LOGICS = frozenset(
    {"single", "delegate", "fallback", "race", "parallel", "cascade", "ensemble", "auto", "select"}
    | {"local", "cloud", "local_first", "cloud_first"}
)

_lock = threading.Lock()
_metrics: _Metrics | None = None


class _Metrics:
    """The metric objects, built once (importing prometheus-client) when metrics are enabled."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            from orchlab.errors import MissingDependencyError

            raise MissingDependencyError(
                "orchlab metrics need prometheus-client: pip install 'orchlab[metrics]'",
                provider="metrics",
                kind="metrics",
                module="prometheus_client",
                extra="metrics",
            ) from exc

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        call = ["role", "logic", "provider", "model"]
        self.requests = Counter("orchlab_requests", "Calls, by status class", [*call, "status"], registry=r)
        self.latency = Histogram(
            "orchlab_request_latency_seconds", "Whole-call latency", call, buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "orchlab_time_to_first_token_seconds",
            "Streamed calls: time to the first text delta",
            ["role", "logic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "orchlab_overhead_seconds",
            "Time a call spent outside its provider attempts",
            ["role", "logic"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        target = ["role", "provider", "model"]
        self.tokens = Counter("orchlab_tokens", "Tokens of every attempt", [*target, "direction"], registry=r)
        self.cost = Counter("orchlab_cost_usd", "Cost of every attempt (USD)", target, registry=r)
        self.errors = Counter(
            "orchlab_errors", "Failed attempts by error class", [*target, "error"], registry=r
        )
        self.failovers = Counter(
            "orchlab_failovers", "Failed attempts another attempt followed", ["role", "logic"], registry=r
        )
        self.cache = Counter("orchlab_cache", "Response cache lookups", ["role", "result"], registry=r)
        self.budget = Gauge(
            "orchlab_budget_remaining_usd",
            "What is left of a budget (USD)",
            ["scope"],
            registry=r,
            multiprocess_mode="mostrecent",
        )


def enable() -> CollectorRegistry:
    """Record metrics from now on (every client, built before or after); the registry."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics.registry


def enabled() -> bool:
    return _metrics is not None


def enable_from_env() -> None:
    """`enable` when ``ORCH_METRICS`` is 1 / true / on (building a client calls this)."""
    if os.environ.get(ENV, "").strip().lower() in ("1", "true", "on", "yes"):
        enable()


def registry() -> CollectorRegistry:
    """The registry to expose: orchlab's, or with ``PROMETHEUS_MULTIPROC_DIR`` set, one that adds
    up every worker's files."""
    own = enable()
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import CollectorRegistry, multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return own


def exposition() -> tuple[bytes, str]:
    """The text format of every series, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry()), CONTENT_TYPE_LATEST


def serve(port: int = 9464, addr: str = "127.0.0.1") -> Any:
    """Enable metrics and serve them at ``http://addr:port/metrics`` from a daemon thread; the
    server (``.shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry())
    return server


class MetricsObserver:
    """Turns each finished call into metrics, with labels bounded by ``config``."""

    def __init__(self, config: OrchestratorConfig, budgets: Budgets | None = None) -> None:
        self._roles = frozenset(config.roles)
        self._providers = frozenset(config.providers)
        self._targets = frozenset(_targets(config))
        self._logics = _BUILT_IN_LOGICS | {str(r.strategy) for r in config.roles.values() if r.strategy}
        self._budgets = budgets
        self._budget_roles = frozenset(config.budgets.per_role_usd) | {
            name for name, r in config.roles.items() if r.budget_usd is not None
        }

    def call_finished(self, record: CallRecord) -> None:
        m = _metrics
        if m is None:
            return
        ctx = record.context
        role = self.role(ctx.role)
        logic = ctx.strategy if ctx.strategy in self._logics else OTHER
        response, error = record.response, record.error
        if response is not None:
            provider, model = self.target(response.provider, response.model)
            status = "ok"
        else:
            last = ctx.attempts[-1] if ctx.attempts else None
            provider, model = self.target(last.provider, last.model) if last else (OTHER, OTHER)
            status = status_class(error)
        m.requests.labels(role, logic, provider, model, status).inc()
        m.latency.labels(role, logic, provider, model).observe(record.latency_s)
        if ctx.first_token_s is not None:
            m.ttft.labels(role, logic).observe(ctx.first_token_s)
        spans = [(a.started_at, a.started_at + a.latency_s) for a in ctx.attempts if a.started_at]
        if spans:
            busy = max(end for _, end in spans) - min(start for start, _ in spans)
            m.overhead.labels(role, logic).observe(max(record.latency_s - busy, 0.0))
        for i, a in enumerate(ctx.attempts):
            p, mdl = self.target(a.provider, a.model)
            if a.usage.input_tokens:
                m.tokens.labels(role, p, mdl, "input").inc(a.usage.input_tokens)
            if a.usage.output_tokens:
                m.tokens.labels(role, p, mdl, "output").inc(a.usage.output_tokens)
            if a.cost_usd:
                m.cost.labels(role, p, mdl).inc(a.cost_usd)
            if a.cache is not None:
                m.cache.labels(role, a.cache).inc()
            if a.outcome == "error":
                m.errors.labels(role, p, mdl, error_class(a.error_type)).inc()
                if i < len(ctx.attempts) - 1:
                    m.failovers.labels(role, logic).inc()
        if self._budgets is not None:
            self._budget_gauges(m, ctx.role)

    def _budget_gauges(self, m: _Metrics, role: str | None) -> None:
        assert self._budgets is not None
        left = self._budgets.remaining_usd()
        if left is not None:
            m.budget.labels("session").set(left)
        if role in self._budget_roles:
            left = self._budgets.remaining_usd(role)
            if left is not None:
                m.budget.labels(f"role {role}").set(left)

    def role(self, name: str | None) -> str:
        if name is None:
            return "none"
        return name if name in self._roles else OTHER

    def target(self, provider: str, model: str) -> tuple[str, str]:
        if provider not in self._providers:
            return OTHER, OTHER
        return provider, model if (provider, model) in self._targets else OTHER


def status_class(error: BaseException | None) -> str:
    """ok, 4xx, 5xx, timeout, cancelled or error: never the message."""
    if error is None:
        return "ok"
    if not isinstance(error, Exception):
        return "cancelled"
    from orchlab.errors import ProviderTimeoutError

    if isinstance(error, ProviderTimeoutError | TimeoutError):
        return "timeout"
    code = getattr(error, "status_code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return f"{code // 100}xx"
    return "error"


def error_class(name: str | None) -> str:
    """An `orchlab.errors` class name as it is; any other name is ``other``."""
    import orchlab.errors as errors

    if name and isinstance(getattr(errors, name, None), type):
        return name
    return OTHER


def _targets(config: OrchestratorConfig) -> Iterable[tuple[str, str]]:
    """Every ``(provider, model)`` the config names: roles, their candidates and fallbacks, models:."""
    for target in config.models:
        yield _split(str(target))
    for role in config.roles.values():
        if role.provider and role.model:
            yield role.provider, role.model
        for t in [*role.fallbacks, *role.candidates]:
            text = t if isinstance(t, str) else getattr(t, "target", None)
            if isinstance(text, str) and ":" in text:
                yield _split(text)


def _split(target: str) -> tuple[str, str]:
    provider, _, model = target.partition(":")
    return provider, model
