"""`Logic`: the public base class of an orchestration logic (single, fallback, race, ...).

A logic is built from a `Plan` (its candidates and options) and answers within an `Answering`
(the call in progress: every provider call it makes goes through the call pipeline and is one
attempt in the trail). Each member of `Strategy` has exactly one logic, registered in
`orchlab.strategies.registry`.

``from_params`` parses a logic's options from a string mapping (what a URN's params or a query
string carry) and names the bad part in an `InvalidRequestError`::

    Race.from_params({"threshold": "0.8", "scorer": "json"})   # {"threshold": 0.8, "scorer": "json"}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from orchlab.errors import InvalidRequestError

if TYPE_CHECKING:
    from orchlab.config.schema import Strategy
    from orchlab.strategies.base import Answering, Outcome
    from orchlab.strategies.plan import Plan


def _threshold(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser for a logic's ``params`` that takes one of ``allowed``."""

    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _name(cls: type) -> str:
    return str(getattr(cls, "strategy", cls.__name__))


class Logic(ABC):
    """How one call uses its candidates. Subclass it, set ``strategy`` and ``params``, and
    implement ``answer``."""

    strategy: ClassVar[Strategy | str]
    """Its id (a built-in's `Strategy`; a plugin may leave it unset: it is set to its registered id)."""
    params: ClassVar[Mapping[str, Callable[[str], Any]]] = {}
    """The options this logic reads from a string mapping, each with its parser."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    @abstractmethod
    async def answer(self, answering: Answering) -> Outcome:
        """Answer the call with the plan's candidates: each provider call through
        ``answering.call(candidate, stage=...)`` (an `Answer`), then an `Outcome` naming the answer
        returned and why. Example (``examples/plugin_logic/``)::

            async def answer(self, answering: Answering) -> Outcome:
                cands = self.plan.candidates
                answers = [await answering.call(c, stage=f"mine {i}") for i, c in enumerate(cands, 1)]
                best = min(answers, key=lambda a: len(a.content))
                return Outcome(best, f"the shortest of {len(answers)} answers")
        """

    async def stream(self, answering: Answering) -> AsyncIterator[str | Outcome]:
        """Text deltas, then the `Outcome`. The default streams the final answer once it is
        decided (cascade, ensemble, auto); fallback and race stream their candidates' tokens."""
        outcome = await self.answer(answering)
        if outcome.answer.content:
            yield outcome.answer.content
        yield outcome

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> dict[str, Any]:
        """This logic's options from strings; an unknown key or a bad value names itself."""
        options: dict[str, Any] = {}
        for key, raw in params.items():
            parse = cls.params.get(key)
            if parse is None:
                known = ", ".join(sorted(cls.params)) or "none"
                raise InvalidRequestError(f"logic {_name(cls)!r} has no param {key!r} (its params: {known})")
            try:
                options[key] = parse(raw)
            except ValueError as exc:
                raise InvalidRequestError(
                    f"logic {_name(cls)!r}: param {key}={raw!r} is not valid: {exc}"
                ) from None
        return options

    def __repr__(self) -> str:
        targets = ", ".join(c.target for c in self.plan.candidates)
        return f"{type(self).__name__}({targets})"


SCORERS = ("logprob", "agreement", "judge", "json", "regex")
SCORED_PARAMS: Mapping[str, Callable[[str], Any]] = {"threshold": _threshold, "scorer": choice(*SCORERS)}
ENSEMBLE_PARAMS: Mapping[str, Callable[[str], Any]] = {
    "mode": choice("vote", "chain", "judge", "fuse"),
    "judge": str,
    "aggregator": str,
}
