"""LOCAL / CLOUD candidate selection: local means the adapter class's ``Provider.is_local``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from orchlab.errors import StrategyError
from orchlab.strategies.base import Answering, AnyCandidate, Outcome, Strategy, leaves
from orchlab.strategies.fallback import run_chain, stream_chain
from orchlab.strategies.logic import Logic


def select(
    answering: Answering, strategy: Strategy, candidates: Sequence[AnyCandidate]
) -> list[AnyCandidate]:
    """The candidates ``strategy`` tries, in order (order among local or cloud ones is kept)."""
    local = [c for c in candidates if all(answering.is_local(leaf.provider) for leaf in leaves(c))]
    cloud = [c for c in candidates if c not in local]
    if strategy is Strategy.LOCAL_ONLY:
        chosen = local
    elif strategy is Strategy.CLOUD_ONLY:
        chosen = cloud
    elif strategy is Strategy.LOCAL_FIRST:
        chosen = local + cloud
    elif strategy is Strategy.CLOUD_FIRST:
        chosen = cloud + local
    else:
        chosen = list(candidates)
    if not chosen:
        kind = "local" if strategy is Strategy.LOCAL_ONLY else "cloud"
        raise StrategyError(
            f"strategy {strategy.value!r} needs a {kind} candidate, and none of "
            f"{', '.join(c.target for c in candidates) or 'no candidates'} is {kind}: add one under "
            "the role's candidates: (local adapters: llamacpp, ollama, vllm, lmstudio, llamacpp_server)"
        )
    return chosen


class _Selected(Logic):
    """A fallback chain over the candidates `select` picks for ``strategy``."""

    strategy: ClassVar[Strategy]

    async def answer(self, answering: Answering) -> Outcome:
        chosen = select(answering, self.strategy, self.plan.candidates)
        return await run_chain(answering, chosen, label=self.strategy.value)

    def stream(self, answering: Answering) -> AsyncIterator[str | Outcome]:
        chosen = select(answering, self.strategy, self.plan.candidates)
        return stream_chain(answering, chosen, label=self.strategy.value)


class LocalOnly(_Selected):
    strategy = Strategy.LOCAL_ONLY


class CloudOnly(_Selected):
    strategy = Strategy.CLOUD_ONLY


class LocalFirst(_Selected):
    strategy = Strategy.LOCAL_FIRST


class CloudFirst(_Selected):
    strategy = Strategy.CLOUD_FIRST
