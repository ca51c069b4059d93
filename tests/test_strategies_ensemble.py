"""ENSEMBLE: vote, chain, judge, fuse."""

from __future__ import annotations

import re

import pytest

from orchlab.errors import AllAttemptsFailedError, InvalidRequestError
from orchlab.strategies import EnsembleMode
from orchlab.strategies.ensemble import REFINE_PROMPT
from orchlab.testing import Step

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  a: {type: test, options: {models: {m: {reply: "Four.", latency_s: 0.003}}}}
  b: {type: test, options: {models: {m: {reply: "four"}}}}
  c: {type: test, options: {models: {m: {reply: "5"}}}}
  d: {type: test, options: {models: {m: {reply: "5"}}}}
  j: {type: test, options: {models: {judge: {reply: "Answer 2"}, agg: {reply: "fused answer"}}}}
models:
  "a:m": {input_price_per_mtok: 1.0, output_price_per_mtok: 1.0}
  "b:m": {input_price_per_mtok: 2.0, output_price_per_mtok: 2.0}
  "c:m": {input_price_per_mtok: 3.0, output_price_per_mtok: 3.0}
  "d:m": {input_price_per_mtok: 3.0, output_price_per_mtok: 3.0}
  "j:judge": {input_price_per_mtok: 5.0, output_price_per_mtok: 5.0}
  "j:agg": {input_price_per_mtok: 5.0, output_price_per_mtok: 5.0}
roles:
  ens: {provider: a, model: m, strategy: ensemble, candidates: ["b:m", "c:m"]}
  judged:
    provider: a
    model: m
    strategy: ensemble
    candidates: ["b:m", "c:m"]
    ensemble: {mode: judge, judge: "j:judge"}
  fused:
    provider: a
    model: m
    strategy: ensemble
    candidates: ["b:m", "c:m"]
    ensemble: {mode: fuse, aggregator: "j:agg"}
  chained: {provider: a, model: m, strategy: ensemble, candidates: ["b:m", "c:m"], ensemble: {mode: chain}}
