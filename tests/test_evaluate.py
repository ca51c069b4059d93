"""orchlab.evaluate: scorers on fixed inputs, the Wilson interval, the shipped set, the summary, MLflow
runs, and replay giving the live accuracy for the live policy.

The targets are the scriptable test provider: each answer is a function of the question and the
call's seed (temperature 0: the greedy answer), so votes and cascades have something to decide.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab import datasets
from orchlab.errors import InvalidRequestError
from orchlab.evaluation import scorers as sc
from orchlab.evaluation.stats import pareto_front, quantile, wilson_interval
from orchlab.orchestrator import Orchestrator
from orchlab.strategies import Logic
from orchlab.strategies.base import Answering, Outcome
from orchlab.strategies.registry import known_logics
from orchlab.types import ModelRequest
from tests.tracking_support import store_fixture, template_db_fixture  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n"

# --- scorers on fixed inputs ---------------------------------------------------------------------

GOLD = {"expected_response": "Paris"}


def verdict(scorer: sc.EvalScorer, answer: str | None, gold: dict | None = None) -> sc.Verdict:
    return scorer.score(answer, gold or GOLD, {"question": "What is the capital of France?"})


def test_exact_match_ignores_only_surrounding_space() -> None:
    assert verdict(sc.exact(), " Paris\n").passed is True
    assert verdict(sc.exact(), "paris").passed is False
    assert verdict(sc.exact(), None).passed is False


def test_normalised_match_ignores_case_spacing_quotes_and_final_punctuation() -> None:
    assert verdict(sc.normalised(), '  "PARIS."  ').passed is True
    assert verdict(sc.normalised(), "Paris, France").passed is False


def test_levenshtein_ratio_is_rapidfuzz_ratio_over_100() -> None:
    assert sc.levenshtein_ratio("kitten", "sitting") == pytest.approx(8 / 13)  # LCS "ittn"
    assert sc.levenshtein_ratio("", "") == 1.0
    assert sc.levenshtein_ratio("abc", "xyz") == 0.0
    v = verdict(sc.levenshtein(0.8), "Pariss")
    assert v.passed is True and v.value == pytest.approx(round(10 / 11, 4))
    assert verdict(sc.levenshtein(0.95), "Pariss").passed is False
    with pytest.raises(InvalidRequestError, match="between 0 and 1"):
        sc.levenshtein(1.5)


def test_contains_matches_whole_words_after_normalising() -> None:
    assert verdict(sc.contains(), "The capital of France is PARIS.").passed is True
    four = {"expected_response": "4"}
    assert verdict(sc.contains(), "2 + 2 = 4", four).passed is True
    assert verdict(sc.contains(), "It is 14", four).passed is False
    assert verdict(sc.contains(), "Parisian food").passed is False


def test_json_schema_checks_the_parsed_answer_fenced_or_not() -> None:
    schema = {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}
    scorer = sc.json_schema(schema)
    assert verdict(scorer, '```json\n{"age": 3}\n```').passed is True
    wrong = verdict(scorer, '{"age": "three"}')
    assert wrong.passed is False and "at age" in wrong.rationale
    assert verdict(scorer, "not json").passed is False
    with pytest.raises(InvalidRequestError, match="schema is not valid"):
        sc.json_schema({"type": "no-such-type"})


def test_a_scorer_without_the_gold_answer_says_what_is_missing() -> None:
    with pytest.raises(InvalidRequestError, match="expected_response"):
        sc.contains().score("Paris", {}, {})


def test_scorers_by_name_and_functions() -> None:
    assert isinstance(sc.as_scorer("contains"), sc.Contains)
    short = sc.as_scorer(lambda out, exp: len(out) < 10)
    assert short.score("Paris", GOLD, {}).passed is True
    with pytest.raises(InvalidRequestError, match="unknown scorer 'contain'"):
        sc.as_scorer("contain")


# --- numbers -------------------------------------------------------------------------------------


def test_wilson_interval_matches_published_values() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = wilson_interval(10, 10)
    assert round(low, 4) == 0.7225 and high == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_quantile_and_pareto_front() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
    assert quantile([], 0.5) is None
    # (cost, accuracy): the second is dominated by the first (cheaper and as good)
    assert pareto_front([(0.0, 0.5), (1.0, 0.5), (2.0, 0.9)]) == [True, False, True]


# --- the shipped set ----------------------------------------------------------------------------


def test_the_tqbpp_core_set_ships_with_its_licence() -> None:
    items = datasets.load("tqbpp_core_en")
    assert len(items) == 52
    assert items[0]["inputs"] == {
        "question": "What is the capital of France?",
        "context": "France is a country in Europe. Its capital is Paris.",
    }
    assert items[0]["expectations"] == {"expected_response": "Paris"}
    folder = datasets.path("tqbpp_core_en").parent
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "Vincent Koc" in (folder / "NOTICE").read_text()
    assert len({i["id"] for i in items}) == 52


def test_sample_is_seeded_and_keeps_the_set_order() -> None:
    items = datasets.load("tqbpp_core_en")
    a, b = datasets.sample(items, 8, seed=7), datasets.sample(items, 8, seed=7)
    assert [i["id"] for i in a] == [i["id"] for i in b]
    positions = [items.index(i) for i in a]
    assert positions == sorted(positions) and len(set(positions)) == 8
    assert [i["id"] for i in datasets.sample(items, 8, seed=8)] != [i["id"] for i in a]


def test_bad_datasets_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="item 1 needs 'inputs'"):
        datasets.as_items([{"inputs": {"q": "a"}}, {"question": "b"}])
    with pytest.raises(InvalidRequestError, match="item id '1' is used twice"):
        datasets.as_items([{"id": 1, "inputs": {"q": "a"}}, {"id": 1, "inputs": {"q": "b"}}])
    with pytest.raises(InvalidRequestError, match="dataset file not found"):
        datasets.as_items("nope.jsonl")
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"inputs": {"question": "q"}, "expectations": "a"}) + "\n")
    assert datasets.as_items(str(path))[0]["expectations"] == {"expected_response": "a"}


# --- evaluate on the test provider -------------------------------------------------------------

VOTERS = "\n".join(
    f'      - {{target: "fake:m", params: {{temperature: 0.7, seed: {s}}}}}' for s in (1, 2, 3, 4, 5)
)
CONFIG = f"""\
project: ev
providers:
  fake: {{type: test, options: {{models: {{m: {{reply: "unused"}}}}}}}}
