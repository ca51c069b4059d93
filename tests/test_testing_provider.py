"""orchlab.testing: the scriptable test double (kinds ``test`` and ``test_local``)."""

from __future__ import annotations

import asyncio
import time

import pytest

import orchlab
from orchlab.errors import (
    AuthenticationError,
    ConfigValidationError,
    ContextLengthExceededError,
    ProviderError,
    RateLimitError,
)
from orchlab.testing import LocalTestProvider, ManualClock, Step, TestProvider
from orchlab.types import GenerationParams, Message, ModelRequest

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  fake:
    type: test
    options:
      models:
        fixed: {reply: "four", latency_s: 0.01}
        scripted:
          script:
            - {error: rate_limit, retry_after: 1.5}
            - {content: "second"}
          reply: "after the script"
        ruled:
          rules:
            - {contains: "Rate", reply: "9"}
            - {contains: "capital", reply: "Paris"}
        slowgen: {reply: "one two three four five six seven eight", tokens_per_s: 50}
        scored: {reply: "a b c", logprob: -0.5}
        priced: {reply: "x y", input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
        small: {reply: "ok", context_window: 10}
  home: {type: test_local}
roles:
  r: {provider: fake, model: fixed}
"""


def request(model: str, text: str = "What is 2+2?", **params: object) -> ModelRequest:
    return ModelRequest(model, (Message("user", text),), GenerationParams().merged(params))


@pytest.fixture
def client(client_for):
    return client_for(CONFIG)


def test_it_is_labelled_as_a_test_double(client) -> None:
    import orchlab.testing as testing

    assert testing.__test__ is False
    assert TestProvider.__test__ is False
    assert "test double" in (testing.__doc__ or "")
    assert "Test double only" in (TestProvider.__doc__ or "")
    fake, home = client.provider("fake"), client.provider("home")
    assert type(fake) is TestProvider and not fake.is_local
    assert type(home) is LocalTestProvider and home.is_local


def test_scripted_reply_usage_and_history(client) -> None:
    r = client.run("r", [{"role": "user", "content": "What is 2+2?"}])
    assert r.content == "four"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (3, 1)  # words
    assert r.raw == {"test_double": True}
    (call,) = client.provider("fake").calls
    assert call.model == "fixed" and call.prompt == "What is 2+2?"
    assert call.outcome == "ok" and call.content == "four" and call.tokens_emitted == 1
    assert call.duration_s is not None and call.duration_s >= 0.01


def test_script_steps_then_reply_and_errors_carry_retry_after(client) -> None:
    fake = client.provider("fake")
    with pytest.raises(RateLimitError) as info:
        fake.complete_sync(request("scripted"))
    assert info.value.retry_after == 1.5 and info.value.status_code == 429 and info.value.retryable
    assert fake.complete_sync(request("scripted")).content == "second"
    assert fake.complete_sync(request("scripted")).content == "after the script"
    assert [c.outcome for c in fake.calls] == ["error", "ok", "ok"]
    assert "scripted rate_limit" in (fake.calls[0].error or "")


def test_rules_match_on_prompt_text_and_default_echo(client) -> None:
    fake = client.provider("fake")
    assert fake.complete_sync(request("ruled", "Rate this answer")).content == "9"
    assert fake.complete_sync(request("ruled", "the capital of France?")).content == "Paris"
    assert fake.complete_sync(request("unlisted", "hello there")).content == "unlisted: hello there"


def test_scripting_from_python_and_function_hook(client) -> None:
    fake = client.provider("fake")
    fake.script("fixed", "first", Step(error="auth"), {"content": "third"})
    assert fake.complete_sync(request("fixed")).content == "first"
    with pytest.raises(AuthenticationError):
        fake.complete_sync(request("fixed"))
    assert fake.complete_sync(request("fixed")).content == "third"
    assert fake.complete_sync(request("fixed")).content == "four"  # back to the YAML reply

    async def shout(req: ModelRequest) -> str:
        await asyncio.sleep(0)
        return req.messages[-1].content.upper()

    fake.respond_with("fn", shout)
    assert fake.complete_sync(request("fn", "quiet please")).content == "QUIET PLEASE"
    fake.script("fn", ProviderError("custom", provider="fake", status_code=418))
    with pytest.raises(ProviderError) as info:
        fake.complete_sync(request("fn"))
    assert info.value.status_code == 418


def test_logprobs_only_when_asked_and_prices(client) -> None:
    fake = client.provider("fake")
    assert fake.complete_sync(request("scored")).logprobs is None
    assert fake.complete_sync(request("scored", logprobs=True)).logprobs == [-0.5, -0.5, -0.5]
    r = fake.complete_sync(request("priced", "one two three"))
    assert r.cost_usd == pytest.approx((3 * 1.0 + 2 * 2.0) / 1e6)


def test_max_tokens_truncates_and_context_window(client) -> None:
    fake = client.provider("fake")
    r = fake.complete_sync(request("slowgen", max_tokens=3))
    assert r.content == "one two three" and r.usage.output_tokens == 3
    with pytest.raises(ContextLengthExceededError):
        fake.complete_sync(request("small", "a b c d e f g h", max_tokens=5))


async def test_cancellation_is_recorded_and_generation_stops(client) -> None:
    fake = client.provider("fake")
    task = asyncio.ensure_future(fake.complete(request("slowgen")))
    deadline = time.monotonic() + 30
    while not fake.calls or fake.calls[-1].tokens_emitted < 1:  # cancelled once it has begun,
        assert time.monotonic() < deadline  # whatever the machine's load (8 tokens at 50/s)
        await asyncio.sleep(0.002)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    call = fake.calls[-1]
    assert call.outcome == "cancelled"
    emitted = call.tokens_emitted
    assert 1 <= emitted < 8
    await asyncio.sleep(0.1)
    assert call.tokens_emitted == emitted  # nothing more is "generated" after the cancel


async def test_stream_yields_words_then_the_response(client) -> None:
    fake = client.provider("fake")
    deltas, final = [], None
    async for chunk in fake.stream(request("slowgen", max_tokens=4)):
        if chunk.response is not None:
            final = chunk.response
        else:
            deltas.append(chunk.delta)
    assert "".join(deltas) == "one two three four"
    assert final is not None and final.usage.output_tokens == 4
    assert fake.calls[-1].stream and fake.calls[-1].outcome == "ok"


def test_bad_options_are_config_errors(write_config) -> None:
    path = write_config(
        """
        project: t
        tracking: {enabled: false}
        providers:
          fake: {type: test, options: {models: {m: {reply: "x", latncy_s: 1}}}}
        roles:
          r: {provider: fake, model: m}
        """
    )
    client = orchlab.get_llm_client(path)
    with pytest.raises(ConfigValidationError, match=r"providers\.fake\.options\.models\.m\.latncy_s"):
        client.run("r", [{"role": "user", "content": "hi"}])


async def test_manual_clock_advances_without_waiting() -> None:
    clock = ManualClock(start=100.0)
    started = time.perf_counter()
    await clock.sleep(30)
    await clock.sleep(0.5)
    assert clock.now() == 130.5
    assert clock.sleeps == [30, 0.5]
    assert time.perf_counter() - started < 0.5
    clock.advance(10)
    assert clock.now() == 140.5
