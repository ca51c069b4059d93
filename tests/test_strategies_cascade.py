"""CASCADE: escalate exactly when the stage's score is under its threshold."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel

import orchlab
from orchlab.errors import AllAttemptsFailedError, ConfigValidationError, InvalidRequestError
from orchlab.strategies import AgreementScorer, scorers
from orchlab.testing import ManualClock, Step

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  cheap: {type: test, options: {models: {m: {reply: "cheap answer", logprob: -0.5}}}}
  mid: {type: test, options: {models: {m: {reply: "mid answer", logprob: -0.1}}}}
  top: {type: test, options: {models: {m: {reply: "top answer"}}}}
  judge: {type: test, options: {models: {j: {reply: "7"}}}}
models:
  "cheap:m": {input_price_per_mtok: 0.1, output_price_per_mtok: 0.2}
  "mid:m": {input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}
  "top:m": {input_price_per_mtok: 10.0, output_price_per_mtok: 20.0}
  "judge:j": {input_price_per_mtok: 1.0, output_price_per_mtok: 1.0}
roles:
  casc:
    provider: cheap
    model: m
    strategy: cascade
    candidates: ["mid:m", "top:m"]
    cascade: {scorer: logprob, threshold: 0.7}
  per_stage:
    provider: cheap
    model: m
    strategy: cascade
    candidates: [{target: "mid:m", threshold: 0.95, scorer: judge}, "top:m"]
    cascade: {scorer: logprob, threshold: 0.5, judge: "judge:j"}
  regex_role:
    provider: cheap
    model: m
    strategy: cascade
    candidates: ["top:m"]
    cascade: {scorer: regex, pattern: "^top", threshold: 1}
  agree:
    provider: cheap
    model: m
    strategy: cascade
    candidates: ["mid:m"]
    cascade: {scorer: agreement, samples: 3, threshold: 0.7}
  by_price:
    provider: top
    model: m
    strategy: cascade
    candidates: ["mid:m", "cheap:m"]
    cascade: {scorer: json, order: price, threshold: 1}
"""

Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for):
    c = client_for(CONFIG)
    c.health.clock = ManualClock()
    return c


def cost(provider_prices: tuple[float, float], n_in: int, n_out: int) -> float:
    return (n_in * provider_prices[0] + n_out * provider_prices[1]) / 1e6


def test_logprob_scorer_escalates_under_the_threshold_and_accepts_above(client) -> None:
    r = client.run("casc", Q)
    assert r.content == "mid answer"
    cheap, mid = r.decision.attempts
    assert (cheap.outcome, mid.outcome) == ("rejected", "ok")
    assert cheap.confidence == pytest.approx(math.exp(-0.5))  # 0.607 < 0.7
    assert mid.confidence == pytest.approx(math.exp(-0.1))  # 0.905 >= 0.7
    assert r.decision.scores == pytest.approx({"cheap:m": math.exp(-0.5), "mid:m": math.exp(-0.1)})
    # the scorer needs log-probs, so the cascade asked for them
    assert client.provider("cheap").calls[0].params.logprobs is True
    assert "stage 1 cheap:m: logprob score 0.607 < 0.7, escalated" in r.decision.rationale
    assert "stage 2 mid:m accepted: logprob score 0.905 >= 0.7" in r.decision.rationale
    # the rejected answer's cost is part of the total (3 words in, 2 out each)
    assert r.cost_usd == pytest.approx(cost((0.1, 0.2), 3, 2) + cost((1.0, 2.0), 3, 2))
    assert client.provider("top").calls == []


@pytest.mark.parametrize(
    ("threshold", "stages"),
    [(0.7, 1), (0.7000001, 2), (0.0, 1), (1.0, 2)],
)
def test_escalates_exactly_when_the_score_is_under_the_threshold(
    client, threshold: float, stages: int
) -> None:
    def score(text: str) -> float:
        return 0.7 if text == "cheap answer" else 1.0

    r = client.complete("q", role="casc", scorer=score, threshold=threshold)
    assert len(r.decision.attempts) == stages
    assert r.decision.attempts[0].outcome == ("ok" if stages == 1 else "rejected")


def test_validators_json_regex_and_pydantic(client) -> None:
    client.provider("cheap").script("m", "not json")
    client.provider("mid").script("m", '```json\n{"total": 4}\n```')
    r = client.complete("q", role="casc", scorer="json", threshold=1)
    assert r.target == "mid:m" and [a.confidence for a in r.decision.attempts] == [0.0, 1.0]

    r = client.run("regex_role", Q)  # YAML: regex '^top'
    assert r.target == "top:m" and r.decision.attempts[0].note.startswith(
        "regex '^top' score 0.000 < threshold 1"
    )

    class Total(BaseModel):
        total: int

    client.provider("cheap").script("m", '{"total": "four"}')
    client.provider("mid").script("m", '{"total": 4}')
    r = client.complete("q", role="casc", scorer=scorers.pydantic_model(Total), threshold=1)
    assert r.content == '{"total": 4}'
    assert "pydantic Total: passed" in r.decision.rationale


