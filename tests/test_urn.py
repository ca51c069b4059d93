"""URNs (issue 12 item 4): ``urn:<namespace>:<logic-id>:<params>`` parsed into a plan, and
``run`` / ``arun`` / ``stream`` / ``complete`` on a URN."""

from __future__ import annotations

from typing import Any

import pytest

from orchlab.config.schema import Strategy
from orchlab.errors import InvalidRequestError, UnknownRoleError
from orchlab.strategies.base import EnsembleMode
from orchlab.strategies.urn import Urn, is_urn, parse_urn
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

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
roles:
  llm.inference: {provider: a, model: m}
  chain: {provider: a, model: down, fallbacks: ["b:m"], retry: {retries: 0}}
"""
Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for: Any) -> Any:
    return client_for(CONFIG)


def _targets(response: Any) -> list[tuple[str, str, str]]:
    return [(a.stage, f"{a.provider}:{a.model}", a.outcome) for a in response.decision.attempts]


# --- parsing ------------------------------------------------------------------------------------


def test_parse_a_race_with_its_candidates() -> None:
    urn = parse_urn("urn:orchlab:race:candidates=openai:gpt-4.1-mini,local:gemma-3-270m")
    assert urn == Urn(
        "urn:orchlab:race:candidates=openai:gpt-4.1-mini,local:gemma-3-270m",
        "orchlab",
        Strategy.PARALLEL,
        candidates=("openai:gpt-4.1-mini", "local:gemma-3-270m"),
    )


def test_parse_a_role() -> None:
    urn = parse_urn("urn:orchlab:role:llm.inference")
    assert (urn.strategy, urn.role, urn.candidates) == (None, "llm.inference", ())


def test_parse_params_split_on_semicolon_or_ampersand_and_parsed_by_the_logic() -> None:
    urn = parse_urn("urn:orchlab:cascade:candidates=a:m1,b:m2;threshold=0.8&scorer=logprob")
    assert urn.strategy is Strategy.CASCADE
    assert urn.candidates == ("a:m1", "b:m2")
    assert dict(urn.options) == {"threshold": 0.8, "scorer": "logprob"}


def test_parse_percent_decodes_values_after_splitting() -> None:
    urn = parse_urn("urn:ORCHLAB:ensemble:candidates=a:m%2Cx,b:m;mode=vote;judge=a%3Aj%3Bk")
    assert urn.namespace == "orchlab"
    assert urn.candidates == ("a:m,x", "b:m")
    assert dict(urn.options) == {"mode": "vote", "judge": "a:j;k"}


def test_parse_a_logic_over_a_roles_candidates() -> None:
    urn = parse_urn("urn:orchlab:fallback:role=chain")
    assert (urn.strategy, urn.role, urn.candidates) == (Strategy.FALLBACK, "chain", ())


def test_parse_auto_needs_no_candidates_and_logic_ids_ignore_case() -> None:
    urn = parse_urn("urn:orchlab:AUTO:tier=fast")
    assert (urn.strategy, urn.candidates, dict(urn.options)) == (Strategy.AUTO, (), {"tier": "fast"})


def test_a_urn_auto_plans_on_the_default_role(client: Any) -> None:
    from orchlab.strategies.answer import plan_for_target

    plan = plan_for_target(client, "urn:orchlab:auto:tier=fast")
    assert (plan.strategy, plan.role, plan.tier) == (Strategy.AUTO, "llm.inference", "fast")


def test_the_parser_is_public() -> None:
    import orchlab.strategies

    assert orchlab.strategies.parse_urn is parse_urn and orchlab.strategies.Urn is Urn
    assert {"parse_urn", "Urn"} <= set(orchlab.strategies.__all__)


def test_is_urn() -> None:
    assert [is_urn(t) for t in ("urn:orchlab:role:x", "URN:orchlab:role:x", "a:m", "chain", None)] == [
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("urn:acme:race:candidates=a:m", ["unknown namespace 'acme'", "known: orchlab"]),
        ("urn:orchlab:rase:candidates=a:m", ["unknown logic 'rase'", "did you mean 'race'"]),
        ("urn:orchlab:cascad:candidates=a:m", ["unknown logic 'cascad'", "did you mean 'cascade'"]),
        ("urn:orchlab:race:candidates=a:m;treshold=0.8", ["has no param 'treshold'", "threshold"]),
        (
            "urn:orchlab:race:candidates=a:m;threshold=1.5",
            ["threshold='1.5' is not valid", "between 0 and 1"],
        ),
        ("urn:orchlab:cascade:candidates=a:m;scorer=magic", ["scorer='magic'", "logprob"]),
        ("urn:orchlab:ensemble:candidates=a:m;mode=shout", ["mode='shout'", "vote"]),
        ("urn:orchlab:race:candidates=a:m,,b:m", ["candidates='a:m,,b:m' has an empty target"]),
        ("urn:orchlab:race:threshold=0.5", ["logic 'race' needs candidates="]),
        ("urn:orchlab:race:candidates=a:m;threshold", ["param 'threshold' is not name=value"]),
        ("urn:orchlab:race:candidates=a:m;threshold=", ["param 'threshold' has no value"]),
        ("urn:orchlab:race:candidates=a:m;candidates=b:m", ["param 'candidates' is given twice"]),
        ("urn:orchlab:role:", ["no role after 'role:'"]),
        ("orchlab:race", ["is not a URN"]),
    ],
)
def test_parse_names_the_bad_part(text: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_urn(text)
    message = str(info.value)
    assert all(w in message for w in words), message
    if text.startswith("urn:"):
        assert repr(text) in message


# --- end to end ---------------------------------------------------------------------------------


def test_run_a_urn_race_whose_trail_shows_its_candidates(client: Any) -> None:
    r = client.run("urn:orchlab:race:candidates=a:slow,b:fast", Q)
    assert r.content == "fast answer here" and r.target == "b:fast"
    d = r.decision
    assert d.strategy == "parallel" and d.winner == "b:fast"
    assert {f"{a.provider}:{a.model}": a.outcome for a in d.attempts} == {
        "a:slow": "cancelled",
        "b:fast": "ok",
    }


async def test_arun_a_urn_role(client: Any) -> None:
    r = await client.arun("urn:orchlab:role:llm.inference", Q)
    assert r.content == "alpha beta gamma" and r.target == "a:m"
    assert r.cost_usd > 0


def test_run_a_urn_fallback_over_a_roles_candidates(client: Any) -> None:
    r = client.run("urn:orchlab:fallback:role=chain", Q)
    assert r.content == "from b"
    assert _targets(r) == [("fallback 1", "a:down", "error"), ("fallback 2", "b:m", "ok")]


def test_run_a_urn_cascade_with_its_params(client: Any) -> None:
    # neither answer is JSON: the json scorer escalates from a:m to b:m
    r = client.run("urn:orchlab:cascade:candidates=a:m,b:m;scorer=json;threshold=0.5", Q)
    assert r.decision.strategy == "cascade"
    assert [f"{a.provider}:{a.model}" for a in r.decision.attempts] == ["a:m", "b:m"]


def test_run_provider_model_target(client: Any) -> None:
    r = client.run("b:m", Q)
    assert r.content == "from b" and r.target == "b:m"


def test_stream_a_urn_race(client: Any) -> None:
    stream = client.stream("urn:orchlab:race:candidates=a:slow,b:fast", Q)
    deltas = list(stream)
    r = stream.response
    assert "".join(deltas) == r.content == "fast answer here" and len(deltas) >= 2
    assert {f"{a.provider}:{a.model}": a.outcome for a in r.decision.attempts} == {
        "a:slow": "cancelled",
        "b:fast": "ok",
    }


def test_stream_a_urn_role(client: Any) -> None:
    stream = client.stream("urn:orchlab:role:llm.inference", Q)
    assert "".join(stream) == "alpha beta gamma" == stream.response.content


def test_complete_takes_a_urn_as_role(client: Any) -> None:
    r = client.complete("What is 2+2?", role="urn:orchlab:ensemble:candidates=a:m,b:m,a:m;mode=vote")
    assert r.content == "alpha beta gamma" and r.decision.strategy == "ensemble"
    assert len(r.decision.attempts) == 3


def test_complete_refuses_a_urn_with_its_own_strategy(client: Any) -> None:
    with pytest.raises(InvalidRequestError, match="do not pass strategy="):
        client.complete("hi", role="urn:orchlab:race:candidates=a:m,b:m", strategy="cascade")


def test_a_bad_candidate_is_named(client: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        client.run("urn:orchlab:race:candidates=a:m,nowhere:m", Q)
    assert "candidate 'nowhere:m'" in str(info.value)
    with pytest.raises(InvalidRequestError) as info:
        client.run("urn:orchlab:race:candidates=a:m,chian", Q)
    assert "candidate 'chian'" in str(info.value) and "chain" in str(info.value)


def test_an_unknown_role_urn_suggests(client: Any) -> None:
    with pytest.raises(UnknownRoleError, match=r"llm\.inference"):
        client.run("urn:orchlab:role:llm.inferense", Q)


def test_an_unknown_namespace_is_refused_before_anything_is_sent(client: Any) -> None:
    with pytest.raises(InvalidRequestError, match="known: orchlab"):
        client.run("urn:acme:race:candidates=a:m", Q)
    assert client.usage().empty


def test_ensemble_mode_reaches_the_plan(client: Any) -> None:
    from orchlab.strategies.answer import plan_for_target

    plan = plan_for_target(client, "urn:orchlab:ensemble:candidates=a:m,b:m;mode=chain")
    assert plan.strategy is Strategy.ENSEMBLE and plan.mode is EnsembleMode.CHAIN
    assert [c.target for c in plan.candidates] == ["a:m", "b:m"]


# --- against the loopback OpenAI wire server (the SDK on the wire) -------------------------------


def _wire_config(one: str, two: str) -> str:
    return f"""
