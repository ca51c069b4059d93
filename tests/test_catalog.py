"""The model catalog: facts and prices per configured model, filters, discovery and cost-aware choice.

Expected prices are read from genai-prices directly in each test.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

import orchlab
from orchlab.catalog import Catalog, ModelInfo, Tier
from orchlab.catalog.metadata import metadata
from orchlab.errors import InvalidRequestError, OrchlabWarning, UnknownProviderError
from orchlab.orchestrator import Orchestrator
from tests.servers.ollama_wire import OllamaWireServer, show_body, tag

CONFIG = """
project: cat
tracking: {enabled: false}
providers:
  openai: {}
  anthropic: {}
  gemini: {}
  deepseek: {}
  qwen: {}
  local: {type: llamacpp, options: {n_ctx: 1024}}
roles:
  llm.fast: {provider: openai, model: gpt-4.1-mini, fallbacks: ["anthropic:claude-3-5-haiku-latest"]}
  llm.local: {provider: local, model: gemma-3-270m}
  llm.race: {provider: openai, model: gpt-4o, strategy: parallel, candidates: ["openai:gpt-4o-2024-08-06"]}
models:
  "openai:ft:gpt-4.1-mini:acme::x1":
    display_name: ACME support tune
    input_price_per_mtok: 0.8
    output_price_per_mtok: 3.2
    context_window: 65536
    capabilities: [chat, tools]
    tier: fast
