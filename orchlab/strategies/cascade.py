"""CASCADE (after FrugalGPT): the cheapest candidate first; escalate while its score is too low.

Each stage's answer is scored (`orchlab.strategies.scorers`); the cascade accepts it when
``score >= threshold`` and escalates to the next stage exactly when the score is under the
threshold, or unknown. The last stage's answer is accepted whatever its score (the rationale
says so). An answer that calls tools (in `delegate`) is accepted unscored. A stage that fails
(after its retries) escalates too. Rejected answers stay in the trail (outcome ``"rejected"``)
and their cost is part of the total.

Stage order is the YAML order (the role's model, then ``candidates:``, then ``fallbacks:``);
``cascade: {order: price}`` sorts by the catalog's price when the catalog knows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from orchlab import logs
from orchlab.config.schema import Strategy
from orchlab.errors import AllAttemptsFailedError
from orchlab.strategies.base import FALL_THROUGH, Answer, Answering, AnyCandidate, Outcome, leaves, unique_key
from orchlab.strategies.fallback import call_with_retries
from orchlab.strategies.logic import SCORED_PARAMS, Logic
from orchlab.strategies.scorers import Scorer, make_scorer


async def run_cascade(
    answering: Answering,
    stages: Sequence[AnyCandidate],
    *,
    scorer_for: Callable[[AnyCandidate], Scorer],
    threshold: float,
) -> Outcome:
    scores: dict[str, float] = {}
    notes: list[str] = []
    rejected: list[tuple[float, Answer]] = []
    failed: list[str] = []
    for i, cand in enumerate(stages, 1):
        last = i == len(stages)
        scorer = scorer_for(cand)
        bar = cand.threshold if cand.threshold is not None else threshold
        params = {"logprobs": True} if scorer.needs_logprobs else None
        stage = f"cascade {i}"
        try:
            answer = await call_with_retries(answering, cand, stage=stage, params=params, notes=notes)
        except FALL_THROUGH as exc:
            failed.append(f"{cand.target} ({type(exc).__name__})")
            notes.append(f"stage {i} {cand.target} failed ({type(exc).__name__}): escalated")
            continue
        if answer.response.tool_calls:
            # a scorer judges text; a stage asking for tools is accepted as it is (the tool loop
            # runs them and the next step starts the cascade again)
            names = ", ".join(dict.fromkeys(c.name for c in answer.response.tool_calls))
            head = f"stage {i} {cand.target} asked for tools ({names}): accepted unscored"
            return Outcome(answer, "; ".join([*notes, head]), scores)
        score = await scorer.score(answering, answer, stage=stage)
        answer.rate(score.value)
        if score.value is not None:
            scores[unique_key(scores, cand.target)] = score.value
        shown = "unknown" if score.value is None else f"{score.value:.3f}"
        logs.decision(
            "cascade score",
            target=cand.target,
            stage=i,
            scorer=scorer.label,
            score=score.value,
            threshold=bar,
            accepted=score.value is not None and score.value >= bar,
        )
        if score.value is not None and score.value >= bar:
            head = f"stage {i} {cand.target} accepted: {scorer.label} score {shown} >= {bar:g} ({score.note})"
            return Outcome(answer, "; ".join([*notes, head]), scores)
        if last:
            head = (
                f"stage {i} {cand.target} is the last stage: accepted with {scorer.label} score "
                f"{shown} < {bar:g} ({score.note})"
            )
            return Outcome(answer, "; ".join([*notes, head]), scores)
        answer.reject(f"{scorer.label} score {shown} < threshold {bar:g}: escalated ({score.note})")
        notes.append(f"stage {i} {cand.target}: {scorer.label} score {shown} < {bar:g}, escalated")
        rejected.append((score.value if score.value is not None else -1.0, answer))
    if rejected:
        best = max(rejected, key=lambda item: item[0])[1]
        best.annotate("returned: every later stage failed")
        head = (
            f"the last stage failed; returning the best-scored rejected answer, from {best.candidate.target}"
        )
        return Outcome(best, "; ".join([*notes, head]), scores)
    raise AllAttemptsFailedError(
        f"every cascade stage failed ({len(answering.errors)} attempts): {', '.join(failed)}",
        answering.errors,
    )


class Cascade(Logic):
    """CASCADE: the cheapest candidate first; escalate while its score is under the threshold."""

    strategy = Strategy.CASCADE
    params = SCORED_PARAMS

    async def answer(self, answering: Answering) -> Outcome:
        plan = self.plan
        config = plan.spec.cascade if plan.spec is not None else None
        default: Scorer = make_scorer(plan.scorer, config)
        threshold = plan.threshold if plan.threshold is not None else (config.threshold if config else 0.7)
        named: dict[str, Scorer] = {}

        def scorer_for(cand: AnyCandidate) -> Scorer:
            if cand.scorer is None or plan.scorer is not None:
                return default
            if cand.scorer not in named:
                named[cand.scorer] = make_scorer(cand.scorer, config)
            return named[cand.scorer]

        stages = plan.candidates
        if config is not None and config.order == "price":
            stages = sorted(stages, key=lambda c: _price(answering, c))
        return await run_cascade(answering, stages, scorer_for=scorer_for, threshold=threshold)


def _price(answering: Answering, cand: AnyCandidate) -> float:
    """Catalog price (input + output per Mtok) for ordering; local models cost 0, unknown sorts last;
    a nested logic is as dear as its dearest target."""
    prices = [answering.orch.catalog.entry(leaf.provider, leaf.model).price for leaf in leaves(cand)]
    if any(price is None for price in prices):
        return math.inf
    return max(price.input_per_mtok + price.output_per_mtok for price in prices if price is not None)
