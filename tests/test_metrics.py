"""Prometheus metrics (`orchlab.metrics`): what a call records, labels bounded by the config,
the gateway's ``GET /metrics`` and the ``x-orchlab-cache`` header, several worker processes."""

from __future__ import annotations

import random
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import orchlab.metrics as metrics
from orchlab.calls import CallContext, CallRecord
from orchlab.errors import ProviderError, ProviderUnavailableError
from orchlab.orchestrator import Orchestrator
from orchlab.types import Attempt, LLMResponse, Usage
from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply

Q = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def fresh_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no series (and metrics off until it enables them)."""
    monkeypatch.setattr(metrics, "_metrics", None)
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-metrics-test-0123456789")
    yield


def samples(text: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed by prometheus_client's own parser."""
    if text is None:
        text = metrics.exposition()[0].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def config(base_url: str) -> str:
    return f"""\
        project: t
        providers:
          oa: {{type: openai, api_base: "{base_url}", max_retries: 0}}
        models:
          "oa:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
        budgets: {{session_usd: 1.0}}
        roles:
          r: {{provider: oa, model: m, params: {{temperature: 0, max_tokens: 10}}}}
        """


def test_calls_become_counters_and_histograms(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCH_CACHE")
    metrics.enable()
    client = client_for(config(openai_server.base_url))
    client.run("r", Q)  # 1 in / 2 out tokens, $0.003
    client.run("r", Q)  # a cache hit
    openai_server.push(Reply.error(503, "overloaded"))
    with pytest.raises(ProviderError):
        client.run("r", [{"role": "user", "content": "other"}])
    "".join(client.stream("r", [{"role": "user", "content": "streamed"}]))
    found = samples()
    call = {"role": "r", "logic": "single", "provider": "oa", "model": "m"}
    assert value(found, "orchlab_requests_total", **call, status="ok") == 3
    assert value(found, "orchlab_requests_total", **call, status="5xx") == 1
    assert value(found, "orchlab_request_latency_seconds_count", **call) == 4
    assert value(found, "orchlab_tokens_total", role="r", provider="oa", model="m", direction="input") == 2
    assert value(found, "orchlab_tokens_total", role="r", provider="oa", model="m", direction="output") == 4
    assert value(found, "orchlab_cost_usd_total", role="r", provider="oa", model="m") == pytest.approx(0.006)
    assert value(found, "orchlab_cache_total", role="r", result="hit") == 1
    assert value(found, "orchlab_cache_total", role="r", result="miss") == 2
    error = {"role": "r", "provider": "oa", "model": "m", "error": "ProviderUnavailableError"}
    assert value(found, "orchlab_errors_total", **error) == 1
    assert value(found, "orchlab_time_to_first_token_seconds_count", role="r", logic="single") == 1
    assert value(found, "orchlab_overhead_seconds_count", role="r", logic="single") == 4
    assert value(found, "orchlab_budget_remaining_usd", scope="session") == pytest.approx(1.0 - 0.006)


def test_metrics_are_off_until_asked(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(config(openai_server.base_url))
    client.run("r", Q)
    metrics.enable()
    assert (
        value(
            samples(),
            "orchlab_requests_total",
            role="r",
            logic="single",
            provider="oa",
            model="m",
            status="ok",
        )
        == 0
    )
    client.run("r", Q)  # a client built before metrics were enabled records from then on
    assert (
        value(
            samples(),
            "orchlab_requests_total",
            role="r",
            logic="single",
            provider="oa",
            model="m",
            status="ok",
        )
        == 1
    )


def record(rng: random.Random, observer: metrics.MetricsObserver) -> CallRecord:
    """A call with a random role, provider, model and user, some failed attempts first."""

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=8))

    role = rng.choice(["r", word()])
    provider, model = rng.choice([("oa", "m"), ("oa", word()), (word(), word())])
    ctx = CallContext(role=role, strategy=rng.choice(["single", "fallback", word()]), messages=())
    ctx.tags["orchlab.caller"] = f"user-{word()}"
    now = time.time()
    for _ in range(rng.randrange(3)):
        ctx.attempts.append(
            Attempt(
                provider,
                model,
                "error",
                0.01,
                started_at=now,
                error_type=rng.choice(["RateLimitError", word()]),
            )
        )
    ctx.attempts.append(Attempt(provider, model, "ok", 0.02, Usage(3, 4), cost_usd=0.001, started_at=now))
    response = LLMResponse("x", provider, model, role=role, usage=Usage(3, 4), cost_usd=0.001)
    error = ProviderUnavailableError(
        word(), provider=provider, model=model, status_code=rng.choice([500, 503])
    )
    if rng.random() < 0.3:
        return CallRecord(ctx, None, error, now + 0.05)
    return CallRecord(ctx, response, None, now + 0.05)