"""


@pytest.fixture
def client(write_config: Callable[..., Path]) -> Orchestrator:
    return orchlab.get_llm_client(write_config(CONFIG))


def genai_per_mtok(model: str, provider_id: str) -> tuple[float, float]:
    """Input and output USD per million tokens, as genai-prices computes them (below any price tier)."""
    inp = calc_price(GenaiUsage(input_tokens=1_000, output_tokens=0), model, provider_id=provider_id)
    out = calc_price(GenaiUsage(input_tokens=0, output_tokens=1_000), model, provider_id=provider_id)
    return float(inp.total_price) * 1000, float(out.total_price) * 1000


@pytest.mark.parametrize(
    ("target", "provider_id", "model"),
    [
        ("openai:gpt-4.1-mini", "openai", "gpt-4.1-mini"),
        ("openai:o3", "openai", "o3"),
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("gemini:gemini-2.5-flash", "google", "gemini-2.5-flash"),
        ("deepseek:deepseek-chat", "deepseek", "deepseek-chat"),
    ],
)
def test_known_models_are_priced_as_genai_prices_prices_them(
    client: Orchestrator, target: str, provider_id: str, model: str
) -> None:
    info = client.catalog.get_model_info(target)
    assert (info.input_price_per_mtok, info.output_price_per_mtok) == pytest.approx(
        genai_per_mtok(model, provider_id)
    )
    assert info.price_source == "genai-prices" and info.price_note is None
    expected = calc_price(GenaiUsage(input_tokens=4321, output_tokens=765), model, provider_id=provider_id)
    assert client.catalog.estimate_cost(target, 4321, 765) == pytest.approx(float(expected.total_price))
    assert info.local is False and info.target == target


def test_metadata_facts_join_the_prices(client: Orchestrator) -> None:
    info = client.catalog.get_model_info("openai:gpt-4.1-mini")
    assert info.display_name == "GPT-4.1 mini"
    assert info.tier is Tier.FAST and info.tier == "fast"
    assert info.capabilities == {"chat", "code", "tools", "vision"}
    assert (info.context_window, info.max_output_tokens) == (1_047_576, 32_768)
    assert info.cache_read_price_per_mtok == pytest.approx(0.1)
    dated = client.catalog.get_model_info("openai:gpt-4o-2024-08-06")
    assert dated.display_name == "GPT-4o" and dated.tier is Tier.STANDARD
    assert client.catalog.get_model_info("anthropic:claude-3-5-haiku-latest").tier is Tier.FAST


def test_yaml_models_entry_wins(client: Orchestrator, write_config: Callable[..., Path]) -> None:
    tuned = client.catalog.get_model_info("openai:ft:gpt-4.1-mini:acme::x1")
    assert tuned == ModelInfo(
        provider="openai",
        model="ft:gpt-4.1-mini:acme::x1",
        display_name="ACME support tune",
        capabilities=frozenset({"chat", "tools"}),
        context_window=65536,
        max_output_tokens=None,
        input_price_per_mtok=0.8,
        output_price_per_mtok=3.2,
        tier=Tier.FAST,
        local=False,
        price_source="config",
        kind="openai",
    )
    # an override of a model genai-prices knows replaces its price and keeps the other facts
    overriding = (
        CONFIG
        + '  "openai:gpt-4.1-mini": {input_price_per_mtok: 0.2, output_price_per_mtok: 0.9, tier: standard}\n'
    )
    other = orchlab.get_llm_client(write_config(overriding, name="override.yaml"))
    info = other.catalog.get_model_info("openai:gpt-4.1-mini")
    assert (info.input_price_per_mtok, info.output_price_per_mtok) == (0.2, 0.9)
    assert info.price_source == "config" and info.tier is Tier.STANDARD
    assert info.context_window == 1_047_576 and info.display_name == "GPT-4.1 mini"


def test_unknown_model_has_no_price_and_says_why(client: Orchestrator) -> None:
    info = client.catalog.get_model_info("openai:gpt-nonexistent-7")
    assert info.input_price_per_mtok is None and info.output_price_per_mtok is None
    assert info.price_source == "unknown" and not info.priced
    assert info.price_note is not None
    assert "gpt-nonexistent-7" in info.price_note and "genai-prices" in info.price_note
    assert "models:" in info.price_note
    assert info.tier is Tier.STANDARD and info.capabilities == {"chat"}  # documented defaults

    qwen = client.catalog.get_model_info("qwen:qwen-plus")
    assert qwen.input_price_per_mtok is None
    assert qwen.price_note is not None and "adapter kind 'qwen'" in qwen.price_note
    assert qwen.context_window == 131072 and qwen.tier is Tier.STANDARD  # metadata still applies

    with pytest.raises(UnknownProviderError, match="nosuch"):
        client.catalog.get_model_info("nosuch:gpt-4.1")


def test_local_model_is_free_and_its_window_comes_from_the_provider(client: Orchestrator) -> None:
    info = client.catalog.get_model_info("local:gemma-3-270m")
    assert info.local is True
    assert (info.input_price_per_mtok, info.output_price_per_mtok) == (0.0, 0.0)
    assert info.price_source == "local"
    assert info.price_note == "local model: $0 unless priced in the YAML (models:)"
    assert info.context_window == 1024  # the configured n_ctx, not the GGUF's 32k
    assert info.display_name.startswith("Gemma 3 270M")


def test_list_models_covers_roles_fallbacks_models_and_metadata(client: Orchestrator) -> None:
    targets = {i.target for i in client.catalog.list_models()}
    assert {
        "openai:gpt-4.1-mini",  # a role
        "anthropic:claude-3-5-haiku-latest",  # a fallback
        "openai:gpt-4o-2024-08-06",  # a strategy candidate
        "openai:ft:gpt-4.1-mini:acme::x1",  # models:
        "local:gemma-3-270m",  # a local role
        "openai:o3",  # packaged metadata for a configured provider kind
        "gemini:gemini-2.5-pro",
        "qwen:qwen-max",
    } <= targets
    assert not any(t.startswith("local:llama3") for t in targets)  # local metadata is not listed


def test_list_models_filters(client: Orchestrator) -> None:
    catalog = client.catalog
    assert {i.target for i in catalog.list_models(local=True)} == {"local:gemma-3-270m"}
    reasoning = catalog.list_models(capability="reasoning")
    assert reasoning and all("reasoning" in i.capabilities for i in reasoning)
    assert "openai:gpt-4.1-mini" not in {i.target for i in reasoning}
    advanced = catalog.list_models(tier="advanced")
    assert advanced and {i.tier for i in advanced} == {Tier.ADVANCED}
    cheap = catalog.list_models(max_cost=0.001)  # per call of 1000 prompt + 500 output tokens
    for info in cheap:
        cost = catalog.estimate_cost(info.target, 1000, 500)
        assert cost is not None and cost <= 0.001
    assert "qwen:qwen-plus" not in {i.target for i in cheap}  # unpriced never passes max_cost
    assert "openai:o3" not in {i.target for i in cheap}
    assert "local:gemma-3-270m" in {i.target for i in cheap}
    with pytest.raises(InvalidRequestError, match="unknown capability"):
        catalog.list_models(capability="telepathy")
    with pytest.raises(InvalidRequestError, match="unknown tier"):
        catalog.list_models(tier="premium")
    frame = catalog.frame(local=False, tier=Tier.FAST)
    assert set(frame["tier"]) == {"fast"} and not frame["local"].any()


def test_choose_model_picks_the_cheapest_match_with_a_rationale(client: Orchestrator) -> None:
    catalog = client.catalog
    choice = catalog.choose_model(capability="code", local=False)
    costs = {
        i.target: catalog.estimate_cost(i.target, 1000, 500) for i in catalog.list_models(capability="code")
    }
    priced = {t: c for t, c in costs.items() if c is not None and not t.startswith("local:")}
    cheapest = min(priced, key=lambda t: priced[t])
    assert choice.target == cheapest
    assert choice.estimated_cost_usd == pytest.approx(priced[cheapest])
    assert cheapest in choice.rationale and "cheapest of" in choice.rationale
    assert "unpriced" in choice.rationale  # the Qwen models were left out, and it says so

    # a tier and a big prompt: only windows that hold it count
    big = catalog.choose_model(tier="advanced", prompt_tokens=300_000, max_output_tokens=1_000)
    assert big.model_info.context_window is not None and big.model_info.context_window >= 301_000
    assert "too small a context window" in big.rationale

    # the local model is free: with no other filter it wins, once the call fits its 1024-token window
    assert catalog.choose_model(prompt_tokens=600, max_output_tokens=200).target == "local:gemma-3-270m"
    assert catalog.choose_model().target != "local:gemma-3-270m"  # 1000 + 500 tokens do not fit
    assert "chat" in catalog.choose_model().model_info.capabilities  # never an embedding model

    with pytest.raises(InvalidRequestError, match="over the max cost") as info:
        catalog.choose_model(capability="reasoning", max_cost=1e-9, local=False)
    assert "cheapest:" in str(info.value)


@pytest.fixture
def ollama() -> Iterator[OllamaWireServer]:
    with OllamaWireServer() as server:
        server.models["qwen3:0.6b"] = (
            tag(
                "qwen3:0.6b",
                size=522_653_767,
                family="qwen3",
                parameter_size="751.63M",
                quantization="Q4_K_M",
            ),
            show_body("qwen3", context_length=40960, parameters="num_ctx 8192"),
        )
        yield server


def test_ollama_models_join_the_catalog_when_discovered(
    ollama: OllamaWireServer, write_config: Callable[[str], Path]
) -> None:
    path = write_config(
        f"""
        project: disc
        tracking: {{enabled: false}}
        providers:
          gpu1: {{type: ollama, api_base: "{ollama.url}"}}
          down: {{type: ollama, api_base: "http://127.0.0.1:9"}}
        roles:
          r: {{provider: gpu1, model: "llama3.1:8b"}}
        """
    )
    client = orchlab.get_llm_client(path)
    assert {i.target for i in client.catalog.list_models()} == {"gpu1:llama3.1:8b"}
    assert ollama.requests == []  # listing alone makes no network call

    with pytest.warns(OrchlabWarning, match="'down'"):
        found = client.catalog.list_models(discover=True)
    by_target = {i.target: i for i in found}
    assert set(by_target) == {"gpu1:llama3.1:8b", "gpu1:qwen3:0.6b"}
    assert "down" in client.catalog.discovery_errors
    llama, qwen = by_target["gpu1:llama3.1:8b"], by_target["gpu1:qwen3:0.6b"]
    assert llama.context_window == 131072  # reported by /api/show
    assert qwen.context_window == 8192  # the num_ctx the server loads it with
    assert llama.local and llama.input_price_per_mtok == 0.0 and llama.price_source == "local"
    assert llama.display_name == "Llama 3.1" and qwen.display_name == "Qwen 3"  # packaged metadata
    assert client.catalog.choose_model(local=True).model_info.local


def test_catalog_is_one_per_client_and_cached(client: Orchestrator) -> None:
    # built with the client (its entries are built on first lookup): the pipeline prices with it
    catalog = client.catalog
    assert isinstance(catalog, Catalog) and client.catalog is catalog
    assert catalog.entry("openai", "o3") is catalog.entry("openai", "o3")


def test_metadata_matching_rules() -> None:
    meta = metadata()
    assert (meta.facts("openai", "gpt-4o-mini-2024-07-18") or None).id == "gpt-4o-mini"  # type: ignore[union-attr]
    assert meta.facts("gemini", "gemini-2.5-flash-preview-05-20").id == "gemini-2.5-flash"  # type: ignore[union-attr]
    assert meta.facts("openai", "gpt-4o-transcribe") is None  # another model, not a variant of gpt-4o
    assert meta.facts("openai", "gpt-4o-audio-preview") is None
    assert meta.facts("openrouter", "anthropic/claude-3-5-haiku").id == "claude-3-5-haiku"  # type: ignore[union-attr]
    assert meta.facts("ollama", "qwen2.5-coder:7b-instruct-q4_K_M").id == "qwen2.5-coder"  # type: ignore[union-attr]
    assert meta.facts("vllm", "Qwen/Qwen2.5-7B-Instruct").id == "qwen2.5"  # type: ignore[union-attr]
    assert meta.facts("test", "anything") is None


def test_prices_and_counts_need_no_network(tmp_path: Path) -> None:
    """In a fresh process whose sockets refuse anything but loopback, genai-prices and tiktoken still work."""
    script = tmp_path / "offline.py"
    script.write_text(
        textwrap.dedent(
            """
            import socket

            attempts = []
            real_connect = socket.socket.connect

            def guarded(self, address):
                if not str(address[0]).startswith("127."):
                    attempts.append(address)
                    raise OSError("network disabled in this test")
                return real_connect(self, address)

            socket.socket.connect = guarded
            socket.create_connection = lambda address, *a, **k: guarded(None, address)

            import asyncio
            from orchlab.catalog import prices, tokens
            from orchlab.types import Message, ModelRequest, Usage

            found = prices.lookup("anthropic", "claude-sonnet-4-5")
            cost = found.price.cost(Usage(250_000, 1_000))
            request = ModelRequest("gpt-4o", (Message("user", "hello world"),))
            count = asyncio.run(tokens.count_prompt(object(), request))
            print(round(cost, 6), count.method, attempts)
            """
        )
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache")},
    )
    assert out.returncode == 0, out.stderr
    cost, _, rest = out.stdout.strip().partition(" ")
    expected = calc_price(
        GenaiUsage(input_tokens=250_000, output_tokens=1_000), "claude-sonnet-4-5", provider_id="anthropic"
    )
    assert float(cost) == pytest.approx(float(expected.total_price), abs=1e-6)  # the >200k-token tier
    assert rest == "estimate: tiktoken cl100k_base (o200k_base not available offline) []"
