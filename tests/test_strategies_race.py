"""PARALLEL: the first good answer wins; the losers are cancelled for real and stop."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from typing import Any

import pytest

from orchlab.errors import AllAttemptsFailedError
from orchlab.testing import Step
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

WORDS = " ".join(f"w{i}" for i in range(20))

CONFIG = f"""
project: t
tracking: {{enabled: false}}
providers:
  fast:
    type: test
    options:
      models:
        m: {{reply: "fast answer", latency_s: 0.02, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
  slow:
    type: test
    options:
      models:
        m: {{reply: "{WORDS}", latency_s: 0.01, tokens_per_s: 10}}
  home: {{type: test_local, options: {{models: {{m: {{reply: "local answer", latency_s: 1.0}}}}}}}}
roles:
  race: {{provider: slow, model: m, strategy: parallel, candidates: ["fast:m", "home:m"]}}
  json_race:
    provider: fast
    model: m
    strategy: parallel
    candidates: ["slow:m"]
    parallel: {{scorer: json, threshold: 1}}
"""

Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for):
    return client_for(CONFIG)


def test_the_fastest_wins_and_the_losers_are_cancelled_and_stop(client) -> None:
    started = time.perf_counter()
    r = client.run("race", Q)
    took = time.perf_counter() - started
    assert r.content == "fast answer" and r.target == "fast:m"
    assert took < 0.8  # the slow one needs 2 s, the local one 1 s (margins for a loaded machine)
    outcomes = {f"{a.provider}:{a.model}": a.outcome for a in r.decision.attempts}
    assert outcomes == {"slow:m": "cancelled", "fast:m": "ok", "home:m": "cancelled"}
    slow_call = client.provider("slow").calls[0]
    home_call = client.provider("home").calls[0]
    assert slow_call.outcome == "cancelled" and home_call.outcome == "cancelled"
    emitted = slow_call.tokens_emitted
    assert emitted < 20
    time.sleep(0.15)
    assert slow_call.tokens_emitted == emitted  # it stopped: no token after the cancel
    assert "fast:m gave the first good answer" in r.decision.rationale
    assert "cancelled 2: slow:m, home:m" in r.decision.rationale


def test_cost_of_cancelled_losers_is_honest(client) -> None:
    r = client.run("race", Q)
    by_target = {a.provider: a for a in r.decision.attempts}
    assert by_target["fast"].cost_usd == pytest.approx((3 * 1.0 + 2 * 2.0) / 1e6)
    assert by_target["home"].cost_usd == 0.0 and "local" in (by_target["home"].note or "")
    assert by_target["slow"].cost_usd is None and "tokens and cost unknown" in (by_target["slow"].note or "")
    # one cloud loser's cost is unknown, so the total is unknown, and the note says what is known
    assert r.cost_usd is None
    assert r.cost_note is not None and "slow:m (cancelled)" in r.cost_note
    assert "the others total $0.000007" in r.cost_note
    assert r.usage.output_tokens == 2  # only the winner reported tokens
    text = r.decision.explain()
    assert "cancelled" in text and "unknown (known part $0.000007)" in text


def test_a_failing_or_empty_fast_answer_is_not_good(client) -> None:
    client.provider("fast").script("m", Step(error="unavailable", latency_s=0.001))
    r = client.run("race", Q)
    assert r.target == "home:m"  # the next to finish
    fast = next(a for a in r.decision.attempts if a.provider == "fast")
    assert fast.outcome == "error" and fast.error_type == "ProviderUnavailableError"
    assert "failed: fast:m (ProviderUnavailableError)" in r.decision.rationale
    client.provider("fast").script("m", Step(content="   ", latency_s=0.001))
    r = client.run("race", Q)
    assert r.target == "home:m"
    fast = next(a for a in r.decision.attempts if a.provider == "fast")
    assert fast.outcome == "rejected" and fast.note == "empty answer"


def test_a_scorer_decides_what_a_good_answer_is(client) -> None:
    client.provider("slow").script("m", Step(content='{"answer": 4}'))
    r = client.run("json_race", Q)  # fast answers first, but not JSON
    assert r.content == '{"answer": 4}' and r.target == "slow:m"
    fast = next(a for a in r.decision.attempts if a.provider == "fast")
    assert fast.outcome == "rejected" and fast.confidence == 0.0
    assert r.decision.scores == {"fast:m": 0.0, "slow:m": 1.0}


def test_when_nothing_is_good_the_best_scored_answer_is_returned(client) -> None:
    r = client.complete("What is 2+2?", role="json_race", max_tokens=2)
    assert r.decision.rationale.startswith("no answer was good; returning the best-scored, from fast:m")
    assert all(a.outcome in ("ok", "rejected") for a in r.decision.attempts)


def test_all_fail(client) -> None:
    for name in ("fast", "slow", "home"):
        client.provider(name).script("m", Step(error="unavailable"))
    with pytest.raises(AllAttemptsFailedError) as info:
        client.run("race", Q)
    assert len(info.value.exceptions) == 3


def test_call_overrides_strategy_and_candidates(client) -> None:
    r = client.complete("hi", candidates=["slow:m", "home:m"], strategy="parallel")
    assert r.target == "home:m" and r.decision.strategy == "parallel"
    assert {a.provider for a in r.decision.attempts} == {"slow", "home"}


async def test_async_race_and_outer_cancellation_cancels_every_candidate(client) -> None:
    r = await client.acomplete("What is 2+2?", role="race")
    assert r.target == "fast:m"
    client.provider("fast").script("m", Step(content="late", latency_s=5))
    task = asyncio.ensure_future(client.acomplete("What is 2+2?", role="race"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    latest = [client.provider(n).calls[-1] for n in ("fast", "slow", "home")]
    assert [c.outcome for c in latest] == ["cancelled", "cancelled", "cancelled"]


class DropWatch:
    """Make a loopback server hold its reply and notice when the client drops the connection."""

    def __init__(self, server: OpenAIWireServer, hold_s: float) -> None:
        self.dropped = threading.Event()
        self.dropped_at: float | None = None
        self.received: list[Any] = []
        original = server._handle

        def handle(h: Any, body: Any) -> None:
            self.received.append(body)
            sock: socket.socket = h.connection
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], 0.01)
                if ready and sock.recv(1, socket.MSG_PEEK) == b"":
                    self.dropped_at = time.perf_counter()
                    self.dropped.set()
                    return
            original(h, body)

        server._handle = handle  # type: ignore[method-assign]


def test_racing_real_openai_adapters_closes_the_losers_http_connection(
    client_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_LOOPBACK_API_KEY", "sk-test")
    with OpenAIWireServer() as quick, OpenAIWireServer() as sluggish:
        watch = DropWatch(sluggish, hold_s=3.0)
        c = client_for(
            f"""
            project: t
            tracking: {{enabled: false}}
            providers:
              a: {{type: openai, auth_profile: loopback, api_base: "{quick.base_url}", max_retries: 0}}
              b: {{type: openai, auth_profile: loopback, api_base: "{sluggish.base_url}", max_retries: 0}}
            models:
              "a:gpt-test": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
              "b:gpt-test": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
            roles:
              r: {{provider: b, model: gpt-test, strategy: parallel, candidates: ["a:gpt-test"]}}
            """
        )
        quick.push(Reply(delay_s=0.2))  # the default echo, after 0.2 s: b has been sent by then
        r = c.run("r", Q)
        returned = time.perf_counter()
        assert r.target == "a:gpt-test" and r.content == "echo: What is 2+2?"
        assert watch.dropped.wait(2.0), "the loser's HTTP connection was not closed"
        assert watch.dropped_at is not None and watch.dropped_at - returned < 1.0
        assert len(watch.received) == 1  # it was sent, then abandoned
        assert watch.received[0]["model"] == "gpt-test"
        loser = next(a for a in r.decision.attempts if a.provider == "b")
        assert loser.outcome == "cancelled" and loser.cost_usd is None
        assert r.cost_usd is None and "b:gpt-test (cancelled)" in (r.cost_note or "")


@pytest.mark.slow
def test_race_with_the_real_local_model_stops_its_generation(client_for, gguf_path) -> None:
    with OpenAIWireServer() as cloud:
        _race_the_local_model(client_for, gguf_path, cloud)


def _race_the_local_model(client_for: Any, gguf_path: Any, cloud: OpenAIWireServer) -> None:
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
          cloud: {{type: vllm, api_base: "{cloud.base_url}"}}
          never:
            type: test
            options:
              models: {{never: {{reply: "x", latency_s: 30}}}}
        models:
          "cloud:quick": {{input_price_per_mtok: 0, output_price_per_mtok: 0}}
        roles:
          lose:
            provider: local
            model: gemma-3-270m
            strategy: parallel
            candidates: ["cloud:quick"]
            params: {{temperature: 0, max_tokens: 200}}
          win:
            provider: local
            model: gemma-3-270m
            strategy: parallel
            candidates: ["never:never"]
            params: {{temperature: 0, max_tokens: 8}}
        """
    )
    local = c.provider("local")
    spans: list[dict[str, Any]] = []
    generate = local._generate
    third_token = threading.Event()

    def spy(request: Any, cancel: threading.Event, on_text: Any = None) -> Any:
        # count the tokens the real generation produces, and when and how it ended
        span: dict[str, Any] = {"tokens": 0, "ended": None, "cancelled": False}
        spans.append(span)

        def count(text: str) -> None:
            span["tokens"] += 1
            if span["tokens"] == 3:
                third_token.set()

        try:
            return generate(request, cancel, count)
        except asyncio.CancelledError:
            span["cancelled"] = True
            raise
        finally:
            span["ended"] = time.perf_counter()

    local._generate = spy  # type: ignore[method-assign]
    c.run("win", [{"role": "user", "content": "warm up"}])  # load the model outside the race
    spans.clear()
    third_token.clear()  # the warm-up made tokens too
    # the cloud answers once the local model has made three real tokens, whatever the machine's load
    cloud.push(
        Reply(
            body=completion_body("4", model="quick", prompt_tokens=7, completion_tokens=1), after=third_token
        )
    )
    long_question = [{"role": "user", "content": "Write a long story about a dragon."}]
    r = c.run("lose", long_question)
    returned = time.perf_counter()
    assert r.target == "cloud:quick" and r.content == "4"
    deadline = time.monotonic() + 5
    while spans[0]["ended"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    span = spans[0]
    assert span["cancelled"] is True, span
    assert 3 <= span["tokens"] < 200  # stopped early, after real tokens
    assert span["ended"] - returned < 1.5  # at the next token, not at max_tokens (and < 200 above)
    loser = next(a for a in r.decision.attempts if a.provider == "local")
    assert loser.outcome == "cancelled" and loser.cost_usd == 0.0

    r = c.run("win", [{"role": "user", "content": "What is 2+2?"}])
    assert r.target == "local:gemma-3-270m" and "4" in r.content
    assert r.decision.attempts[0].usage.output_tokens > 0
    assert c.provider("never").calls[-1].outcome == "cancelled"
