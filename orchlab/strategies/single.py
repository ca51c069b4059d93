"""SINGLE: one model, the first candidate, without retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

from orchlab.config.schema import Strategy
from orchlab.strategies.base import Answer, Answering, Outcome, ms
from orchlab.strategies.logic import Logic


class Single(Logic):
    strategy = Strategy.SINGLE

    async def answer(self, answering: Answering) -> Outcome:
        cand = self.plan.candidates[0]
        answer = await answering.call(cand, stage="single")
        return Outcome(answer, f"{cand.target} answered in {ms(answer.attempt.latency_s)}")

    async def stream(self, answering: Answering) -> AsyncIterator[str | Outcome]:
        cand = self.plan.candidates[0]
        async for item in answering.stream_call(cand, stage="single"):
            if isinstance(item, Answer):
                yield Outcome(item, f"{cand.target} streamed the answer in {ms(item.attempt.latency_s)}")
            else:
                yield item