def test_agreement_samples_the_same_model(client) -> None:
    client.provider("cheap").script("m", "Four.", "four", "five")  # the answer, then two samples
    client.provider("mid").script("m", "4", "4", " 4 ")
    r = client.run("agree", Q)
    assert r.target == "mid:m" and r.content == "4"
    cheap_calls = client.provider("cheap").calls
    assert len(cheap_calls) == 3
    assert [c.params.temperature for c in cheap_calls[1:]] == [0.8, 0.8]
    assert sorted(c.params.seed for c in cheap_calls[1:]) == [2, 3]
    confidences = [a.confidence for a in r.decision.attempts if a.confidence is not None]
    assert confidences == pytest.approx([2 / 3, 1.0])
    stages = [a.stage for a in r.decision.attempts]
    assert stages.count("cascade 1") == 1 and "cascade 1 sample 2" in stages
    # 6 calls were paid for, not 2
    assert len(r.decision.attempts) == 6
    assert r.usage.output_tokens == sum(a.usage.output_tokens for a in r.decision.attempts)


def test_per_stage_scorer_and_threshold_from_the_yaml(client) -> None:
    client.provider("cheap").script("m", Step(content="cheap answer", logprobs=[-2.0]))
    r = client.run("per_stage", Q)
    assert r.target == "top:m"
    stages = [(a.stage, a.provider, a.outcome, a.confidence) for a in r.decision.attempts]
    assert stages[0] == ("cascade 1", "cheap", "rejected", pytest.approx(math.exp(-2.0)))
    assert stages[1] == ("cascade 2", "mid", "rejected", pytest.approx(0.7))  # judge said 7 -> 0.7 < 0.95
    assert stages[2][:3] == ("cascade 2 judge", "judge", "ok")
    assert stages[3][:3] == ("cascade 3", "top", "ok")
    judge_prompt = client.provider("judge").calls[0].prompt
    assert "What is 2+2?" in judge_prompt and "mid answer" in judge_prompt
    # the last stage is accepted whatever its score (the top model returns no log-probs)
    assert "stage 3 top:m is the last stage: accepted with logprob score unknown" in r.decision.rationale
    assert r.decision.attempts[3].confidence is None


def test_a_judge_scoring_on_a_0_to_1_scale_and_unparseable_verdicts() -> None:
    assert scorers.parse_rating("8") == 0.8
    assert scorers.parse_rating("Rating: 10/10") == 1.0
    assert scorers.parse_rating("0.85") == 0.85
    assert scorers.parse_rating("no idea") is None


def test_failed_stages_escalate_and_the_last_rejected_answer_survives(client) -> None:
    client.provider("cheap").script("m", Step(error="unavailable"), Step(error="unavailable"))
    r = client.run("casc", Q)
    assert r.target == "mid:m"
    assert [a.outcome for a in r.decision.attempts] == ["error", "error", "ok"]
    # every later stage fails: the best rejected answer is returned, and said so
    client.provider("mid").script("m", Step(error="auth"))
    client.provider("top").script("m", Step(error="auth"))
    r = client.run("casc", Q)
    assert r.target == "cheap:m" and r.decision.attempts[0].outcome == "ok"
    assert "returning the best-scored rejected answer" in r.decision.rationale


def test_every_stage_failing_raises_the_group(client) -> None:
    for name in ("cheap", "mid", "top"):
        client.provider(name).script("m", Step(error="auth"))
    with pytest.raises(AllAttemptsFailedError) as info:
        client.run("casc", Q)
    assert len(info.value.exceptions) == 3


def test_price_order_puts_the_cheapest_first(client) -> None:
    client.provider("cheap").script("m", '{"ok": true}')
    r = client.run("by_price", Q)
    assert [a.provider for a in r.decision.attempts] == ["cheap"]


def test_scorer_objects_and_bad_names(client) -> None:
    client.provider("cheap").script("m", "a", "a", "a", "a")
    r = client.complete("q", role="casc", scorer=AgreementScorer(samples=4), threshold=0.75)
    assert r.target == "cheap:m" and r.decision.attempts[0].confidence == 1.0
    with pytest.raises(InvalidRequestError, match="unknown scorer 'vibes'"):
        client.complete("q", role="casc", scorer="vibes")


def test_yaml_checks_scorer_settings(write_config) -> None:
    with pytest.raises(ConfigValidationError, match="scorer 'regex' needs pattern"):
        orchlab.load_config(
            write_config(
                """
                project: t
                providers: {a: {type: test}}
                roles: {r: {provider: a, model: m, strategy: cascade, cascade: {scorer: regex}}}
                """
            )
        )


async def test_async_cascade(client) -> None:
    r = await client.acomplete("What is 2+2?", role="casc")
    assert r.target == "mid:m" and r.decision.strategy == "cascade"


@pytest.mark.slow
def test_cascade_with_the_real_local_models_log_probs(client_for, gguf_path) -> None:
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
          cloud: {{type: test, options: {{models: {{big: {{reply: "4"}}}}}}}}
        roles:
          r:
            provider: local
            model: gemma-3-270m
            strategy: cascade
            candidates: ["cloud:big"]
            cascade: {{scorer: logprob, threshold: 0.999}}
            params: {{temperature: 0, max_tokens: 4}}
        """
    )
    # a bar the small model cannot clear: its answer is scored, rejected, and the cloud answers
    r = c.run("r", Q)
    local, _cloud = r.decision.attempts
    assert local.outcome == "rejected" and local.usage.output_tokens > 0
    assert local.confidence is not None and 0.0 < local.confidence < 0.999
    assert r.target == "cloud:big" and r.content == "4"
    # a low bar: the local answer is accepted; its confidence is exp(mean token log-prob)
    r = c.complete("What is 2+2?", role="r", threshold=0.05)
    (only,) = r.decision.attempts
    assert r.target == "local:gemma-3-270m" and r.logprobs
    assert only.confidence == pytest.approx(math.exp(sum(r.logprobs) / len(r.logprobs)))
    assert r.cost_usd == 0.0