models:
  "fake:m": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
roles:
  greedy: {{provider: fake, model: m, params: {{temperature: 0}}}}
  vote5:
    strategy: ensemble
    ensemble: {{mode: vote}}
    candidates:
{VOTERS}
  cascade:
    strategy: cascade
    cascade: {{scorer: agreement, samples: 2, sample_temperature: 0.7, threshold: 1.0}}
    candidates:
      - {{target: "fake:m", params: {{temperature: 0}}}}
      - strategy: ensemble
        options: {{mode: vote}}
        candidates:
{VOTERS.replace("      - ", "          - ")}
"""
ITEMS = [
    {
        "id": "a",
        "inputs": {"question": "capital of France?", "context": "Paris is it."},
        "expectations": "Paris",
    },
    {"id": "b", "inputs": {"question": "2 + 2?", "context": "It is 4."}, "expectations": "4"},
    {"id": "c", "inputs": {"question": "largest planet?", "context": "Jupiter."}, "expectations": "Jupiter"},
    {
        "id": "d",
        "inputs": {"question": "author of Hamlet?", "context": "Shakespeare."},
        "expectations": "Shakespeare",
    },
]
# per question: the greedy answer, then the answers sampled with seeds 1..5
ANSWERS = {
    "capital of France?": ("Paris", ["Paris", "Lyon", "Paris", "Paris", "Nice"]),
    "2 + 2?": ("5", ["4", "4", "5", "4", "3"]),
    "largest planet?": ("Saturn", ["Mars", "Jupiter", "Venus", "Earth", "Pluto"]),
    "author of Hamlet?": ("Marlowe", ["Marlowe", "Shakespeare", "Shakespeare", "Bacon", "Shakespeare"]),
}


def answer(request: ModelRequest) -> str:
    question = request.messages[-1].content
    if request.messages[0].role == "system":  # with the context: the right answer
        return {"a": "Paris", "b": "4", "c": "Jupiter", "d": "Shakespeare"}[
            next(i["id"] for i in ITEMS if i["inputs"]["question"] == question)
        ]
    greedy, sampled = ANSWERS[question]
    if not request.params.temperature:
        return greedy
    return sampled[(request.params.seed or 1) - 1 if (request.params.seed or 1) <= 5 else 0]


@pytest.fixture
def client(client_for: Callable[..., Orchestrator]) -> Orchestrator:
    made = client_for(CONFIG)
    made.provider("fake").respond_with("m", answer)
    return made


TARGETS = [
    "greedy",
    {"label": "greedy+context", "target": "greedy", "system": "{context}"},
    "vote5",
    "cascade",
]


def test_summary_counts_accuracy_cost_calls_escalation_and_agreement(client: Orchestrator) -> None:
    result = orchlab.evaluate(ITEMS, TARGETS, ["contains", "exact"], client=client, progress=False)
    s = result.summary
    assert s["n"].tolist() == [4, 4, 4, 4]
    # greedy: only Paris; with context: all; vote5: Paris, 4, Mars (all differ: first), Shakespeare
    assert s["accuracy"].tolist() == [0.25, 1.0, 0.75, 0.75]
    assert (round(s.loc["greedy", "ci_low"], 4), round(s.loc["greedy", "ci_high"], 4)) == (0.0456, 0.6994)
    assert s.loc["vote5", "mean_calls"] == 5
    assert s.loc["vote5", "agreement"] == pytest.approx((3 / 5 + 3 / 5 + 1 / 5 + 3 / 5) / 4)
    # cascade: greedy + 1 sample (seed 2 at 0.7); they agree only on the capital (Paris/Paris? no:
    # sample seed 2 is "Lyon") -> every item escalates to the vote
    assert s.loc["cascade", "escalation_rate"] == 1.0
    assert s.loc["greedy", "escalation_rate"] != s.loc["greedy", "escalation_rate"]  # NaN: not a cascade
    # tokens are words; 1 word in, 1 out at $1/$2 per Mtok
    assert s.loc["greedy", "mean_cost_usd"] == pytest.approx(
        sum((len(i["inputs"]["question"].split()) * 1 + 1 * 2) / 1e6 for i in ITEMS) / 4
    )
    rows = result.results
    assert rows[rows.target == "greedy"]["answer"].tolist() == ["Paris", "5", "Saturn", "Marlowe"]
    assert result.warmup.keys() == {t if isinstance(t, str) else t["label"] for t in TARGETS}


class Pick(Logic):
    """Asks every candidate in turn and returns the ``index``-th answer (an option the instance holds)."""

    def __init__(self, plan: Any = None, *, index: int = 0) -> None:
        super().__init__(plan)
        self.index = index

    async def answer(self, answering: Answering) -> Outcome:
        cands = self.plan.candidates
        answers = [await answering.call(c, stage=f"pick {i}") for i, c in enumerate(cands, 1)]
        return Outcome(answers[min(self.index, len(answers) - 1)], f"answer {self.index} of {len(answers)}")


def test_logic_objects_answer_as_evaluate_targets_and_complete_strategies_unregistered(
    client: Orchestrator,
) -> None:
    ids = known_logics()
    second = Pick(index=1)
    result = orchlab.evaluate(
        ITEMS,
        [Pick, {"label": "second vote", "target": "vote5", "strategy": second}],
        ["contains"],
        client=client,
        progress=False,
    )
    s = result.summary
    assert s.index.tolist() == ["Pick", "second vote"]
    # Pick on the default role (greedy, one candidate): the greedy answers; on vote5: the seed-2 sample
    assert s["accuracy"].tolist() == [0.25, 0.75]
    assert s.loc["second vote", "mean_calls"] == 5
    rows = result.results
    assert rows[rows.target == "second vote"]["answer"].tolist() == ["Lyon", "4", "Jupiter", "Shakespeare"]
    assert result.params_of(result.targets[0])["strategy"] == "Pick"

    r = client.complete("capital of France?", role="vote5", strategy=Pick(index=4))
    assert (r.content, r.decision.strategy) == ("Nice", "Pick")
    assert [a.stage for a in r.decision.attempts] == [f"pick {i}" for i in range(1, 6)]
    assert client.complete("2 + 2?", role="vote5", strategy=Pick).content == "4"
    # nothing was registered, and the instance given was not changed (it holds no plan)
    assert known_logics() == ids
    assert second.plan is None and second.index == 1
    with pytest.raises(InvalidRequestError, match="unknown"):
        client.complete("2 + 2?", role="vote5", strategy="Pick")


def test_replay_of_the_live_policy_gives_the_live_accuracy(client: Orchestrator) -> None:
    live = orchlab.evaluate(ITEMS, ["vote5", "cascade"], ["contains"], client=client, progress=False)
    calls = len(client.provider("fake").calls)
    again = orchlab.evaluate(ITEMS, ["vote5", "cascade"], ["contains"], client=client, replay=live)
    assert len(client.provider("fake").calls) == calls  # no model called
    assert again.summary["accuracy"].tolist() == live.summary["accuracy"].tolist()
    assert again.summary["mean_cost_usd"].tolist() == pytest.approx(live.summary["mean_cost_usd"].tolist())
    assert again.results["answer"].tolist() == live.results["answer"].tolist()
    assert again.summary["missing"].tolist() == [0, 0]


def test_replay_with_fewer_voters_and_a_lower_threshold(client: Orchestrator) -> None:
    live = orchlab.evaluate(ITEMS, ["vote5", "cascade"], ["contains"], client=client, progress=False)
    what_if = orchlab.evaluate(
        ITEMS,
        [
            {"label": "vote2", "replay_of": "vote5", "voters": 2},
            {"label": "cascade@0.5", "replay_of": "cascade", "threshold": 0.5},
        ],
        ["contains"],
        client=client,
        replay=live,
    )
    rows = what_if.results.set_index(["target", "item"])
    # two voters: Paris/Lyon -> Paris; 4/4 -> 4; Mars/Jupiter -> Mars; Marlowe/Shakespeare -> Marlowe
    assert [rows.loc[("vote2", i), "answer"] for i in "abcd"] == ["Paris", "4", "Mars", "Marlowe"]
    # threshold 0.5: the greedy answer is accepted whatever the one sample says (agreement >= 0.5)
    assert [rows.loc[("cascade@0.5", i), "answer"] for i in "abcd"] == ["Paris", "5", "Saturn", "Marlowe"]
    s = what_if.summary
    assert s["accuracy"].tolist() == [0.5, 0.25]
    assert s.loc["cascade@0.5", "escalation_rate"] == 0.0
    assert s.loc["cascade@0.5", "mean_calls"] == 2  # the greedy answer and its one sample


def test_replay_that_needs_unrecorded_answers_counts_them_missing(client: Orchestrator) -> None:
    live = orchlab.evaluate(ITEMS, ["vote5"], ["contains"], client=client, progress=False)
    more = orchlab.evaluate(
        ITEMS,
        [{"label": "vote7", "replay_of": "vote5", "voters": 7}],
        ["contains"],
        client=client,
        replay=live,
    )
    assert more.summary.loc["vote7", "missing"] == 4 and more.summary.loc["vote7", "n"] == 0
    with pytest.raises(InvalidRequestError, match="threshold= does not apply to the recorded 'vote'"):
        orchlab.evaluate(
            ITEMS,
            [{"label": "x", "replay_of": "vote5", "threshold": 0.5}],
            ["contains"],
            client=client,
            replay=live,
        )


def test_bad_targets_and_scorers_are_named(client: Orchestrator) -> None:
    with pytest.raises(InvalidRequestError, match="not a role"):
        orchlab.evaluate(ITEMS, ["gredy"], client=client)
    with pytest.raises(InvalidRequestError, match="unknown key"):
        orchlab.evaluate(ITEMS, [{"target": "greedy", "temprature": 0}], client=client)
    with pytest.raises(InvalidRequestError, match="only with replay="):
        orchlab.evaluate(ITEMS, [{"target": "vote5", "voters": 3}], client=client)
    with pytest.raises(InvalidRequestError, match="names 'ctx'"):
        orchlab.evaluate(ITEMS, [{"target": "greedy", "system": "{ctx}"}], client=client, progress=False)


def test_plot_shows_itself_as_a_png_and_marks_the_front(client: Orchestrator) -> None:
    result = orchlab.evaluate(ITEMS, TARGETS, ["contains"], client=client, progress=False)
    assert result.plot()._repr_png_().startswith(PNG)
    front = result.pareto()
    # greedy+context: the most accurate and among the cheapest -> on the front; vote5 costs more for less
    assert bool(front.loc["greedy+context", "on_front"]) is True
    assert bool(front.loc["vote5", "on_front"]) is False
    assert "<img src='data:image/png;base64," in result._repr_html_()


# --- MLflow -------------------------------------------------------------------------------------


@pytest.fixture
def tracked(
    client_for: Callable[..., Orchestrator], store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator:
    monkeypatch.setenv("ORCH_TRACKING", "1")
    made = client_for(CONFIG)
    made.provider("fake").respond_with("m", answer)
    yield made


def test_one_mlflow_run_per_target_with_its_traces_and_replay_from_the_experiment(
    tracked: Orchestrator,
) -> None:
    import mlflow

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    live = orchlab.evaluate(ITEMS, ["greedy", "vote5"], ["contains", "exact"], client=tracked, progress=False)
    # MLflow's global URI (and the variable it sets for subprocesses: kernels, drains) put back
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    assert set(live.runs) == {"greedy", "vote5"}
    mc = mlflow.MlflowClient(tracking_uri=tracked.tracking.settings.tracking_uri)
    run = mc.get_run(live.runs["vote5"])
    assert run.data.metrics["accuracy"] == 0.75 and run.data.metrics["n"] == 4
    assert json.loads(run.data.params["policy"]) == {"logic": "vote", "voters": 5}
    traces = mc.search_traces(locations=[live.experiment_id], run_id=live.runs["vote5"])
    assert len(traces) == 4
    by_item = {t.info.tags["orchlab.item"]: t for t in traces}
    assert json.loads(by_item["c"].data.request) == {"inputs": ITEMS[2]["inputs"]}  # nothing else
    assert by_item["c"].info.token_usage["input_tokens"] == 5 * 2  # five voters, "largest planet?"
    feedback = {a.name: a.value for a in by_item["c"].info.assessments if a.name in ("contains", "exact")}
    assert feedback == {"contains": False, "exact": False}  # Mars is not Jupiter
    assert set(live.results["trace_id"]) == {t.info.trace_id for t in traces} | set(
        live.results[live.results.target == "greedy"]["trace_id"]
    )
    replayed = orchlab.evaluate(
        ITEMS, ["vote5", {"label": "vote2", "replay_of": "vote5", "voters": 2}], ["contains"],
        client=tracked, replay=tracked.tracking.settings.experiment,
    )  # fmt: skip
    assert replayed.summary["accuracy"].tolist() == [0.75, 0.5]
