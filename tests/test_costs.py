"""Cost on every response: computed from the actual usage, checked against genai-prices itself.

Calls go through the real OpenAI SDK to the loopback OpenAI-wire server, whose scripted replies
carry the usage (cached and reasoning tokens included); expected prices come from calling
genai-prices directly in the test.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

import orchlab
from orchlab.catalog.prices import lookup
from orchlab.orchestrator import Orchestrator
from orchlab.types import Usage
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body, stream_chunks

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def make_client(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Orchestrator]:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-costs")
    monkeypatch.setenv("ORCH_AUTH_QWEN_API_KEY", "sk-test-costs")

    def make(model: str = "gpt-4.1-mini", extra: str = "", provider: str = "openai") -> Orchestrator:
        return client_for(
            f"""
            project: costs
            tracking: {{enabled: false}}
            providers:
              openai: {{api_base: "{openai_server.base_url}"}}
              qwen: {{api_base: "{openai_server.base_url}"}}
              box: {{type: vllm, api_base: "{openai_server.base_url}"}}
            roles:
              r: {{provider: {provider}, model: "{model}", params: {{max_tokens: 64}}}}
            """,
            extra,
        )

    return make


def usage_body(
    model: str, prompt: int, completion: int, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    body = completion_body("ok", model=model, prompt_tokens=prompt, completion_tokens=completion)
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0}
    return body


def genai_total(model: str, provider_id: str, **usage: int) -> float:
    return float(calc_price(GenaiUsage(**usage), model, provider_id=provider_id).total_price)


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-4o", "o3-mini"])
def test_cost_matches_genai_prices_with_cached_and_reasoning_tokens(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer, model: str
) -> None:
    openai_server.push(
        Reply(body=usage_body(model, prompt=12_000, completion=3_000, cached=4_000, reasoning=2_000))
    )
    r = make_client(model).run("r", HELLO)

    expected = genai_total(model, "openai", input_tokens=12_000, cache_read_tokens=4_000, output_tokens=3_000)
    assert r.usage.cache_read_tokens == 4_000 and r.usage.reasoning_tokens == 2_000
    assert r.cost_usd == pytest.approx(expected, rel=1e-12)
    assert r.cost_note is None
    # cached tokens are cheaper than fresh ones: the cache discount is applied, not ignored
    assert r.cost_usd is not None
    assert r.cost_usd < genai_total(model, "openai", input_tokens=12_000, output_tokens=3_000)
    # the attempt record carries the same cost (the cost is set before the attempt copies it)
    assert r.decision is not None
    assert r.decision.attempts[0].cost_usd == r.cost_usd
    assert r.decision.total_cost_usd == r.cost_usd


async def test_async_and_stream_carry_cost(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    client = make_client()
    openai_server.push(Reply(body=usage_body("gpt-4.1-mini", prompt=100, completion=40)))
    r = await client.arun("r", HELLO)
    assert r.cost_usd == pytest.approx(
        genai_total("gpt-4.1-mini", "openai", input_tokens=100, output_tokens=40)
    )

    chunks = stream_chunks(["a ", "b"], model="gpt-4.1-mini", prompt_tokens=250, completion_tokens=90)
    openai_server.push(Reply(stream_chunks=chunks))
    stream = client.stream("r", HELLO)
    assert stream.text() == "a b"
    assert stream.response is not None
    expected = genai_total("gpt-4.1-mini", "openai", input_tokens=250, output_tokens=90)
    assert stream.response.cost_usd == pytest.approx(expected)
    assert stream.response.decision is not None
    assert stream.response.decision.attempts[0].cost_usd == stream.response.cost_usd


def test_yaml_price_override_wins(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    extra = """
    models:
      "openai:gpt-4.1-mini":
        {input_price_per_mtok: 10, output_price_per_mtok: 30, cache_read_price_per_mtok: 1}
    """
    openai_server.push(Reply(body=usage_body("gpt-4.1-mini", prompt=1_000, completion=200, cached=400)))
    r = make_client(extra=extra).run("r", HELLO)
    assert r.cost_usd == pytest.approx((600 * 10 + 400 * 1 + 200 * 30) / 1e6)
    assert r.cost_usd != pytest.approx(
        genai_total("gpt-4.1-mini", "openai", input_tokens=1_000, cache_read_tokens=400, output_tokens=200)
    )


def test_fine_tune_priced_in_yaml(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    extra = """
    models:
      "openai:ft:gpt-4.1-mini:acme::abc123": {input_price_per_mtok: 0.8, output_price_per_mtok: 3.2}
    """
    openai_server.push(Reply(body=usage_body("ft:gpt-4.1-mini:acme::abc123", prompt=500, completion=100)))
    r = make_client("ft:gpt-4.1-mini:acme::abc123", extra=extra).run("r", HELLO)
    assert r.cost_usd == pytest.approx((500 * 0.8 + 100 * 3.2) / 1e6)


def test_unknown_price_is_none_with_a_visible_reason(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    r = make_client("my-private-model-9").run("r", HELLO)
    assert r.usage.input_tokens > 0  # the call happened and reported usage...
    assert r.cost_usd is None  # ...but nothing prices it: no silent 0
    assert r.cost_note is not None
    assert "openai:my-private-model-9" in r.cost_note
    assert "genai-prices" in r.cost_note and "models:" in r.cost_note
    assert r.decision is not None and r.decision.total_cost_usd is None

    q = make_client("qwen-plus", provider="qwen").run("r", HELLO)
    assert q.cost_usd is None
    assert q.cost_note is not None and "adapter kind 'qwen'" in q.cost_note


def test_missing_usage_gives_unknown_cost_not_zero(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    body = completion_body("ok", model="gpt-4.1-mini", prompt_tokens=0, completion_tokens=0)
    del body["usage"]
    openai_server.push(Reply(body=body))
    r = make_client().run("r", HELLO)
    assert r.cost_usd is None
    assert r.cost_note is not None and "no token usage" in r.cost_note


def test_dated_response_model_is_priced_when_the_configured_alias_is_not(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    # a configured alias genai-prices does not know, answered by a model it does
    openai_server.push(Reply(body=usage_body("gpt-4o-mini-2024-07-18", prompt=300, completion=30)))
    r = make_client("my-alias").run("r", HELLO)
    assert r.model == "gpt-4o-mini-2024-07-18"
    expected = genai_total("gpt-4o-mini-2024-07-18", "openai", input_tokens=300, output_tokens=30)
    assert r.cost_usd == pytest.approx(expected)


def test_local_openai_compatible_server_costs_zero_with_a_note(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    openai_server.push(Reply(body=usage_body("llama-3.1-8b", prompt=900, completion=100)))
    r = make_client("llama-3.1-8b", provider="box").run("r", HELLO)
    assert r.cost_usd == 0.0
    assert r.cost_note is not None and r.cost_note.startswith("local model: $0")


def test_local_model_priced_in_yaml(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    extra = """
    models:
      "box:llama-3.1-8b": {input_price_per_mtok: 0.05, output_price_per_mtok: 0.1}
    """
    openai_server.push(Reply(body=usage_body("llama-3.1-8b", prompt=900, completion=100)))
    r = make_client("llama-3.1-8b", provider="box", extra=extra).run("r", HELLO)
    assert r.cost_usd == pytest.approx((900 * 0.05 + 100 * 0.1) / 1e6)
    assert r.cost_note is None


@pytest.mark.slow
def test_in_process_local_model_costs_zero(write_config: Callable[[str], Path], gguf_path: Path) -> None:
    path = write_config(
        f"""
        project: local
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
        roles:
          q: {{provider: local, model: gemma-3-270m, params: {{temperature: 0, max_tokens: 8}}}}
        """
    )
    client = orchlab.get_llm_client(path)
    r = client.run("q", [{"role": "user", "content": "What is 2+2?"}])
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.cost_usd == 0.0
    assert r.cost_note == "local model: $0 unless priced in the YAML (models:)"


# --- the price arithmetic against genai-prices, model by model ---------------------------------

PRICED = [
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-5"),
    ("openai", "o3"),
    ("anthropic", "claude-sonnet-4-5"),  # tiered above 200k input tokens
    ("anthropic", "claude-3-5-haiku-latest"),
    ("anthropic", "claude-opus-4-1"),
    ("google", "gemini-2.5-pro"),  # tiered
    ("google", "gemini-2.5-flash"),
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("openrouter", "openai/gpt-4o-mini"),
]


@pytest.mark.parametrize(("provider_id", "model"), PRICED)
def test_price_arithmetic_equals_genai_prices(provider_id: str, model: str) -> None:
    found = lookup(provider_id, model)
    assert found.price is not None, found.note
    rng = random.Random(f"{provider_id}:{model}")
    for _ in range(25):
        inp = rng.choice([0, 1, 17, 999, 12_345, 199_999, 200_001, 350_000])
        cache_read = rng.randint(0, inp)
        cache_write = rng.randint(0, inp - cache_read)
        out = rng.choice([0, 1, 256, 8_000, 64_000])
        ours = found.price.cost(Usage(inp, out, cache_read, cache_write))
        theirs = genai_total(
            model,
            provider_id,
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15), (inp, out, cache_read, cache_write)


def test_price_lookup_is_cached_and_offline() -> None:
    first = lookup("openai", "gpt-4.1-mini")
    assert lookup("openai", "gpt-4.1-mini") is first
    missing = lookup("openai", "no-such-model-xyz")
    assert missing.price is None
    assert missing.note is not None and "no-such-model-xyz" in missing.note


def test_a_cost_the_adapter_reports_is_kept_unless_the_yaml_prices_the_model(
    write_config: Callable[[str], Path],
) -> None:
    """orchlab's test double reports its own scripted prices, as a billing router would."""
    path = write_config(
        """
        project: reported
        tracking: {enabled: false}
        providers:
          fake:
            type: test_local
            options:
              models:
                priced: {reply: "four words long here", input_price_per_mtok: 100, output_price_per_mtok: 200}
                plain: {reply: "ok"}
                yaml-priced: {reply: "ok", input_price_per_mtok: 100, output_price_per_mtok: 200}
        models:
          "fake:yaml-priced": {input_price_per_mtok: 1, output_price_per_mtok: 1}
        roles:
          a: {provider: fake, model: priced}
          b: {provider: fake, model: plain}
          c: {provider: fake, model: yaml-priced}
        """
    )
    client = orchlab.get_llm_client(path)
    hi = [{"role": "user", "content": "two words"}]
    assert client.run("a", hi).cost_usd == pytest.approx((2 * 100 + 4 * 200) / 1e6)  # reported
    plain = client.run("b", hi)  # nothing reported: a local provider's $0
    assert plain.cost_usd == 0.0 and plain.cost_note is not None and plain.cost_note.startswith("local model")
    assert client.run("c", hi).cost_usd == pytest.approx((2 + 1) / 1e6)  # the YAML wins
