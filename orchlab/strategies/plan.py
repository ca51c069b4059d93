"""What a call asks a logic to do: its candidates and the logic's options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from orchlab.config.schema import CandidateConfig, LogicCandidateConfig, Strategy
from orchlab.resolution import params_from, parse_target
from orchlab.strategies.base import AnyCandidate, Candidate, Nested
from orchlab.strategies.scorers import normalize
from orchlab.types import GenerationParams

if TYPE_CHECKING:
    from orchlab.config.schema import RoleConfig, SelectConfig
    from orchlab.orchestrator import Orchestrator
    from orchlab.strategies.base import EnsembleMode
    from orchlab.strategies.logic import Logic
    from orchlab.strategies.routing import TaskType


@dataclass
class Plan:
    """A logic's input: which candidates, under which role, with which options (None: the role's
    YAML, else the logic's default)."""

    role: str | None
    spec: RoleConfig | None
    strategy: Strategy | str
    """A built-in `Strategy`, or the id of an added/installed logic."""
    candidates: list[AnyCandidate]
    base_params: GenerationParams = field(default_factory=GenerationParams)
    scorer: Any = None
    threshold: float | None = None
    mode: EnsembleMode | None = None
    judge: str | None = None
    aggregator: str | None = None
    tier: str | None = None
    task_type: TaskType | None = None
    select: SelectConfig | None = None
    """SELECT: the selector rule (None: the role's ``select:``)."""
    risk: str | None = None
    """SELECT: the call's risk (low, medium, high), mapped to a tier by ``routing.tiers``."""
    complexity: str | None = None
    """SELECT: the call's complexity (low, medium, high)."""
    normalizer: Callable[[str], str] = normalize
    extra: dict[str, Any] = field(default_factory=dict)
    """An added/installed logic's own options (what its ``from_params`` returned beyond these fields)."""
    logic: Logic | type[Logic] | None = None
    """A logic object the call passed itself (``complete(strategy=MyLogic)``): it answers this plan
    instead of the logic registered under ``strategy`` (then only its name), and is never registered."""


def role_params(orch: Orchestrator, role: str) -> GenerationParams:
    """The role's params (a role whose model a selector picks has no binding to read them from)."""
    spec = orch.config.roles.get(role)
    if spec is not None and spec.select is not None and not orch.is_rebound(role):
        return params_from(spec.params)
    return orch.binding(role).params


def selects(orch: Orchestrator, role: str | None) -> bool:
    """Whether ``role``'s model is picked by its ``select:`` rule now (not rebound this session)."""
    spec = orch.config.roles.get(role) if role is not None else None
    return spec is not None and spec.select is not None and not orch.is_rebound(role)  # type: ignore[arg-type]


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (the `Plan` fields, the rest: a plugin logic's own options)."""
    known = {f.name for f in fields(Plan)}
    return {k: v for k, v in options.items() if k in known}, {
        k: v for k, v in options.items() if k not in known
    }


def role_candidates(orch: Orchestrator, role: str, model: str | None = None) -> list[AnyCandidate]:
    """The role's model (or ``model``), then its ``candidates:``, then its ``fallbacks:``. A role
    without ``provider:``/``model:`` (not rebound this session) has only its candidates."""
    spec = orch.config.roles[role]
    if spec.select is not None and not orch.is_rebound(role) and model is None:
        # the catalog picks the model when the call is answered (SELECT): only the fallbacks here
        base = params_from(spec.params)
        return [_entry(entry, base, role) for entry in spec.fallbacks]
    bound = orch.binding(role)
    base = bound.params
    out: list[AnyCandidate] = []
    if model is not None:
        provider, name = parse_target(model)
        out = [Candidate(provider, name, base, role=role)]
    elif spec.provider is not None or orch.is_rebound(role):
        out = [Candidate(bound.provider, bound.model, base, role=role)]
    out += [_entry(entry, base, role) for entry in [*spec.candidates, *spec.fallbacks]]
    return out


def _entry(
    entry: str | CandidateConfig | LogicCandidateConfig, base: GenerationParams, role: str
) -> AnyCandidate:
    if isinstance(entry, LogicCandidateConfig):
        return nested_candidate(entry, base, role)
    if isinstance(entry, CandidateConfig):
        provider, name = parse_target(entry.target)
        params = base if entry.params is None else base.merged(params_from(entry.params).as_dict())
        return Candidate(provider, name, params, role, entry.threshold, entry.scorer)
    provider, name = parse_target(entry)
    return Candidate(provider, name, base, role=role)


def as_strings(options: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """YAML ``options:`` as the strings a logic's ``from_params`` parses."""
    return tuple(
        (key, str(value).lower() if isinstance(value, bool) else str(value)) for key, value in options.items()
    )


def nested_candidate(entry: LogicCandidateConfig, base: GenerationParams, role: str) -> Nested:
    """A YAML ``{strategy: ..., candidates: [...]}`` entry as a candidate that is a logic."""
    options = as_strings(entry.options)
    return Nested(
        entry.strategy,
        tuple(_entry(c, base, role) for c in entry.candidates),
        options,
        base,
        role,
        entry.threshold,
        entry.scorer,
    )