project: t
tracking: {{enabled: false}}
providers:
  near: {{type: vllm, api_base: "{one}"}}
  far: {{type: vllm, api_base: "{two}"}}
roles:
  llm.inference: {{provider: near, model: big}}
"""


def test_a_urn_race_on_the_wire(client_for: Any, openai_server: OpenAIWireServer) -> None:
    with OpenAIWireServer() as far:
        client = client_for(_wire_config(openai_server.base_url, far.base_url))
        openai_server.push(
            Reply(body=completion_body("4", model="small", prompt_tokens=7, completion_tokens=1))
        )
        far.push(
            Reply(
                body=completion_body("four", model="other", prompt_tokens=7, completion_tokens=1), delay_s=1.0
            )
        )
        r = client.run("urn:orchlab:race:candidates=near:small,far:other", Q)
    assert r.content == "4" and r.target == "near:small"
    assert _targets(r) == [("race 1", "near:small", "ok"), ("race 2", "far:other", "cancelled")]
    assert [q.body["model"] for q in openai_server.requests] == ["small"]


def test_stream_a_urn_role_on_the_wire(client_for: Any, openai_server: OpenAIWireServer) -> None:
    client = client_for(_wire_config(openai_server.base_url, openai_server.base_url))
    stream = client.stream("urn:orchlab:role:llm.inference", [{"role": "user", "content": "one two three"}])
    deltas = list(stream)
    assert deltas == ["echo: ", "one ", "two ", "three "]
    assert stream.response.content == "echo: one two three " and stream.response.decision.strategy == "single"
    assert (
        openai_server.requests[0].body["model"] == "big" and openai_server.requests[0].body["stream"] is True
    )
