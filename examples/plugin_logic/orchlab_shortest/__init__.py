"""``shortest``: ask the first ``n`` candidates (default: all) in turn, keep the shortest answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from orchlab.strategies import Logic
from orchlab.strategies.base import Answering, Outcome

__version__ = "0.1.0"


def _count(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


class Shortest(Logic):
    params: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        "n": _count
    }  # what a URN or a YAML `options:` may set, parsed by Logic.from_params

    async def answer(self, answering: Answering) -> Outcome:
        n = self.plan.extra.get("n", len(self.plan.candidates))
        answers = [
            await answering.call(cand, stage=f"shortest {i + 1}")
            for i, cand in enumerate(self.plan.candidates[:n])
        ]
        best = min(answers, key=lambda a: len(a.content.strip()))
        sizes = ", ".join(f"{a.candidate.target}: {len(a.content.strip())}" for a in answers)
        return Outcome(best, f"the shortest of {len(answers)} answers ({sizes})")
