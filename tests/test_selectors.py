"""Selectors: a role's ``select:`` rule resolved through the catalog (priced cloud entries and a
local Ollama-wire host), re-resolved when the host goes down; risk/complexity -> tier; URNs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from orchlab.errors import InvalidRequestError, NoModelMatchesError, UnknownProviderError
from orchlab.orchestrator import Orchestrator
from orchlab.strategies import Strategy
from orchlab.testing import ManualClock
from tests.servers.loopback import closed_port
from tests.servers.ollama_wire import OllamaWireServer
from tests.servers.openai_wire import OpenAIWireServer

LOCAL = "gpu1:llama3.1:8b"
ASK = [{"role": "user", "content": "review this"}]


@pytest.fixture
def ollama() -> Iterator[OllamaWireServer]:
    server = OllamaWireServer().start()
    yield server
    if not server.killed:
        server.stop()


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIWireServer]:
    monkeypatch.setenv("ORCH_AUTH_CLOUD_API_KEY", "sk-test-cloud-0123456789")
    with OpenAIWireServer() as server:
        yield server


def config(ollama_url: str, cloud_url: str, *, select: str, extra: str = "") -> str:
    return f"""
        project: selectors
        tracking: {{enabled: false}}
        providers:
          cloud: {{type: openrouter, api_base: "{cloud_url}", auth_profile: cloud}}
          nokey: {{type: openrouter, api_base: "{cloud_url}", auth_profile: absent_profile}}
          gpu1: {{type: ollama, api_base: "{ollama_url}", timeout_s: 5}}
        models:
          "cloud:coder-mini": {{input_price_per_mtok: 0.2, output_price_per_mtok: 0.8,
                                capabilities: [chat, code], tier: standard}}
          "cloud:coder-max": {{input_price_per_mtok: 3, output_price_per_mtok: 15,
                               capabilities: [chat, code], tier: standard}}
          "cloud:chatty": {{input_price_per_mtok: 0.05, output_price_per_mtok: 0.1,
                            capabilities: [chat], tier: standard}}
          "cloud:coder-fast": {{input_price_per_mtok: 0.1, output_price_per_mtok: 0.2,
                                capabilities: [chat, code], tier: fast}}
          "cloud:coder-pro": {{input_price_per_mtok: 1, output_price_per_mtok: 4,
                               capabilities: [chat, code, reasoning], tier: advanced}}
          "nokey:free-coder": {{input_price_per_mtok: 0, output_price_per_mtok: 0,
                                capabilities: [chat, code], tier: standard}}
          "gpu1:llama3.1:8b": {{capabilities: [chat, code], tier: standard}}
        roles:
          llm.review:
            select: {select}
            retry: {{retries: 0, cooldown_after: 1, cooldown_s: 600}}
        {extra}
        """


REVIEW = (
    "{capability: code, tier: standard, max_cost_per_call: 0.002, prefer: local, providers: [cloud, gpu1]}"
)


@pytest.fixture
def client(
    ollama: OllamaWireServer, cloud: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> Orchestrator:
    c = client_for(config(ollama.url, cloud.base_url, select=REVIEW))
    c.health.clock = ManualClock()
    return c


def test_the_local_host_is_chosen_then_the_cheapest_capable_cloud_model_once_it_goes_down(
    client: Orchestrator, ollama: OllamaWireServer
) -> None:
    assert client.resolve("llm.review").target == LOCAL
    first = client.run("llm.review", ASK)
    assert first.content == "echo: review this"
    assert first.decision.strategy == Strategy.SELECT
    assert first.decision.winner == LOCAL
    assert first.decision.rationale.startswith(
        "select capability 'code', tier 'standard', max $0.002 per call, prefer local: "
        "gpu1:llama3.1:8b at $0.000000 per call (1,000 prompt + 500 output tokens, local prices, "
        "tier standard, local); local first, then cheapest of 2 matching; "
        "next: cloud:coder-mini at $0.000600; ruled out: "
    )
    for ruled_out in (
        "cloud:coder-max ($0.010500 per call > max_cost_per_call $0.002)",
        "cloud:chatty (no capability 'code' (has chat))",
        "cloud:coder-fast (tier fast, not standard)",
        "cloud:coder-pro (tier advanced, not standard)",
    ):
        assert ruled_out in first.decision.rationale
    assert first.decision.attempts[0].note == "selected: estimated $0.000000 per call"

    ollama.kill()
    moved = client.run("llm.review", ASK)
    assert [(a.provider, a.model, a.outcome) for a in moved.decision.attempts] == [
        ("gpu1", "llama3.1:8b", "error"),
        ("cloud", "coder-mini", "ok"),
    ]
    assert moved.decision.winner == "cloud:coder-mini"
    assert moved.cost_usd is not None and moved.cost_usd > 0

    after = client.run("llm.review", ASK)
    assert [a.provider for a in after.decision.attempts] == ["cloud"]  # chosen outright
    assert after.decision.rationale.startswith(
        "select capability 'code', tier 'standard', max $0.002 per call, prefer local: "
        "cloud:coder-mini at $0.000600 per call"
    )
    assert "gpu1:llama3.1:8b (gpu1 is cooling down (600s left) after failing)" in after.decision.rationale
    assert after.decision.attempts[0].note == "selected: estimated $0.000600 per call"
    assert client.resolve("llm.review").target == "cloud:coder-mini"
    assert client.selection("llm.review").ruled_out[LOCAL] == "gpu1 is cooling down (600s left) after failing"


def test_a_host_down_at_discovery_is_ruled_out_and_a_cheapest_rule_prefers_nothing(
    cloud: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    rule = "{capability: code, tier: standard, providers: [cloud, gpu1]}"
    client = client_for(config(f"http://127.0.0.1:{closed_port()}", cloud.base_url, select=rule))
    selection = client.selection("llm.review")
    assert selection.target == "cloud:coder-mini"
    assert selection.estimated_cost_usd == pytest.approx(0.0006)
    assert (
        selection.ruled_out[LOCAL]
        == "gpu1 did not answer when asked for its models (ProviderConnectionError)"
    )
    assert [info.target for info, _ in selection.ranked] == ["cloud:coder-mini", "cloud:coder-max"]


def test_prefer_cloud_and_a_provider_without_a_key(
    client: Orchestrator,
    ollama: OllamaWireServer,
    cloud: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
) -> None:
    rule = "{capability: code, tier: standard, prefer: cloud, providers: [cloud, gpu1, nokey]}"
    other = client_for(config(ollama.url, cloud.base_url, select=rule))
    selection = other.selection("llm.review")
    assert selection.target == "cloud:coder-mini"
    assert selection.ruled_out["nokey:free-coder"] == "no API key (set ORCH_AUTH_ABSENT_PROFILE_API_KEY)"
    assert [info.target for info, _ in selection.ranked] == ["cloud:coder-mini", "cloud:coder-max", LOCAL]


def test_a_rule_that_matches_nothing_says_what_was_ruled_out_and_why(
    ollama: OllamaWireServer, cloud: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    rule = "{capability: vision, max_cost_per_call: 0.0001, providers: [cloud]}"
    client = client_for(config(ollama.url, cloud.base_url, select=rule))
    with pytest.raises(NoModelMatchesError) as caught:
        client.run("llm.review", ASK)
    message = str(caught.value)
    assert message.startswith(
        "role 'llm.review': no model matches select capability 'vision', max $0.0001 per call among "
        "providers cloud for 1,000 prompt + 500 output tokens (ruled out: cloud:chatty: no capability "
        "'vision' (has chat); "
    )
    assert caught.value.ruled_out["cloud:coder-mini"] == "no capability 'vision' (has chat, code)"
    assert message.endswith("Relax the rule, add models under models: in the YAML, or start a host.")


def test_risk_and_complexity_pick_the_tier_through_routing_tiers(
    ollama: OllamaWireServer, cloud: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    rule = "{capability: code, providers: [cloud]}"
    client = client_for(
        config(
            ollama.url,
            cloud.base_url,
            select=rule,
            extra="routing: {tiers: {risk_complexity: {low: {high: advanced}},"
            " task_types: {general: standard}}}",
        )
    )
    picked = {
        (risk, complexity): client.run("llm.review", ASK, risk=risk, complexity=complexity).decision.winner
        for risk, complexity in [("high", "low"), ("high", "high"), ("low", "low"), ("low", "high")]
    }
    assert picked == {
        ("high", "low"): "cloud:coder-mini",  # default table: standard
        ("high", "high"): "cloud:coder-pro",  # advanced
        ("low", "low"): "cloud:coder-fast",  # fast
        ("low", "high"): "cloud:coder-pro",  # the YAML's entry over the default (standard)
    }
    r = client.run("llm.review", ASK, risk="high", complexity="low")
    assert "tier 'standard' (risk high, complexity low -> routing.tiers)" in r.decision.rationale
    assert client.run("llm.review", ASK, task_type="summarization").decision.winner == "cloud:coder-fast"
    assert client.run("llm.review", ASK, task_type="general").decision.winner == "cloud:coder-mini"
    assert client.run("llm.review", ASK, risk="high", tier="fast").decision.winner == "cloud:coder-fast"
    assert client.resolve("llm.review", risk="high", complexity="high").target == "cloud:coder-pro"
    with pytest.raises(InvalidRequestError, match="unknown risk 'huge'; use one of low, medium, high"):
        client.run("llm.review", ASK, risk="huge")
    with pytest.raises(InvalidRequestError, match=r"unknown keyword 'riks'.*did you mean 'risk'"):
        client.run("llm.review", ASK, riks="high")


def test_a_urn_names_a_selector(client: Orchestrator) -> None:
    r = client.run("urn:orchlab:select:capability=code;tier=fast;providers=cloud", ASK)
    assert r.decision.strategy == Strategy.SELECT and r.decision.winner == "cloud:coder-fast"
    r = client.run("urn:orchlab:select:capability=code&prefer=cloud&max_cost_per_call=0.001", ASK)
    assert r.decision.winner == "cloud:coder-fast"  # cheapest code model of every tier, under $0.001
    with pytest.raises(InvalidRequestError, match="param prefer='fastest' is not valid"):
        client.run("urn:orchlab:select:prefer=fastest", ASK)
    with pytest.raises(UnknownProviderError, match="did you mean 'cloud'"):
        client.run("urn:orchlab:select:providers=clod", ASK)


def test_a_python_call_and_auto_route_to_a_selector(
    ollama: OllamaWireServer, cloud: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    rule = "{capability: code, providers: [cloud]}"
    client = client_for(
        config(
            ollama.url, cloud.base_url, select=rule, extra="routing: {routes: {summarization: llm.review}}"
        )
    )
    r = client.complete("Summarize this in one sentence: pools spread load.", strategy="auto")
    assert r.decision.task_type == "summarization"
    assert r.decision.winner == "cloud:coder-fast"  # summarization -> tier fast (the default table)
    r = client.complete("hi", role="llm.review", tier="advanced")
    assert r.decision.winner == "cloud:coder-pro"


def test_select_config_errors_are_located(write_config: Callable[[str], object]) -> None:
    import orchlab
    from orchlab.errors import ConfigValidationError

    path = write_config(
        "project: t\nproviders:\n  p: {type: ollama}\nroles:\n"
        "  r: {provider: p, model: m, select: {capability: code}}\n"
        "  s: {select: {capability: telepathy}}\n"
        "  u: {select: {capability: code}, strategy: parallel}\n"
    )
    with pytest.raises(ConfigValidationError) as caught:
        orchlab.get_llm_client(path)
    assert str(caught.value).splitlines()[1:] == [
        "  roles.r (line 5): select: picks the role's model: give no provider:/model: or candidates:",
        "  roles.s.select.capability (line 6): Input should be 'chat', 'code', 'reasoning', 'vision', "
        "'tools' or 'embedding' (got 'telepathy')",
        "  roles.u (line 7): select: runs the select logic, not strategy parallel",
    ]
