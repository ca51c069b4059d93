"""SINGLE: one model, the first candidate, without retries."""

from __future__ import annotations

from orchlab.config.schema import Strategy
from orchlab.strategies.base import Outcome, Run, ms
from orchlab.strategies.logic import Logic


class Single(Logic):
    strategy = Strategy.SINGLE

    async def answer(self, run: Run) -> Outcome:
        cand = self.plan.candidates[0]
        answer = await run.call(cand, stage="single")
        return Outcome(answer, f"{cand.target} answered in {ms(answer.attempt.latency_s)}")
