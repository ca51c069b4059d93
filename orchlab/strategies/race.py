"""PARALLEL: every candidate at once; the first good answer wins and the others are cancelled.

A good answer is one that did not fail, is not empty, and (when a scorer is set: YAML
``parallel: {scorer: json}``, or ``scorer=`` on the call) scores at or above the threshold. An
answer that calls tools (in `delegate`) is good unscored.
Cancelling is real: the losers' tasks are cancelled, which closes an HTTP request (httpx drops
the connection) and stops a llama.cpp generation at its next token. A cancelled attempt stays
in the trail with outcome ``"cancelled"``; its tokens were never reported, so its cost is $0
for a local provider and unknown (None, with a note) for a cloud one.

When answers arrived but none was good, the best-scored one is returned and the rationale says
so; when every candidate failed, `AllAttemptsFailedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from orchlab import logs
from orchlab.config.schema import Strategy
from orchlab.errors import AllAttemptsFailedError
from orchlab.strategies.base import FALL_THROUGH, Answer, Answering, AnyCandidate, Outcome, ms, unique_key
from orchlab.strategies.logic import SCORED_PARAMS, Logic
from orchlab.strategies.scorers import Scorer, make_scorer


async def run_race(
    answering: Answering,
    candidates: Sequence[AnyCandidate],
    *,
    scorer: Scorer | None = None,
    threshold: float = 1.0,
) -> Outcome:
    params = {"logprobs": True} if scorer is not None and scorer.needs_logprobs else None
    tasks: dict[asyncio.Task[Answer], int] = {
        asyncio.ensure_future(answering.call(c, stage=f"race {i}", params=params)): i
        for i, c in enumerate(candidates, 1)
    }
    pending: set[asyncio.Task[Answer]] = set(tasks)
    winner: Answer | None = None
    rejected: list[tuple[float, int, Answer]] = []
    failed: list[str] = []
    scores: dict[str, float] = {}
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Answers finishing in the same loop turn: the earlier candidate goes first.
            for task in sorted(done, key=tasks.__getitem__):
                exc = task.exception()
                if exc is not None:
                    if not isinstance(exc, FALL_THROUGH):
                        raise exc
                    failed.append(f"{candidates[tasks[task] - 1].target} ({type(exc).__name__})")
                    continue
                answer = task.result()
                if winner is not None:
                    continue  # finished in the same turn as the winner: a loser that did answer
                value, why = await _judge(answering, answer, scorer, threshold)
                if value is not None:
                    answer.rate(value)
                    scores[unique_key(scores, answer.candidate.target)] = value
                if why is None:
                    winner = answer
                else:
                    answer.reject(why)
                    rejected.append((value if value is not None else -1.0, -tasks[task], answer))
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    cancelled = [candidates[tasks[t] - 1].target for t in sorted(pending, key=tasks.__getitem__)]
    tail = []
    if cancelled:
        tail.append(f"cancelled {len(cancelled)}: {', '.join(cancelled)}")
    if failed:
        tail.append(f"failed: {', '.join(failed)}")
    if rejected:
        tail.append(f"rejected: {', '.join(a.candidate.target for *_, a in rejected)}")
    logs.decision(
        "race winner",
        winner=winner.candidate.target if winner is not None else None,
        candidates=len(candidates),
        failed=len(failed),
        rejected=len(rejected),
    )
    if winner is not None:
        head = f"{winner.candidate.target} gave the first good answer in {ms(winner.attempt.latency_s)}"
        return Outcome(winner, "; ".join([head, *tail]), scores)
    if rejected:
        best = max(rejected, key=lambda item: (item[0], item[1]))[2]
        best.annotate("returned anyway: no answer was good")
        head = f"no answer was good; returning the best-scored, from {best.candidate.target}"
        return Outcome(best, "; ".join([head, *tail]), scores)
    raise AllAttemptsFailedError(
        f"all {len(candidates)} raced candidates failed: {', '.join(failed)}", answering.errors
    )


async def _judge(
    answering: Answering, answer: Answer, scorer: Scorer | None, threshold: float
) -> tuple[float | None, str | None]:
    """(score, why it is not good) for a finished answer; why is None for a good answer. An
    answer that calls tools is good as it is: a scorer judges text (the tool loop goes on)."""
    if answer.response.tool_calls:
        return None, None
    if not answer.content.strip():
        return None, "empty answer"
    if scorer is None:
        return None, None
    score = await scorer.score(answering, answer, stage=answer.attempt.stage or "race")
    if score.value is None:
        return None, f"not scored: {score.note}"
    if score.value < threshold:
        return score.value, f"score {score.value:.3f} < threshold {threshold:g} ({score.note})"
    return score.value, None


class Race(Logic):
    """PARALLEL: every candidate at once; the first good answer wins, the others are cancelled."""

    strategy = Strategy.PARALLEL
    params = SCORED_PARAMS

    async def answer(self, answering: Answering) -> Outcome:
        plan = self.plan
        config = plan.spec.parallel if plan.spec is not None else None
        spec = plan.scorer if plan.scorer is not None else (config.scorer if config is not None else None)
        scorer = make_scorer(spec, config) if spec is not None else None
        threshold = plan.threshold if plan.threshold is not None else (config.threshold if config else 1.0)
        return await run_race(answering, plan.candidates, scorer=scorer, threshold=threshold)

    async def stream(self, answering: Answering) -> AsyncIterator[str | Outcome]:
        config = self.plan.spec.parallel if self.plan.spec is not None else None
        if self.plan.scorer is not None or (config is not None and config.scorer is not None):
            # a scored race judges whole answers: stream the winner once it is decided
            async for item in super().stream(answering):
                yield item
            return
        async for item in stream_race(answering, self.plan.candidates):
            yield item


async def stream_race(
    answering: Answering, candidates: Sequence[AnyCandidate]
) -> AsyncIterator[str | Outcome]:
    """Every candidate streams at once; the first to produce a token (or a whole answer) is
    streamed to the caller and the others are cancelled."""
    streams = [answering.stream_call(c, stage=f"race {i}") for i, c in enumerate(candidates, 1)]
    firsts: dict[asyncio.Task[str | Answer], int] = {
        asyncio.ensure_future(anext(gen)): i for i, gen in enumerate(streams)
    }
    pending = set(firsts)
    winner: int | None = None
    first: str | Answer | None = None
    failed: list[str] = []
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=firsts.__getitem__):
                i = firsts[task]
                exc = task.exception()
                if exc is not None:
                    if not isinstance(exc, FALL_THROUGH):
                        raise exc
                    failed.append(f"{candidates[i].target} ({type(exc).__name__})")
                elif winner is None:
                    winner, first = i, task.result()
                else:
                    await streams[i].aclose()  # started in the same turn: a loser, cancelled
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    cancelled = [candidates[firsts[t]].target for t in sorted(pending, key=firsts.__getitem__)]
    if winner is None:
        raise AllAttemptsFailedError(
            f"all {len(candidates)} raced candidates failed before their first token: {', '.join(failed)}",
            answering.errors,
        )
    tail = [f"cancelled {len(cancelled)}: {', '.join(cancelled)}"] if cancelled else []
    if failed:
        tail.append(f"failed: {', '.join(failed)}")
    gen = streams[winner]
    async with contextlib.aclosing(gen):
        item = first
        while True:
            if isinstance(item, Answer):
                took = ms(item.attempt.latency_s)
                head = f"{item.candidate.target} produced the first token; streamed in {took}"
                yield Outcome(item, "; ".join([head, *tail]))
                return
            assert item is not None
            yield item
            item = await anext(gen)
