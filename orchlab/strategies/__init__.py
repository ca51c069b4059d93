"""Strategies: how one call uses several models, and the trail of what they did.

Each `Strategy` member has one orchestration logic, a `Logic` subclass, registered in
`orchlab.strategies.registry` (the only place a logic is picked): ``single``
(`orchlab.strategies.single`), ``auto`` (`orchlab.strategies.auto`), and:

- fallback chains (``local_first``, ``cloud_first``, ``local``, ``cloud``, a role's ``fallbacks:``):
  `orchlab.strategies.fallback`
- ``parallel`` race: `orchlab.strategies.race`
- ``cascade`` with confidence scorers: `orchlab.strategies.cascade`, `orchlab.strategies.scorers`
- ``ensemble`` (vote, chain, judge, fuse): `orchlab.strategies.ensemble`
- ``auto``'s task types and routes: `orchlab.strategies.routing`
- URNs naming a logic and its params (``urn:orchlab:race:candidates=a:m,b:m``): `orchlab.strategies.urn`

Every strategy answers with an `LLMResponse` whose ``decision`` lists every attempt, and whose
``cost_usd`` and ``usage`` add up every attempt, losers and rejected answers included.

For example:

    from orchlab.strategies import Strategy
    r = client.complete("What is 2+2?", role="llm.inference", strategy=Strategy.PARALLEL)
    print(r.decision.explain())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module (imported on first use: the orchestrator imports only `health` up front)
_EXPORTS: dict[str, str] = {
    "AgreementScorer": "orchlab.strategies.scorers",
    "Candidate": "orchlab.strategies.base",
    "Classification": "orchlab.strategies.routing",
    "Clock": "orchlab.strategies.health",
    "EnsembleMode": "orchlab.strategies.base",
    "JudgeScorer": "orchlab.strategies.scorers",
    "Logic": "orchlab.strategies.logic",
    "LogprobScorer": "orchlab.strategies.scorers",
    "ProviderHealth": "orchlab.strategies.health",
    "Score": "orchlab.strategies.scorers",
    "Scorer": "orchlab.strategies.scorers",
    "Strategy": "orchlab.strategies.base",
    "SystemClock": "orchlab.strategies.health",
    "TaskType": "orchlab.strategies.routing",
    "Urn": "orchlab.strategies.urn",
    "Validator": "orchlab.strategies.scorers",
    "classify": "orchlab.strategies.routing",
    "format_trail": "orchlab.strategies.trail",
    "json_valid": "orchlab.strategies.scorers",
    "normalize": "orchlab.strategies.scorers",
    "parse_urn": "orchlab.strategies.urn",
    "pydantic_model": "orchlab.strategies.scorers",
    "regex": "orchlab.strategies.scorers",
    "register_logic": "orchlab.strategies.registry",
    "scorers": "orchlab.strategies.scorers",
}

__all__ = [
    "AgreementScorer",
    "Candidate",
    "Classification",
    "Clock",
    "EnsembleMode",
    "JudgeScorer",
    "Logic",
    "LogprobScorer",
    "ProviderHealth",
    "Score",
    "Scorer",
    "Strategy",
    "SystemClock",
    "TaskType",
    "Urn",
    "Validator",
    "classify",
    "format_trail",
    "json_valid",
    "normalize",
    "parse_urn",
    "pydantic_model",
    "regex",
    "register_logic",
    "scorers",
]

if TYPE_CHECKING:
    from orchlab.strategies import scorers
    from orchlab.strategies.base import Candidate, EnsembleMode, Strategy
    from orchlab.strategies.health import Clock, ProviderHealth, SystemClock
    from orchlab.strategies.logic import Logic
    from orchlab.strategies.registry import register_logic
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
    from orchlab.strategies.urn import Urn, parse_urn


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchlab.strategies' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if name == "scorers" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
