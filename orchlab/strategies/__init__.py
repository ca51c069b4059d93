"""Strategies: how one call uses several models, and the trail of what they did.

- fallback chains (``local_first``, ``cloud_first``, ``local``, ``cloud``, a role's ``fallbacks:``):
  `orchlab.strategies.fallback`
- ``parallel`` race: `orchlab.strategies.race`
- ``cascade`` with confidence scorers: `orchlab.strategies.cascade`, `orchlab.strategies.scorers`
- ``ensemble`` (vote, chain, judge, fuse): `orchlab.strategies.ensemble`
- ``auto`` (task type -> route): `orchlab.strategies.routing`

Every strategy answers with an `LLMResponse` whose ``decision`` lists every attempt, and whose
``cost_usd`` and ``usage`` add up every attempt, losers and rejected answers included.

Example::

    from orchlab.strategies import Strategy
    r = client.complete("What is 2+2?", role="llm.inference", strategy=Strategy.PARALLEL)
    print(r.decision.explain())
"""

from __future__ import annotations

from orchlab.strategies.base import Candidate, EnsembleMode, Strategy
from orchlab.strategies.health import Clock, ProviderHealth, SystemClock
from orchlab.strategies.routing import Classification, TaskType, classify
from orchlab.strategies.scorers import (
    AgreementScorer,
    JudgeScorer,
    LogprobScorer,
    Score,
    Scorer,
    Validator,
    json_valid,
    normalize,
    pydantic_model,
    regex,
)
from orchlab.strategies.trail import format_trail

__all__ = [
    "AgreementScorer",
    "Candidate",
    "Classification",
    "Clock",
    "EnsembleMode",
    "JudgeScorer",
    "LogprobScorer",
    "ProviderHealth",
    "Score",
    "Scorer",
    "Strategy",
    "SystemClock",
    "TaskType",
    "Validator",
    "classify",
    "format_trail",
    "json_valid",
    "normalize",
    "pydantic_model",
    "regex",
]
