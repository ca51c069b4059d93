"""Every logic streams: ``client.stream(role_with_a_strategy)``; the last chunk carries the trail."""

from __future__ import annotations

from typing import Any

import pytest

from orchlab.errors import AllAttemptsFailedError

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  a:
    type: test
    options:
      models:
        m: {reply: "alpha beta gamma", input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
        down: {script: [{error: unavailable}], reply: "never"}
        slow: {reply: "slow answer", latency_s: 0.5, tokens_per_s: 20}
  b:
    type: test
    options:
      models:
        m: {reply: "from b", input_price_per_mtok: 4.0, output_price_per_mtok: 8.0}
        fast: {reply: "fast answer here", latency_s: 0.01}
        gone: {script: [{error: unavailable}]}
roles:
  chain: {provider: a, model: down, fallbacks: ["b:m"], retry: {retries: 0}}
  race: {provider: a, model: slow, strategy: parallel, candidates: ["b:fast"]}
  cascade:
    provider: a
    model: m
    strategy: cascade
    candidates: ["b:m"]
    cascade: {scorer: regex, pattern: "from b", threshold: 0.5}
  vote: {provider: a, model: m, strategy: ensemble, candidates: ["b:m", "a:m"]}
  dead: {provider: a, model: down, fallbacks: ["b:gone"], retry: {retries: 0}}
"""
Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for: Any) -> Any:
    return client_for(CONFIG)


def test_fallback_streams_the_first_candidate_that_produces_a_token(client: Any) -> None:
    stream = client.stream("chain", Q)
    deltas = list(stream)
    r = stream.response
    assert "".join(deltas) == r.content == "from b" and len(deltas) >= 2  # token by token
    d = r.decision
    assert d.strategy == "fallback" and d.winner == "b:m"
    assert [
        (a.stage, a.target if hasattr(a, "target") else f"{a.provider}:{a.model}", a.outcome)
        for a in d.attempts
    ] == [
        ("fallback 1", "a:down", "error"),
        ("fallback 2", "b:m", "ok"),
    ]
    assert r.cost_usd == d.attempts[1].cost_usd > 0
    assert "failed before their first token: a:down (ProviderUnavailableError)" in d.rationale


async def test_race_streams_the_first_to_produce_a_token_and_cancels_the_rest(client: Any) -> None:
    stream = client.stream("race", Q)
    text = "".join([d async for d in stream])
    r = stream.response
    assert text == r.content == "fast answer here" and r.target == "b:fast"
    outcomes = {f"{a.provider}:{a.model}": a.outcome for a in r.decision.attempts}
    assert outcomes == {"a:slow": "cancelled", "b:fast": "ok"}
    assert "cancelled 1: a:slow" in r.decision.rationale


@pytest.mark.parametrize(("role", "winner"), [("cascade", "b:m"), ("vote", "a:m")])
def test_cascade_and_ensemble_stream_their_final_answer(client: Any, role: str, winner: str) -> None:
    stream = client.stream(role, Q)
    text = stream.text()
    r = stream.response
    assert (
        text == r.content
        and r.target == winner
        and r.decision.strategy == ("cascade" if role == "cascade" else "ensemble")
    )
    assert len(r.decision.attempts) >= 2
    assert r.cost_usd == pytest.approx(sum(a.cost_usd for a in r.decision.attempts))


def test_every_candidate_failing_before_a_token_raises_the_group(client: Any) -> None:
    with pytest.raises(AllAttemptsFailedError, match="failed before their first token"):
        client.stream("dead", Q).text()