def test_series_stay_bounded_with_random_model_names_and_users(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    metrics.enable()
    client = client_for(config(openai_server.base_url))
    observer = next(o for o in client.observers if isinstance(o, metrics.MetricsObserver))
    rng = random.Random(20)
    for _ in range(1_000):
        observer.call_finished(record(rng, observer))
    after_1k = samples()
    for _ in range(9_000):
        observer.call_finished(record(rng, observer))
    after_10k = samples()
    assert set(after_10k) == set(after_1k)  # no new series after the first thousand calls
    assert len(after_10k) < 600
    labels = {v for _, pairs in after_10k for _, v in pairs}
    assert labels <= {
        "r",
        "other",
        "none",
        "oa",
        "m",
        "single",
        "fallback",
        "ok",
        "5xx",
        "input",
        "output",
        "RateLimitError",
        "session",
        *(str(b) for b in (*metrics.LATENCY_BUCKETS, *metrics.OVERHEAD_BUCKETS)),
        "+Inf",
    } | {f"{float(b)}" for b in (*metrics.LATENCY_BUCKETS, *metrics.OVERHEAD_BUCKETS)}
    assert not any(v.startswith("user-") for v in labels)
    total = sum(v for (name, _), v in after_10k.items() if name == "orchlab_requests_total")
    assert total == 10_000


def test_serve_answers_on_its_own_port() -> None:
    from tests.serve_support import free_port

    port = free_port()
    server = metrics.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        assert "# TYPE orchlab_requests_total counter" in text
        assert "orchlab_budget_remaining_usd" in {f.name for f in text_string_to_metric_families(text)}
    finally:
        server.shutdown()


def test_the_gateway_serves_metrics_and_the_cache_header(
    serve, openai_server: OpenAIWireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCH_CACHE")
    served = serve(gateway_yaml(openai_server))
    metrics.enable()
    body = {"model": "llm.inference", "messages": Q, "temperature": 0}
    with httpx.Client(base_url=served.url, timeout=10) as http:
        first = http.post("/v1/chat/completions", json=body)
        again = http.post("/v1/chat/completions", json=body)
        sampled = http.post("/v1/chat/completions", json={**body, "temperature": 0.7})
        forced = [
            http.post(
                "/v1/chat/completions",
                json={**body, "temperature": 0.7},
                headers={"x-orchlab-cache": "force"},
            )
            for _ in range(2)
        ]
        off = http.post("/v1/chat/completions", json=body, headers={"x-orchlab-cache": "off"})
        bad = http.post("/v1/chat/completions", json=body, headers={"x-orchlab-cache": "maybe"})
        scraped = http.get("/metrics")
    assert (first.headers["x-orchlab-cache"], again.headers["x-orchlab-cache"]) == ("miss", "hit")
    assert again.headers["x-orchlab-cost-usd"] == "0.00000000"
    assert (
        again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    )
    assert "x-orchlab-cache" not in sampled.headers and "x-orchlab-cache" not in off.headers
    assert [r.headers["x-orchlab-cache"] for r in forced] == ["miss", "hit"]
    assert bad.status_code == 400 and "x-orchlab-cache" in bad.json()["error"]["message"]
    assert len(openai_server.requests) == 4
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    found = samples(scraped.text)
    call = {"role": "llm.inference", "logic": "single", "provider": "up", "model": "cheap"}
    assert value(found, "orchlab_requests_total", **call, status="ok") == 6
    assert value(found, "orchlab_cache_total", role="llm.inference", result="hit") == 2


WORKER = """
import sys, time
import orchlab.metrics as metrics
from orchlab.config.schema import OrchestratorConfig
from orchlab.calls import CallContext, CallRecord
from orchlab.types import Attempt, LLMResponse, Usage
metrics.enable()
config = OrchestratorConfig(project="t", providers={"oa": {}}, roles={"r": {"provider": "oa", "model": "m"}})
observer = metrics.MetricsObserver(config)
for _ in range(int(sys.argv[1])):
    ctx = CallContext(role="r", strategy="single", messages=())
    ctx.attempts.append(Attempt("oa", "m", "ok", 0.01, Usage(3, 4), cost_usd=0.5, started_at=time.time()))
    observer.call_finished(CallRecord(ctx, LLMResponse("x", "oa", "m", usage=Usage(3, 4)), None, time.time()))
"""


def test_several_worker_processes_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    env = {**__import__("os").environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], env=env) for n in (3, 5)]
    assert [w.wait(60) for w in workers] == [0, 0]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    found = samples()
    call = {"role": "r", "logic": "single", "provider": "oa", "model": "m"}
    assert value(found, "orchlab_requests_total", **call, status="ok") == 8
    assert value(found, "orchlab_cost_usd_total", role="r", provider="oa", model="m") == pytest.approx(4.0)
