"""ENSEMBLE: several answers, combined four ways (`EnsembleMode`).

- ``vote``: every candidate answers (concurrently); answers are grouped by their normalised text
  (`scorers.normalize`: case, spacing, quotes and final punctuation ignored); the biggest group
  wins and its first member (in candidate order) is returned. **Tie-break:** among groups of the
  same size, the one whose first member comes earliest in the candidate order. Empty answers
  abstain. ``scores["agreement"]`` is the winning group's share of the answers.
- ``chain``: the first candidate drafts; each next one sees the draft and writes an improved
  answer (a failed step keeps the previous draft). The last good answer is returned.
- ``judge``: every candidate answers; a judge (role or target; default: the first candidate)
  is shown the numbered answers and names the best. An unusable verdict falls back to the vote.
- ``fuse`` (Mixture-of-Agents): every candidate answers; an aggregator (default: the first
  candidate) synthesises one answer from them. A failed aggregator falls back to the vote.

Answers not returned are marked ``"rejected"`` in the trail (vote minority, judge losers);
drafts and proposals keep ``"ok"``. Every call's cost is in the total.

Answers that call tools (a step of `delegate`): the vote groups them by their calls (the same
names and arguments, in any order), against the text answers; a chain returns a draft that calls
tools as it is (refining comes at the step that answers in text, where the refiner is offered the
tools with ``tool_choice: none``, so the conversation's tool turns stay valid but it cannot call
any); a judge is shown each answer's calls as text and is not offered the tools; ``fuse`` does not
aggregate a step where a proposal calls tools (an aggregator writes text, which would end the
loop before the tools ran): the vote decides it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence

from orchlab.config.schema import Strategy
from orchlab.errors import AllAttemptsFailedError
from orchlab.strategies.base import (
    FALL_THROUGH,
    Answer,
    Answering,
    AnyCandidate,
    Candidate,
    EnsembleMode,
    Outcome,
    ms,
)
from orchlab.strategies.logic import ENSEMBLE_PARAMS, Logic
from orchlab.strategies.scorers import normalize
from orchlab.tools.model import ToolOffer
from orchlab.types import LLMResponse, Message

REFINE_PROMPT = (
    "Check the answer above for mistakes and omissions, then write an improved final answer to "
    "the original question. Reply with the answer only."
)
JUDGE_PICK_PROMPT = (
    "Question:\n{question}\n\n{answers}\n\nWhich answer is the most correct and complete? "
    "Reply with its number only.\nBest answer:"
)
FUSE_PROMPT = (
    "{question}\n\nSeveral assistants answered this:\n\n{answers}\n\nWrite one answer that "
    "keeps what is right in them and drops what is wrong. Reply with the answer only."
)


async def fan_out(
    answering: Answering, candidates: Sequence[AnyCandidate], prefix: str
) -> list[Answer | Exception]:
    """Every candidate at once, results in candidate order (failures as exceptions)."""

    async def one(i: int, cand: AnyCandidate) -> Answer | Exception:
        try:
            return await answering.call(cand, stage=f"{prefix} {i}")
        except FALL_THROUGH as exc:
            return exc

    return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(candidates, 1))))


def _answers(results: Sequence[Answer | Exception], what: str, answering: Answering) -> list[Answer]:
    answers = [r for r in results if isinstance(r, Answer)]
    if not answers:
        raise AllAttemptsFailedError(
            f"every {what} failed ({len(answering.errors)} attempts)", answering.errors
        )
    return answers


def calls_text(response: LLMResponse) -> str:
    """An answer's tool calls as text, ``name({json arguments})`` in a stable order (what a vote
    compares and a judge is shown); empty for a text answer."""
    shown = (f"{c.name}({json.dumps(dict(c.arguments), sort_keys=True)})" for c in response.tool_calls)
    return ", ".join(sorted(shown))


def _vote_key(answer: Answer, normalizer: Callable[[str], str]) -> str:
    calls = calls_text(answer.response)
    return f"calls {calls}" if calls else normalizer(answer.content)


def vote(answers: Sequence[Answer], normalizer: Callable[[str], str] = normalize) -> Outcome:
    groups: dict[str, list[Answer]] = {}
    abstained = []
    for answer in answers:
        key = _vote_key(answer, normalizer)
        if key:
            groups.setdefault(key, []).append(answer)
        else:
            abstained.append(answer)
    if not groups:
        first = answers[0]
        return Outcome(first, "every answer was empty; returning the first", {"agreement": 0.0})
    voters = sum(len(g) for g in groups.values())
    # dict order is the order of first appearance = candidate order, and max() keeps the first
    # of equal groups: the documented tie-break.
    best_key, best = max(groups.items(), key=lambda item: len(item[1]))
    tied = [k for k, g in groups.items() if len(g) == len(best) and k != best_key]
    for key, group in groups.items():
        for answer in group:
            answer.rate(len(group) / voters)
            if key != best_key:
                answer.reject(f"outvoted ({len(group)}/{voters})")
    for answer in abstained:
        answer.reject("empty answer: abstained")
    winner = best[0]
    shown = best_key if len(best_key) <= 40 else best_key[:37] + "..."
    rationale = f"vote: {len(best)}/{voters} answers agree on {shown!r}"
    if tied:
        rationale += f"; tie with {len(tied)} other answer(s) broken by candidate order"
    if abstained:
        rationale += f"; {len(abstained)} empty answer(s) abstained"
    scores = {"agreement": len(best) / voters, "answers": float(len(groups))}
    return Outcome(winner, rationale, scores)


async def run_vote(
    answering: Answering, candidates: Sequence[AnyCandidate], normalizer: Callable[[str], str]
) -> Outcome:
    answers = _answers(await fan_out(answering, candidates, "vote"), "voter", answering)
    return vote(answers, normalizer)


async def run_chain_refine(answering: Answering, candidates: Sequence[AnyCandidate]) -> Outcome:
    draft: Answer | None = None
    steps: list[str] = []
    for i, cand in enumerate(candidates, 1):
        if draft is None:
            try:
                draft = await answering.call(cand, stage=f"chain {i} draft")
            except FALL_THROUGH as exc:
                steps.append(f"{cand.target} could not draft ({type(exc).__name__})")
                continue
            steps.append(f"{cand.target} drafted")
            if draft.response.tool_calls:
                steps.append("the draft calls tools: returned as it is")
                break
            continue
        messages = [
            *answering.messages,
            Message("assistant", draft.content),
            Message("user", REFINE_PROMPT),
        ]
        tools = answering.offer.tools
        try:
            refined = await answering.call(
                cand,
                stage=f"chain {i} refine",
                messages=messages,
                offer=ToolOffer(tools, "none") if tools else None,
            )
        except FALL_THROUGH as exc:
            steps.append(f"{cand.target} failed to refine ({type(exc).__name__}): kept the draft")
            continue
        if refined.response.tool_calls:
            refined.reject("the refinement called tools (tool_choice none): kept the previous draft")
            steps.append(f"{cand.target} called tools: kept the draft")
            continue
        if not refined.content.strip():
            refined.reject("empty refinement: kept the previous draft")
            steps.append(f"{cand.target} returned nothing: kept the draft")
            continue
        draft = refined
        steps.append(f"{cand.target} refined")
    if draft is None:
        raise AllAttemptsFailedError(
            f"no candidate could draft ({len(answering.errors)} attempts)", answering.errors
        )
    return Outcome(draft, "chain: " + " -> ".join(steps), {"steps": float(len(steps))})


def _shown(answer: Answer) -> str:
    calls = calls_text(answer.response)
    text = answer.content.strip()
    return f"{text}\n(calls the tools: {calls})".strip() if calls else text


def _numbered(answers: Sequence[Answer]) -> str:
    return "\n\n".join(f"Answer {i}:\n{_shown(a)}" for i, a in enumerate(answers, 1))


_INT = re.compile(r"\d+")


async def run_judge(
    answering: Answering,
    candidates: Sequence[AnyCandidate],
    judge: AnyCandidate,
    normalizer: Callable[[str], str],
) -> Outcome:
    answers = _answers(await fan_out(answering, candidates, "answer"), "candidate", answering)
    if len(answers) == 1:
        return Outcome(answers[0], f"judge: only {answers[0].candidate.target} answered; no judging needed")
    prompt = JUDGE_PICK_PROMPT.format(question=answering.question, answers=_numbered(answers))
    why = ""
    try:
        verdict = await answering.call(judge, stage="judge", messages=[Message("user", prompt)])
    except FALL_THROUGH as exc:
        why = f"the judge {judge.target} failed ({type(exc).__name__})"
    else:
        picks = [int(m) for m in _INT.findall(verdict.content) if 1 <= int(m) <= len(answers)]
        if picks:
            chosen = answers[picks[0] - 1]
            for answer in answers:
                if answer is not chosen:
                    answer.reject(f"the judge picked answer {picks[0]}")
            return Outcome(
                chosen,
                f"judge: {judge.target} picked answer {picks[0]} of {len(answers)}, from "
                f"{chosen.candidate.target} (verdict {verdict.content.strip()[:30]!r})",
                {"choice": float(picks[0])},
            )
        why = f"the judge's verdict names no answer 1-{len(answers)}: {verdict.content.strip()[:40]!r}"
    fallback = vote(answers, normalizer)
    return Outcome(
        fallback.answer, f"judge: {why}; fell back to the vote: {fallback.rationale}", fallback.scores
    )


async def run_fuse(
    answering: Answering,
    candidates: Sequence[AnyCandidate],
    aggregator: AnyCandidate,
    normalizer: Callable[[str], str],
) -> Outcome:
    answers = _answers(await fan_out(answering, candidates, "propose"), "proposer", answering)
    calling = [a.candidate.target for a in answers if a.response.tool_calls]
    if calling:
        fallback = vote(answers, normalizer)
        return Outcome(
            fallback.answer,
            f"fuse: {', '.join(calling)} asked for tools, which an aggregator cannot call: not "
            f"aggregated; {fallback.rationale}",
            fallback.scores,
        )
    prompt = FUSE_PROMPT.format(question=answering.question, answers=_numbered(answers))
    try:
        fused = await answering.call(aggregator, stage="aggregate", messages=[Message("user", prompt)])
    except FALL_THROUGH as exc:
        fallback = vote(answers, normalizer)
        return Outcome(
            fallback.answer,
            f"fuse: the aggregator {aggregator.target} failed ({type(exc).__name__}); fell back to "
            f"the vote: {fallback.rationale}",
            fallback.scores,
        )
    return Outcome(
        fused,
        f"fuse: {aggregator.target} synthesised {len(answers)} answers "
        f"({', '.join(a.candidate.target for a in answers)}) in {ms(fused.attempt.latency_s)}",
        {"proposals": float(len(answers))},
    )


async def run_ensemble(
    answering: Answering,
    candidates: Sequence[AnyCandidate],
    mode: EnsembleMode,
    *,
    judge: Candidate | None = None,
    aggregator: Candidate | None = None,
    normalizer: Callable[[str], str] = normalize,
) -> Outcome:
    if mode is EnsembleMode.VOTE:
        return await run_vote(answering, candidates, normalizer)
    if mode is EnsembleMode.CHAIN:
        return await run_chain_refine(answering, candidates)
    if mode is EnsembleMode.JUDGE:
        return await run_judge(answering, candidates, judge or candidates[0], normalizer)
    return await run_fuse(answering, candidates, aggregator or candidates[0], normalizer)


class Ensemble(Logic):
    """ENSEMBLE: several answers combined (vote, chain, judge, fuse)."""

    strategy = Strategy.ENSEMBLE
    params = ENSEMBLE_PARAMS

    async def answer(self, answering: Answering) -> Outcome:
        plan = self.plan
        ens = plan.spec.ensemble if plan.spec is not None else None
        mode = plan.mode or EnsembleMode(ens.mode if ens is not None else "vote")
        judge_ref = plan.judge or (ens.judge if ens is not None else None)
        aggregator_ref = plan.aggregator or (ens.aggregator if ens is not None else None)
        return await run_ensemble(
            answering,
            plan.candidates,
            mode,
            judge=answering.candidate(judge_ref, params=plan.base_params) if judge_ref else None,
            aggregator=answering.candidate(aggregator_ref, params=plan.base_params)
            if aggregator_ref
            else None,
            normalizer=plan.normalizer,
        )
