"""Fallback chains: LOCAL_FIRST / CLOUD_FIRST / LOCAL_ONLY / CLOUD_ONLY and a role's ``fallbacks:``."""

from __future__ import annotations

import time

import pytest

import orchlab
from orchlab.calls import CallRecord
from orchlab.errors import (
    AllAttemptsFailedError,
    AuthenticationError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitError,
    StrategyError,
)
from orchlab.strategies import Strategy
from orchlab.testing import ManualClock, Step
from tests.servers.openai_wire import OpenAIWireServer, Reply

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  home: {type: test_local, options: {models: {m: {reply: "local answer", latency_s: 0.002}}}}
  cloud:
    type: test
    options:
      models:
        m: {reply: "cloud answer", latency_s: 0.002, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
        small: {reply: "small"}
  backup:
    type: test
    options:
      models:
        m: {reply: "backup answer", latency_s: 0.002, input_price_per_mtok: 3.0, output_price_per_mtok: 4.0}
        small: {reply: "small"}
models:
  "cloud:small": {context_window: 50}
  "backup:small": {context_window: 60}
roles:
  chain:
    provider: cloud
    model: m
    fallbacks: ["backup:m", "home:m"]
  mixed:
    provider: cloud
    model: m
    strategy: local_first
    candidates: ["home:m", "backup:m"]
  strict:
    provider: cloud
    model: m
    fallbacks: ["backup:m"]
    retry: {retries: 0, cooldown_after: 2, cooldown_s: 30}
  windows:
    provider: cloud
    model: small
    params: {max_tokens: 10}
    fallbacks: ["backup:small", "home:m"]
  timed:
    provider: cloud
    model: m
    fallbacks: ["backup:m"]
    retry: {retries: 0, attempt_timeout_s: 0.05}
  cloudless: {provider: home, model: m, strategy: cloud}
"""

Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for):
    c = client_for(CONFIG)
    c.health.clock = ManualClock()
    return c


def trail(r: orchlab.LLMResponse) -> list[tuple[str, str, str]]:
    assert r.decision is not None
    return [(a.stage or "", f"{a.provider}:{a.model}", a.outcome) for a in r.decision.attempts]


def test_local_first_and_cloud_first_order_by_is_local(client) -> None:
    r = client.run("mixed", Q)  # the YAML strategy: local_first
    assert r.content == "local answer" and r.target == "home:m"
    assert trail(r) == [("local_first 1", "home:m", "ok")]
    r = client.complete("What is 2+2?", role="mixed", strategy=Strategy.CLOUD_FIRST)
    assert r.content == "cloud answer" and r.decision.strategy == "cloud_first"
    client.provider("cloud").script("m", Step(error="unavailable"), Step(error="unavailable"))
    r = client.complete("What is 2+2?", role="mixed", strategy="cloud_first")
    # cloud (twice: one retry) -> backup (the other cloud one) before the local one
    assert trail(r) == [
        ("cloud_first 1", "cloud:m", "error"),
        ("cloud_first 1 retry 1", "cloud:m", "error"),
        ("cloud_first 2", "backup:m", "ok"),
    ]


def test_local_only_and_cloud_only_filter(client) -> None:
    r = client.complete("hi", role="mixed", strategy="local")
    assert r.target == "home:m" and len(r.decision.attempts) == 1
    client.provider("cloud").script("m", Step(error="auth"))
    r = client.complete("hi", role="mixed", strategy="cloud")
    assert [a.provider for a in r.decision.attempts] == ["cloud", "backup"]
    with pytest.raises(StrategyError, match="needs a cloud candidate"):
        client.run("cloudless", Q)


def test_role_fallbacks_form_a_chain_with_backoff_and_cost_of_every_attempt(client) -> None:
    client.provider("cloud").script("m", Step(error="unavailable"), Step(error="unavailable"))
    r = client.run("chain", Q)
    assert r.content == "backup answer"
    assert trail(r) == [
        ("fallback 1", "cloud:m", "error"),
        ("fallback 1 retry 1", "cloud:m", "error"),
        ("fallback 2", "backup:m", "ok"),
    ]
    assert client.health.clock.sleeps == [0.5]  # the default backoff, no retry-after given
    assert "cloud:m (ProviderUnavailableError)" in r.decision.rationale
    assert "waited 0.5s (backoff)" in r.decision.rationale
    # failed attempts reported no usage: the cost is the backup's (3 in, 2 out words)
    assert r.cost_usd == pytest.approx((3 * 3.0 + 2 * 4.0) / 1e6)
    assert r.usage.input_tokens == 3 and r.usage.output_tokens == 2
    assert r.decision.winner == "backup:m"


def test_retry_after_is_honoured_then_the_same_candidate_answers(client) -> None:
    client.provider("cloud").script("m", Step(error="rate_limit", retry_after=2.5))
    r = client.run("chain", Q)
    assert r.content == "cloud answer"
    assert trail(r) == [("fallback 1", "cloud:m", "error"), ("fallback 1 retry 1", "cloud:m", "ok")]
    assert client.health.clock.sleeps == [2.5]
    assert "waited 2.5s (retry-after)" in r.decision.rationale
    assert r.decision.attempts[0].error_type == "RateLimitError"


def test_a_retry_after_beyond_the_bound_moves_on_without_waiting(client) -> None:
    client.provider("cloud").script("m", Step(error="rate_limit", retry_after=120))
    r = client.run("chain", Q)
    assert r.content == "backup answer"
    assert client.health.clock.sleeps == []
    assert "asked to retry after 120s (> max_retry_after_s=30): moved on" in r.decision.rationale


@pytest.mark.parametrize("error", ["auth", "bad_request", "not_found", "response"])
def test_non_retryable_errors_fall_through_without_retry(client, error: str) -> None:
    client.provider("cloud").script("m", Step(error=error))
    r = client.run("chain", Q)
    assert r.content == "backup answer"
    assert [a.outcome for a in r.decision.attempts] == ["error", "ok"]
    assert client.health.clock.sleeps == []


def test_bad_arguments_are_raised_at_once_not_tried_elsewhere(client) -> None:
    client.provider("cloud").script("m", InvalidRequestError("bad params"))
    with pytest.raises(InvalidRequestError, match="bad params"):
        client.run("chain", Q)
    assert client.provider("backup").calls == []


def test_context_window_error_skips_candidates_whose_window_is_too_small(client) -> None:
    prompt = " ".join(["word"] * 120)
    r = client.complete(prompt, role="windows")
    assert r.content == "local answer"
    attempts = r.decision.attempts
    assert [(a.provider, a.error_type) for a in attempts] == [("cloud", "ContextWindowError"), ("home", None)]
    assert client.provider("cloud").calls == [] and client.provider("backup").calls == []
    assert "skipped backup:small: window 60 <" in r.decision.rationale


def test_a_provider_side_context_length_error_moves_on(client_for) -> None:
    c = client_for(
        """
        project: t
        tracking: {enabled: false}
        providers:
          a: {type: test, options: {models: {tiny: {reply: "x", context_window: 3}}}}
          b: {type: test, options: {models: {big: {reply: "fits"}}}}
        roles:
          r: {provider: a, model: tiny, fallbacks: ["b:big"]}
        """
    )
    r = c.complete("one two three four five", role="r")
    assert r.content == "fits"
    assert r.decision.attempts[0].error_type == "ContextLengthExceededError"


def test_all_fail_raises_one_exception_group_with_every_attempt(client) -> None:
    client.provider("cloud").script("m", Step(error="unavailable"), Step(error="rate_limit", retry_after=1))
    client.provider("backup").script("m", Step(error="auth"))
    client.provider("home").script("m", Step(error="bad_request"))
    with pytest.raises(AllAttemptsFailedError) as info:
        client.run("chain", Q)
    group = info.value
    assert isinstance(group, ExceptionGroup) and isinstance(group, StrategyError)
    assert [type(e) for e in group.exceptions] == [
        ProviderUnavailableError,
        RateLimitError,
        AuthenticationError,
        orchlab.ProviderError,
    ]
    assert "cloud:m (RateLimitError), backup:m (AuthenticationError), home:m (ProviderError)" in str(group)
    client.health.reset()
    caught: dict[str, int] = {}
    try:
        client.provider("cloud").script("m", Step(error="unavailable"), Step(error="unavailable"))
        client.provider("backup").script("m", Step(error="auth"))
        client.provider("home").script("m", Step(error="auth"))
        client.run("chain", Q)
    except* AuthenticationError as auth:
        caught["auth"] = len(auth.exceptions)
    except* ProviderUnavailableError as down:
        caught["down"] = len(down.exceptions)
    assert caught == {"auth": 2, "down": 2}


def test_a_provider_that_keeps_failing_cools_down_then_comes_back(client) -> None:
    cloud, backup = client.provider("cloud"), client.provider("backup")
    clock = client.health.clock
    cloud.script("m", Step(error="unavailable"), Step(error="unavailable"))
    assert client.run("strict", Q).content == "backup answer"  # 1st retryable failure
    assert client.health.cooling("cloud") is None
    assert client.run("strict", Q).content == "backup answer"  # 2nd: cooldown starts
    assert client.health.cooling("cloud") == pytest.approx(30.0)
    calls_before = len(cloud.calls)
    r = client.run("strict", Q)
    assert r.content == "backup answer" and len(cloud.calls) == calls_before  # not even tried
    assert "skipped (cooling down): cloud:m (30.0s left)" in r.decision.rationale
    clock.advance(31)
    r = client.run("strict", Q)
    assert r.content == "cloud answer" and len(cloud.calls) == calls_before + 1
    assert len(backup.calls) == 3


def test_when_every_candidate_cools_down_they_are_tried_anyway(client) -> None:
    client.health.failure("cloud", "x", after=1, cooldown_s=30)
    client.health.failure("backup", "x", after=1, cooldown_s=30)
    r = client.run("strict", Q)
    assert r.content == "cloud answer"
    assert "every candidate is cooling down: tried them anyway" in r.decision.rationale


def test_attempt_timeout_cuts_a_slow_candidate_and_moves_on(client) -> None:
    client.provider("cloud").script("m", Step(content="too late", latency_s=5))
    started = time.perf_counter()
    r = client.run("timed", Q)
    assert time.perf_counter() - started < 2
    assert r.content == "backup answer"
    first = r.decision.attempts[0]
    assert first.outcome == "error" and first.error_type == "ProviderTimeoutError"
    assert "attempt_timeout_s" in (first.note or "")
    assert client.provider("cloud").calls[0].outcome == "cancelled"


async def test_async_twins(client) -> None:
    client.provider("cloud").script("m", Step(error="unavailable"), Step(error="unavailable"))
    r = await client.arun("chain", Q)
    assert r.content == "backup answer" and len(r.decision.attempts) == 3
    r = await client.acomplete("What is 2+2?", role="mixed", strategy="cloud_first")
    assert r.content == "cloud answer"


def test_observers_see_one_record_with_every_attempt(client) -> None:
    seen: list[CallRecord] = []

    class Spy:
        def call_finished(self, record: CallRecord) -> None:
            seen.append(record)

    client.observers.add(Spy())
    client.provider("cloud").script("m", Step(error="auth"))
    r = client.run("chain", Q)
    (record,) = seen
    assert record.response is r and record.context.strategy == "fallback"
    assert len(record.context.attempts) == 2


def test_fallback_through_the_real_openai_adapter_on_429_retry_after(
    openai_server: OpenAIWireServer, client_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_LOOPBACK_API_KEY", "sk-test")
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          loop:
            type: openai
            auth_profile: loopback
            api_base: "{openai_server.base_url}"
            max_retries: 0
          home: {{type: test_local}}
        models:
          "loop:gpt-test": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
        roles:
          r: {{provider: loop, model: gpt-test, fallbacks: ["home:m"]}}
        """
    )
    openai_server.push(Reply.error(429, "slow down", headers={"retry-after": "0.3"}))
    started = time.perf_counter()
    r = c.run("r", Q)
    elapsed = time.perf_counter() - started
    assert r.content == "echo: What is 2+2?" and r.target == "loop:gpt-test"
    assert elapsed >= 0.3
    assert len(openai_server.requests) == 2
    assert [(a.outcome, a.error_type) for a in r.decision.attempts] == [
        ("error", "RateLimitError"),
        ("ok", None),
    ]
    assert "waited 0.3s (retry-after)" in r.decision.rationale
    assert r.cost_usd == pytest.approx((r.usage.input_tokens * 1.0 + r.usage.output_tokens * 2.0) / 1e6)
    assert c.provider("home").calls == []


