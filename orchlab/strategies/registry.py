"""The one place logics are registered: one `Logic` class per `Strategy` member.

``logic_for(plan)`` builds the logic that answers ``plan``; nothing else picks a logic by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from orchlab.config.schema import Strategy
from orchlab.strategies.auto import Auto
from orchlab.strategies.base import EnsembleMode, Nested, Run
from orchlab.strategies.cascade import Cascade
from orchlab.strategies.ensemble import Ensemble
from orchlab.strategies.fallback import Fallback
from orchlab.strategies.logic import Logic
from orchlab.strategies.plan import Plan
from orchlab.strategies.race import Race
from orchlab.strategies.selection import CloudFirst, CloudOnly, LocalFirst, LocalOnly
from orchlab.strategies.single import Single

LOGICS: Mapping[Strategy, type[Logic]] = MappingProxyType(
    {
        cls.strategy: cls
        for cls in (
            Single,
            Fallback,
            LocalOnly,
            CloudOnly,
            LocalFirst,
            CloudFirst,
            Race,
            Cascade,
            Ensemble,
            Auto,
        )
    }
)


def logic_class(strategy: Strategy | str) -> type[Logic]:
    """The logic registered for ``strategy`` (a `Strategy` or its value)."""
    return LOGICS[Strategy(strategy)]


def logic_for(plan: Plan) -> Logic:
    """The logic that answers ``plan``, built from it."""
    return LOGICS[plan.strategy](plan)


def nested_logic(cand: Nested, run: Run) -> Logic:
    """The logic of a candidate that is itself a logic (its options parsed by its ``from_params``)."""
    cls = LOGICS[cand.strategy]
    options = cls.from_params(dict(cand.options))
    if "mode" in options:
        options["mode"] = EnsembleMode(options["mode"])
    plan = Plan(
        role=cand.role,
        spec=None,
        strategy=cand.strategy,
        candidates=list(cand.candidates),
        base_params=cand.params,
        **options,
    )
    return cls(plan)
