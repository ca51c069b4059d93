"""``client.usage()``: calls, tokens, cost, latency and errors, aggregated from every attempt."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

import orchlab
from orchlab.calls import CallContext, CallRecord
from orchlab.errors import InvalidRequestError
from orchlab.orchestrator import Orchestrator
from orchlab.types import Attempt, Message, Usage
from orchlab.usage import UsageTracker
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> Orchestrator:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-usage")
    return client_for(
        f"""
        project: usage
        tracking: {{enabled: false}}
        providers:
          # the SDK's own retries absorb the loopback server dropping a connection under load
          openai: {{api_base: "{openai_server.base_url}", max_retries: 2}}
          box: {{type: vllm, api_base: "{openai_server.base_url}"}}
        models:
          "openai:house-model": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
        roles:
          llm.a: {{provider: openai, model: house-model, params: {{max_tokens: 10}}}}
          llm.b: {{provider: box, model: llama-3.1-8b}}
          llm.c: {{provider: openai, model: mystery-model}}
        """
    )


def reply(prompt: int, completion: int, model: str = "house-model") -> Reply:
    return Reply(body=completion_body("ok", model=model, prompt_tokens=prompt, completion_tokens=completion))


def test_usage_table_values(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    openai_server.push(reply(10, 5), reply(20, 7))
    client.run("llm.a", HI)
    client.run("llm.a", HI)
    openai_server.push(Reply.error(400, "bad request"))  # not retried by the SDK
    with pytest.raises(orchlab.ProviderError):
        client.run("llm.a", HI)
    openai_server.push(reply(100, 50, "llama-3.1-8b"))
    client.run("llm.b", HI)
    openai_server.push(reply(3, 4, "mystery-model"))
    client.run("llm.c", HI)

    table = client.usage()
    assert list(table.columns) == [
        "role",
        "provider",
        "model",
        "strategy",
        "calls",
        "errors",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "unpriced_calls",
        "mean_latency_s",
        "overrun_usd",
        "cache_hits",
    ]
    rows = {r.role: r for r in table.itertuples()}
    a, b, c = rows["llm.a"], rows["llm.b"], rows["llm.c"]
    assert (a.provider, a.model, a.strategy) == ("openai", "house-model", "single")
    assert (a.calls, a.errors, a.input_tokens, a.output_tokens) == (3, 1, 30, 12)
    assert a.cost_usd == pytest.approx(42 * 0.001)  # $0.001 a token
    assert a.unpriced_calls == 0 and a.mean_latency_s > 0
    assert (b.calls, b.input_tokens, b.output_tokens, b.cost_usd) == (1, 100, 50, 0.0)  # local: free
    assert (c.calls, c.unpriced_calls) == (1, 1)
    assert math.isnan(c.cost_usd)  # unknown, not $0

    by_provider = client.usage(by="provider").set_index("provider")
    assert list(by_provider.index) == ["box", "openai"]
    assert by_provider.loc["openai", "calls"] == 4
    assert by_provider.loc["openai", "cost_usd"] == pytest.approx(0.042)  # the priced part...
    assert by_provider.loc["openai", "unpriced_calls"] == 1  # ...and how many calls it leaves out

    total = client.usage(by=[])
    assert len(total) == 1 and total.loc[0, "calls"] == 5 and total.loc[0, "input_tokens"] == 133
    with pytest.raises(InvalidRequestError, match="by="):
        client.usage(by="colour")


async def test_usage_counts_every_concurrent_call(client: Orchestrator) -> None:
    await asyncio.gather(*[client.arun("llm.a", HI) for _ in range(20)])
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda _: client.run("llm.a", HI), range(20)))
    row = client.usage(by="role").iloc[0]
    # the default echo reply: 1 prompt word, "echo: hi" = 2 completion words per call
    assert (row["calls"], row["input_tokens"], row["output_tokens"]) == (40, 40, 80)
    assert row["cost_usd"] == pytest.approx(40 * 3 * 0.001)


def test_refused_calls_are_counted_as_errors(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    client.budgets.set(session_usd=0.001)
    with pytest.raises(orchlab.BudgetExceededError):
        client.run("llm.a", HI)
    row = client.usage().iloc[0]
    assert (row["calls"], row["errors"], row["input_tokens"], row["cost_usd"]) == (1, 1, 0, 0.0)
    assert openai_server.requests == []


def test_every_attempt_of_a_strategy_is_counted() -> None:
    """Losers and failures of a multi-attempt call count, each under its own provider and model."""
    tracker = UsageTracker()
    ctx = CallContext(role="llm.x", strategy="parallel", messages=(Message("user", "hi"),))
    ctx.attempts += [
        Attempt("openai", "gpt-4.1-mini", "ok", 0.4, Usage(100, 20), cost_usd=0.000072),
        Attempt("local", "gemma-3-270m", "cancelled", 0.2, Usage(), cost_usd=None),
        Attempt("anthropic", "claude-3-5-haiku", "error", 0.1, Usage(), error="HTTP 529"),
        Attempt("anthropic", "claude-3-5-haiku", "rejected", 0.3, Usage(90, 30), cost_usd=0.000192),
    ]
    tracker.call_finished(CallRecord(ctx, None, None, 0.0))
    frame = tracker.frame(by=["provider", "strategy"])
    assert isinstance(frame, pd.DataFrame)
    rows = {r.provider: r for r in frame.itertuples()}
    assert (rows["anthropic"].calls, rows["anthropic"].errors, rows["anthropic"].input_tokens) == (2, 1, 90)
    assert rows["anthropic"].cost_usd == pytest.approx(0.000192)
    assert rows["anthropic"].mean_latency_s == pytest.approx(0.2)
    assert (rows["local"].calls, rows["local"].errors, rows["local"].unpriced_calls) == (1, 0, 0)
    assert rows["openai"].strategy == "parallel"
    tracker.reset()
    assert tracker.frame().empty