@pytest.mark.slow
def test_local_first_with_the_real_local_model(client_for, gguf_path) -> None:
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
          cloud: {{type: test, options: {{models: {{m: {{reply: "cloud"}}}}}}}}
        roles:
          r:
            provider: cloud
            model: m
            strategy: local_first
            candidates: ["local:gemma-3-270m"]
            params: {{temperature: 0, max_tokens: 8}}
        """
    )
    r = c.run("r", Q)
    assert r.target == "local:gemma-3-270m"
    assert "4" in r.content  # Gemma 270M at temperature 0: " 2+2 = 4"
    (attempt,) = r.decision.attempts
    assert attempt.outcome == "ok" and 0 < attempt.usage.output_tokens <= 8
    assert r.cost_usd == 0.0
    assert c.provider("cloud").calls == []
    # the local model fails (a prompt beyond its n_ctx): the chain falls through to the cloud
    long_prompt = "word " * 600
    r = c.complete(long_prompt, role="r")
    assert r.content == "cloud"
    assert r.decision.attempts[0].error_type in ("ContextWindowError", "ContextLengthExceededError")


@pytest.mark.slow
def test_local_only_cloud_first_and_cloud_only_with_the_real_local_model(client_for, gguf_path) -> None:
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
          cloud:
            type: test
            options: {{models: {{m: {{script: [{{error: unavailable}}, {{error: unavailable}}]}}}}}}
        roles:
          r:
            provider: cloud
            model: m
            candidates: ["local:gemma-3-270m"]
            params: {{temperature: 0, max_tokens: 8}}
            retry: {{retries: 0}}
        """
    )
    # LOCAL_ONLY never sends the prompt to the cloud candidate
    r = c.complete("What is 2+2?", role="r", strategy="local")
    assert r.decision.strategy == "local" and r.target == "local:gemma-3-270m"
    assert "4" in r.content and [a.provider for a in r.decision.attempts] == ["local"]
    assert c.provider("cloud").calls == []
    # CLOUD_FIRST tries the (failing) cloud model, then answers with the real local one
    r = c.complete("What is 2+2?", role="r", strategy="cloud_first")
    assert [(a.provider, a.outcome) for a in r.decision.attempts] == [("cloud", "error"), ("local", "ok")]
    assert "4" in r.content and r.usage.output_tokens > 0
    # CLOUD_ONLY leaves the local model out: the only cloud candidate fails, so the call fails
    with pytest.raises(orchlab.AllAttemptsFailedError) as info:
        c.complete("What is 2+2?", role="r", strategy="cloud")
    assert [type(e).__name__ for e in info.value.exceptions] == ["ProviderUnavailableError"]