"""

Q = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(client_for):
    return client_for(CONFIG)


def test_vote_picks_the_majority_of_normalised_answers(client) -> None:
    r = client.run("ens", Q)
    assert r.content == "Four." and r.target == "a:m"  # "Four." and "four" agree
    assert r.decision.scores["agreement"] == pytest.approx(2 / 3)
    assert [(a.provider, a.outcome) for a in r.decision.attempts] == [
        ("a", "ok"),
        ("b", "ok"),
        ("c", "rejected"),
    ]
    assert [a.confidence for a in r.decision.attempts] == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert r.decision.rationale == "vote: 2/3 answers agree on 'four'"
    # every voter is paid for (3 words in, 1 out each)
    assert r.cost_usd == pytest.approx((4 * 1.0 + 4 * 2.0 + 4 * 3.0) / 1e6)
    assert r.usage.input_tokens == 9 and r.usage.output_tokens == 3


def test_vote_tie_goes_to_the_earliest_candidate(client) -> None:
    client.provider("a").script("m", "x")
    client.provider("b").script("m", "y")
    client.provider("c").script("m", "y")
    client.provider("d").script("m", "x")
    r = client.ensemble("q", models=["a:m", "b:m", "c:m", "d:m"])
    assert r.content == "x" and r.target == "a:m"
    assert r.decision.scores["agreement"] == 0.5
    assert "tie with 1 other answer(s) broken by candidate order" in r.decision.rationale
    # the same answers in another candidate order: the other group wins
    for name, reply in (("a", "x"), ("b", "y"), ("c", "y"), ("d", "x")):
        client.provider(name).script("m", reply)
    r = client.ensemble("q", models=["b:m", "a:m", "c:m", "d:m"])
    assert r.content == "y" and r.target == "b:m"


def test_vote_empty_answers_abstain_and_custom_normaliser(client) -> None:
    client.provider("a").script("m", "")
    client.provider("b").script("m", "5")
    r = client.run("ens", Q)
    assert r.content == "5" and r.decision.scores["agreement"] == 1.0
    assert r.decision.attempts[0].note == "empty answer: abstained"

    client.provider("a").script("m", "The answer is 4")
    client.provider("b").script("m", "4, obviously")
    client.provider("c").script("m", "5")

    def digits(text: str) -> str:
        return "".join(re.findall(r"\d", text))

    r = client.ensemble("q", role="ens", normalizer=digits)
    assert r.content == "The answer is 4" and r.decision.scores["agreement"] == pytest.approx(2 / 3)


def test_chain_drafts_then_refines(client) -> None:
    client.provider("b").script("m", "four, since 2+2=4")
    client.provider("c").script("m", "4 (2 + 2 = 4)")
    r = client.run("chained", Q)
    assert r.content == "4 (2 + 2 = 4)" and r.target == "c:m"
    assert [a.stage for a in r.decision.attempts] == ["chain 1 draft", "chain 2 refine", "chain 3 refine"]
    refine_call = client.provider("b").calls[-1]
    assert [m.role for m in refine_call.messages] == ["user", "assistant", "user"]
    assert refine_call.messages[1].content == "Four." and refine_call.messages[2].content == REFINE_PROMPT
    assert client.provider("c").calls[-1].messages[1].content == "four, since 2+2=4"
    assert r.decision.rationale == "chain: a:m drafted -> b:m refined -> c:m refined"
    # a failing refiner keeps the draft
    client.provider("c").script("m", Step(error="unavailable"))
    r = client.run("chained", Q)
    assert r.content == "four" and "c:m failed to refine (ProviderUnavailableError): kept the draft" in (
        r.decision.rationale
    )


def test_judge_picks_best_of_n(client) -> None:
    r = client.run("judged", Q)
    assert r.content == "four" and r.target == "b:m"
    assert r.decision.scores == {"choice": 2.0}
    outcomes = [(a.stage, a.provider, a.outcome) for a in r.decision.attempts]
    assert outcomes == [
        ("answer 1", "a", "rejected"),
        ("answer 2", "b", "ok"),
        ("answer 3", "c", "rejected"),
        ("judge", "j", "ok"),
    ]
    prompt = client.provider("j").calls[0].prompt
    assert "Answer 1:\nFour." in prompt and "Answer 3:\n5" in prompt and "What is 2+2?" in prompt
    assert "j:judge picked answer 2 of 3, from b:m" in r.decision.rationale
    assert r.cost_usd == pytest.approx(sum(a.cost_usd for a in r.decision.attempts))


def test_judge_without_a_usable_verdict_falls_back_to_the_vote(client) -> None:
    client.provider("j").script("judge", "they are all fine")
    r = client.run("judged", Q)
    assert r.content == "Four."
    assert r.decision.rationale.startswith("judge: the judge's verdict names no answer 1-3")
    assert "fell back to the vote: vote: 2/3" in r.decision.rationale


def test_judge_defaults_to_the_first_candidate(client) -> None:
    client.provider("a").script("m", "Four.", "3")  # its answer, then its verdict
    r = client.ensemble("What is 2+2?", role="ens", mode=EnsembleMode.JUDGE)
    assert r.target == "c:m"
    assert r.decision.attempts[-1].stage == "judge" and r.decision.attempts[-1].provider == "a"


def test_fuse_aggregates_every_answer(client) -> None:
    r = client.run("fused", Q)
    assert r.content == "fused answer" and r.target == "j:agg"
    prompt = client.provider("j").calls[0].prompt
    assert all(f"Answer {i}:" in prompt for i in (1, 2, 3))
    assert [a.stage for a in r.decision.attempts] == ["propose 1", "propose 2", "propose 3", "aggregate"]
    assert all(a.outcome == "ok" for a in r.decision.attempts)
    assert "fuse: j:agg synthesised 3 answers (a:m, b:m, c:m)" in r.decision.rationale
    client.provider("j").script("agg", Step(error="unavailable"))
    r = client.run("fused", Q)
    assert r.content == "Four." and "the aggregator j:agg failed" in r.decision.rationale


def test_ensemble_survives_some_failures_and_groups_all_of_them(client) -> None:
    client.provider("a").script("m", Step(error="unavailable"))
    r = client.run("ens", Q)
    assert r.content == "four" and r.decision.scores["agreement"] == 0.5
    for name in ("a", "b", "c"):
        client.provider(name).script("m", Step(error="auth"))
    with pytest.raises(AllAttemptsFailedError) as info:
        client.run("ens", Q)
    assert len(info.value.exceptions) == 3


def test_bad_mode(client) -> None:
    with pytest.raises(InvalidRequestError, match="unknown ensemble mode 'best'"):
        client.ensemble("q", role="ens", mode="best")


async def test_async_ensemble(client) -> None:
    r = await client.aensemble("What is 2+2?", models=["a:m", "b:m"], mode="fuse", aggregator="j:agg")
    assert r.content == "fused answer"
    assert r.decision.strategy == "ensemble"


@pytest.mark.slow
def test_every_mode_with_the_real_local_model(client_for, gguf_path) -> None:
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 1024}}}}
        roles:
          r:
            provider: local
            model: gemma-3-270m
            strategy: ensemble
            candidates:
              - "local:gemma-3-270m"
              - {{target: "local:gemma-3-270m", params: {{max_tokens: 2}}}}
            params: {{temperature: 0, max_tokens: 8}}
        """
    )
    # vote: two identical 8-token answers outvote the 2-token one (temperature 0 is repeatable)
    r = c.run("r", Q)
    first, second, short = r.decision.attempts
    assert first.output == second.output and first.output != short.output
    assert r.content == first.output and short.outcome == "rejected"
    assert r.decision.scores["agreement"] == pytest.approx(2 / 3)
    assert short.usage.output_tokens <= 2 < first.usage.output_tokens
    assert r.cost_usd == 0.0

    r = c.ensemble("What is 2+2?", role="r", mode="chain", models=["local:gemma-3-270m"] * 2)
    draft, refined = r.decision.attempts
    assert draft.stage == "chain 1 draft" and refined.stage == "chain 2 refine"
    assert draft.usage.output_tokens > 0 and refined.usage.input_tokens > draft.usage.input_tokens
    assert r.content == refined.output or "kept the previous draft" in (refined.note or "")

    r = c.ensemble("What is 2+2?", role="r", mode="judge")
    assert [a.stage for a in r.decision.attempts] == ["answer 1", "answer 2", "answer 3", "judge"]
    verdict = r.decision.attempts[-1]
    assert verdict.usage.output_tokens > 0
    # a 270M base model may or may not name an answer: either way the trail says what happened
    assert "picked answer" in r.decision.rationale or "fell back to the vote" in r.decision.rationale

    r = c.ensemble("What is 2+2?", role="r", mode="fuse")
    assert r.decision.attempts[-1].stage == "aggregate" and r.content == r.decision.attempts[-1].output
    assert r.decision.winner == "local:gemma-3-270m"
    assert r.usage.output_tokens == sum(a.usage.output_tokens for a in r.decision.attempts)
