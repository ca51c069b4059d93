"""The strategy API: enums, YAML keys, ``complete`` / ``ensemble``, ``run`` honouring ``strategy:``,
the decision trail and how usage and cost roll up."""

from __future__ import annotations

import typing

import pytest

import orchlab
from orchlab.config import schema
from orchlab.errors import ConfigValidationError, InvalidRequestError, UnknownProviderError, UnknownRoleError
from orchlab.strategies import EnsembleMode, Strategy, TaskType
from orchlab.testing import ManualClock, Step

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  a: {type: test, options: {models: {m: {reply: "alpha beta gamma"}, n: {reply: "from n"}}}}
  b: {type: test, options: {models: {m: {reply: "from b"}}}}
  home: {type: test_local, options: {models: {m: {reply: "at home"}}}}
models:
  "a:m": {input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
  "b:m": {input_price_per_mtok: 4.0, output_price_per_mtok: 8.0}
roles:
  plain: {provider: a, model: m}
  chain: {provider: a, model: m, fallbacks: ["b:m"]}
  lf: {provider: a, model: m, strategy: local_first, candidates: ["home:m"]}
envs:
  prod:
    roles:
      plain: {provider: a, model: m, strategy: cloud_first, candidates: ["home:m", "b:m"]}
"""

Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for):
    return client_for(CONFIG)


def test_enums_are_exactly_as_specified_and_match_the_yaml_schema() -> None:
    assert {s.name: s.value for s in Strategy} == {
        "SINGLE": "single",
        "FALLBACK": "fallback",
        "AUTO": "auto",
        "LOCAL_ONLY": "local",
        "CLOUD_ONLY": "cloud",
        "LOCAL_FIRST": "local_first",
        "CLOUD_FIRST": "cloud_first",
        "ENSEMBLE": "ensemble",
        "PARALLEL": "parallel",
        "CASCADE": "cascade",
        "SELECT": "select",
    }
    assert [m.value for m in EnsembleMode] == ["vote", "chain", "judge", "fuse"]
    assert [t.value for t in TaskType] == [
        "code_generation",
        "code_review",
        "reasoning",
        "summarization",
        "error_diagnosis",
        "data_interpretation",
        "workflow_generation",
        "general",
    ]
    assert schema.Strategy is Strategy  # the YAML's strategy: is validated against the one enum
    assert set(typing.get_args(schema.TaskTypeName)) == {t.value for t in TaskType}
    assert Strategy("local_first") is Strategy.LOCAL_FIRST and Strategy.PARALLEL == "parallel"


def test_a_role_without_a_strategy_stays_a_plain_call(client) -> None:
    r = client.run("plain", Q)
    assert r.decision.strategy == "single" and len(r.decision.attempts) == 1
    assert r.decision.attempts[0].stage is None
    r = client.complete("What is 2+2?", role="plain")
    assert r.decision.strategy == "single" and r.content == "alpha beta gamma"


def test_stream_runs_a_role_with_a_strategy_instead_of_skipping_it(client) -> None:
    for role, strategy, target in [("chain", "fallback", "a:m"), ("lf", "local_first", "home:m")]:
        stream = client.stream(role, Q)
        text = stream.text()
        assert stream.response is not None and text == stream.response.content
        assert stream.response.decision.strategy == strategy and stream.response.target == target
    assert [c.model for c in client.provider("home").calls] == ["m"]  # local first: home streamed
    stream = client.stream("plain", Q)  # no strategy: the plain stream
    assert stream.text() == "alpha beta gamma" and stream.response is not None
    assert stream.response.decision is not None and stream.response.decision.strategy == "single"


def test_complete_prompt_system_and_params(client) -> None:
    r = client.complete("What is 2+2?", role="plain", system="Be brief.", max_tokens=2)
    assert r.content == "alpha beta"
    call = client.provider("a").calls[-1]
    assert [(m.role, m.content) for m in call.messages] == [("system", "Be brief."), ("user", "What is 2+2?")]
    assert call.params.max_tokens == 2
    r = client.complete(Q, role="chain", temperature=0.3)
    assert client.provider("a").calls[-1].params.temperature == 0.3


def test_model_overrides_the_roles_model_and_runs_without_a_role(client) -> None:
    r = client.complete("hi", model="a:n")
    assert r.content == "from n" and r.decision.strategy == "single"
    r = client.complete("hi", role="chain", model="a:n")
    assert r.content == "from n" and r.decision.strategy == "fallback"
    client.provider("a").script("n", Step(error="unavailable"), Step(error="unavailable"))
    client.health.clock = ManualClock()
    r = client.complete("hi", role="chain", model="a:n")
    assert r.content == "from b"


def test_no_role_no_model_means_auto_on_the_default_role(client) -> None:
    r = client.complete("Hello there")
    assert r.decision.strategy == "auto" and r.decision.task_type == "general"
    assert r.role == "plain" and r.content == "alpha beta gamma"  # the first role in the YAML
    assert "no route: role 'plain' (single)" in r.decision.rationale


def test_call_overrides_strategy_and_candidates_and_rebinding(client) -> None:
    r = client.complete("hi", role="lf", strategy="cloud_first")
    assert r.target == "a:m"
    r = client.complete("hi", role="plain", candidates=["home:m", "b:m"], strategy=Strategy.LOCAL_ONLY)
    assert r.target == "home:m"
    r = client.complete("hi", candidates=["plain", "b:m"], strategy="cloud_first")
    assert r.target == "a:m" and r.decision.attempts[0].provider == "a"
    client.rebind("lf", "b:m")
    r = client.run("lf", Q)
    assert r.target == "home:m"
    r = client.complete("hi", role="lf", strategy="cloud")
    assert r.target == "b:m"


def test_env_overlay_can_give_a_role_a_strategy(write_config) -> None:
    c = orchlab.get_llm_client(write_config(CONFIG), env="prod")
    r = c.run("plain", Q)
    assert r.decision.strategy == "cloud_first"
    assert [a.provider for a in r.decision.attempts] == ["a"]
    c.close()


def test_bad_names_say_what_exists(client) -> None:
    with pytest.raises(
        InvalidRequestError,
        match=r"unknown logic 'fastest' \(built-in: auto, local, cloud, .*; installed: none\)",
    ):
        client.complete("hi", role="plain", strategy="fastest")
    with pytest.raises(InvalidRequestError, match="unknown task type 'poetry'"):
        client.complete("hi", role="plain", strategy="auto", task_type="poetry")
    with pytest.raises(UnknownRoleError, match="did you mean 'plain'"):
        client.complete("hi", role="plian")
    with pytest.raises(UnknownRoleError):
        client.complete("hi", candidates=["nosuchrole"])


def test_yaml_strategy_keys_are_strict(write_config) -> None:
    def load(role: str) -> None:
        orchlab.load_config(
            write_config(f"project: t\nproviders: {{a: {{type: test}}}}\nroles:\n  r: {role}\n")
        )

    with pytest.raises(ConfigValidationError, match=r"roles\.r\.strategy"):
        load("{provider: a, model: m, strategy: fastest}")
    with pytest.raises(ConfigValidationError, match=r"roles\.r\.candidates\[0\]"):
        load("{provider: a, model: m, candidates: [nocolon]}")
    with pytest.raises(ConfigValidationError, match=r"roles\.r\.cascade\.treshold"):
        load("{provider: a, model: m, strategy: cascade, cascade: {treshold: 0.5}}")
    with pytest.raises(ConfigValidationError, match=r"roles\.r\.ensemble\.mode"):
        load("{provider: a, model: m, strategy: ensemble, ensemble: {mode: best}}")
    with pytest.raises(UnknownProviderError, match=r"roles\.r\.candidates: provider 'zz'"):
        load('{provider: a, model: m, candidates: ["zz:m"]}')
    with pytest.raises(UnknownRoleError, match=r"roles\.r\.ensemble\.judge"):
        load("{provider: a, model: m, strategy: ensemble, ensemble: {mode: judge, judge: jj}}")
    load('{provider: a, model: m, strategy: cascade, candidates: [{target: "a:n", threshold: 0.9}]}')


def test_usage_and_cost_roll_up_over_every_attempt(client) -> None:
    client.provider("a").script("m", Step(content="wrong"))
    r = client.complete("What is 2+2?", role="chain", strategy="cascade", scorer=lambda t: t != "wrong")
    rejected, winner = r.decision.attempts
    assert (rejected.outcome, winner.outcome) == ("rejected", "ok")
    assert rejected.cost_usd == pytest.approx((3 * 1.0 + 1 * 2.0) / 1e6)
    assert winner.cost_usd == pytest.approx((3 * 4.0 + 2 * 8.0) / 1e6)
    assert r.cost_usd == pytest.approx(rejected.cost_usd + winner.cost_usd)
    assert r.cost_usd == r.decision.total_cost_usd and r.cost_note is None
    # usage is the total too; the winner's own usage is on its attempt
    assert (r.usage.input_tokens, r.usage.output_tokens) == (6, 3)
    assert (winner.usage.input_tokens, winner.usage.output_tokens) == (3, 2)


def test_unknown_prices_make_the_total_unknown_with_a_note(client) -> None:
    r = client.complete("hi", role="plain", candidates=["a:n", "a:m"], strategy="ensemble")
    assert r.cost_usd is None
    assert r.cost_note is not None and r.cost_note.startswith("cost unknown for 1 of 2 attempts: a:n (ok)")


def test_the_trail_explains_itself(client) -> None:
    client.provider("a").script("m", Step(error="auth"))
    r = client.run("chain", Q)
    text = r.decision.explain()
    lines = text.splitlines()
    assert lines[0] == "strategy: fallback  winner: b:m"
    assert lines[1].startswith("why: b:m answered after 1 failed: a:m (AuthenticationError) in ")
    assert lines[2].split() == [
        "#",
        "stage",
        "target",
        "outcome",
        "latency",
        "tokens",
        "cost",
        "score",
        "note",
    ]
    assert (
        "fallback 1" in lines[3] and "error" in lines[3] and "AuthenticationError: a:m [HTTP 401]" in lines[3]
    )
    assert "fallback 2" in lines[4] and "3/2" in lines[4] and "$0.000028" in lines[4]
    assert lines[-1] == "total: 2 attempts, tokens 3/2, cost $0.000028"
