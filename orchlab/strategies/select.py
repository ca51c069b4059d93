"""SELECT: a role that says what it needs (``select:``) instead of naming a model.

::

    roles:
      llm.review:
        select: {capability: code, tier: standard, max_cost_per_call: 0.002, prefer: local,
                 providers: [openai, anthropic, gpu-pool]}
        retry: {retries: 0, cooldown_after: 1}

Every call picks again (`orchlab.catalog.select.select_model`) from the catalog as it stands: the
models the providers in scope list (local servers are asked once, on first use, and again 30 s
after they could not be reached; ``client.catalog.discover()`` asks again at any time), minus
those whose provider has no key, is cooling down after failures, or is a pool whose deployments
are all down. The chosen model is called first, then the next two in rank, then the role's
``fallbacks:``, as a fallback chain. ``decision.rationale`` starts with the choice, its estimated
cost per call and what was ruled out and why; the answering attempt's note has the estimate.

Tier: a call's ``tier=``, else its ``risk=`` / ``complexity=`` (low, medium, high), else its
task type (``task_type=``, or the one AUTO classified), through ``routing.tiers`` (defaults:
`orchlab.config.schema.DEFAULT_RISK_COMPLEXITY`, `DEFAULT_TASK_TIERS`), else the rule's ``tier:``.

URN: ``urn:orchlab:select:capability=code;tier=standard;providers=openai,gpu-pool``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from orchlab.catalog.model_info import CAPABILITIES, Tier
from orchlab.catalog.select import Selection, select_model
from orchlab.config.schema import (
    DEFAULT_RISK_COMPLEXITY,
    DEFAULT_TASK_TIERS,
    SelectConfig,
    Strategy,
    TiersConfig,
)
from orchlab.errors import AuthError, InvalidRequestError
from orchlab.providers.registry import kind_of, provider_class
from orchlab.strategies.base import Answering, AnyCandidate, Candidate, Outcome
from orchlab.strategies.fallback import run_chain
from orchlab.strategies.logic import Logic, choice

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

LEVELS = ("low", "medium", "high")
TIERS = tuple(t.value for t in Tier)
RANKED_TRIED = 3
"""How many ranked models a call may try before the role's fallbacks."""
RETRY_DISCOVERY_S = 30.0
DISCOVERY_TIMEOUT_S = 5.0
RULE_KEYS = frozenset(SelectConfig.model_fields) - {"tier"}
"""A call's (or URN's) options that are selector rule keys (``tier`` is the call's own: it wins)."""


def _cost(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be a number >= 0")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a whole number > 0")
    return number


def _names(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(","))
    if not all(names):
        raise ValueError("is a comma-separated list of provider entries")
    return names


def tier_for(
    tiers: TiersConfig,
    *,
    tier: str | None = None,
    risk: str | None = None,
    complexity: str | None = None,
    task_type: str | None = None,
) -> tuple[Tier | None, str]:
    """The catalog tier a call asks for, and why (None: the call says nothing: the rule's tier)."""
    if tier is not None:
        return _tier(tier, "tier"), "tier="
    if risk is not None or complexity is not None:
        r, c = _level(risk, "risk"), _level(complexity, "complexity")
        table = {**DEFAULT_RISK_COMPLEXITY.get(r, {}), **tiers.risk_complexity.get(r, {})}  # type: ignore[call-overload]
        return Tier(table[c]), f"risk {r}, complexity {c} -> routing.tiers"
    if task_type is not None:
        table = {**DEFAULT_TASK_TIERS, **tiers.task_types}
        if task_type in table:
            return Tier(table[task_type]), f"task {task_type} -> routing.tiers"
    return None, ""


def _tier(value: str, what: str) -> Tier:
    try:
        return Tier(str(value).lower())
    except ValueError:
        raise InvalidRequestError(
            f"unknown {what} {value!r}; use one of {', '.join(TIERS)}", parameter=what
        ) from None


def _level(value: str | None, what: str) -> str:
    if value is None:
        return "medium"
    if value not in LEVELS:
        raise InvalidRequestError(f"unknown {what} {value!r}; use one of {', '.join(LEVELS)}", parameter=what)
    return value


def rule_of(orch: Orchestrator, role: str | None, given: Mapping[str, Any]) -> SelectConfig:
    """The selector rule: the role's ``select:``, with the call's (or URN's) rule keys over it."""
    spec = orch.config.roles.get(role) if role is not None else None
    base = spec.select if spec is not None and spec.select is not None else SelectConfig()
    keys = {k: (list(v) if k == "providers" else v) for k, v in given.items() if k in RULE_KEYS}
    if not keys:
        return base
    try:
        return SelectConfig.model_validate({**base.model_dump(exclude_unset=True), **keys})
    except Exception as exc:
        raise InvalidRequestError(f"select: {exc}", parameter="select") from None


async def select_for(
    orch: Orchestrator,
    rule: SelectConfig,
    *,
    role: str | None = None,
    tier: str | None = None,
    risk: str | None = None,
    complexity: str | None = None,
    task_type: str | None = None,
    output_tokens: int | None = None,
) -> Selection:
    """What ``rule`` picks now (discovering local servers first when the rule says so)."""
    for name in rule.providers:
        orch.resolver.provider_config(name)  # an unknown entry: UnknownProviderError, "did you mean"
    if rule.discover:
        await _discover(orch, list(rule.providers) or list(orch.config.providers))
    wanted, why = tier_for(
        orch.config.routing.tiers, tier=tier, risk=risk, complexity=complexity, task_type=task_type
    )
    return select_model(
        orch.catalog,
        rule,
        tier=wanted,
        tier_why=why,
        output_tokens=output_tokens,
        unavailable=lambda provider: unavailable(orch, provider),
        role=role,
    )


def unavailable(orch: Orchestrator, provider: str) -> str | None:
    """Why ``provider`` cannot be picked now, or None."""
    left = orch.health.cooling(provider)
    if left is not None:
        return f"{provider} is cooling down ({left:.0f}s left) after failing"
    spec = orch.config.providers[provider]
    if spec.deployments:
        pool = orch.providers.get(provider)
        why = pool.available() if hasattr(pool, "available") else None
        if why is not None:
            return str(why)
    error = orch.catalog.discovery_errors.get(provider)
    if error is not None:
        return f"{provider} did not answer when asked for its models ({type(error).__name__})"
    try:
        orch.resolver.provider_settings(provider)
    except AuthError as exc:
        return f"no API key (set {exc.env_var})" if exc.env_var else "no API key"
    return None


async def _discover(orch: Orchestrator, names: list[str]) -> None:
    """Ask the local servers among ``names`` for their models: those never asked, and those that
    could not be reached more than `RETRY_DISCOVERY_S` ago."""
    catalog = orch.catalog
    now = time.monotonic()
    due = []
    for name in names:
        spec = orch.config.providers[name]
        kind = kind_of(name, spec.type)
        if kind is None:
            continue
        cls = provider_class(kind, provider=name)
        if not cls.is_local or (cls.default_api_base is None and not spec.deployments):
            continue  # a cloud provider, or an in-process model: nothing to ask
        asked = catalog.discovered_at.get(name)
        if asked is None or (name in catalog.discovery_errors and now - asked > RETRY_DISCOVERY_S):
            due.append(name)
    if due:
        try:
            async with asyncio.timeout(DISCOVERY_TIMEOUT_S):
                await catalog.adiscover(due, warn=False)
        except TimeoutError:
            pass  # each provider that did not answer in time is asked again later


class Select(Logic):
    """The model the catalog picks for the role's ``select:`` rule, then the next in rank."""

    strategy = Strategy.SELECT
    params: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        "capability": choice(*sorted(CAPABILITIES)),
        "tier": choice(*TIERS),
        "max_cost_per_call": _cost,
        "prefer": choice("cheapest", "local", "cloud"),
        "providers": _names,
        "prompt_tokens": _count,
        "output_tokens": _count,
        "discover": choice("true", "false"),
        "risk": choice(*LEVELS),
        "complexity": choice(*LEVELS),
        "task_type": str,
    }

    async def answer(self, answering: Answering) -> Outcome:
        plan = self.plan
        orch = answering.orch
        rule = plan.select if plan.select is not None else rule_of(orch, plan.role, {})
        max_tokens = plan.base_params.max_tokens
        selection = await select_for(
            orch,
            rule,
            role=plan.role,
            tier=plan.tier,
            risk=plan.risk,
            complexity=plan.complexity,
            task_type=plan.task_type.value if plan.task_type is not None else answering.ctx.task_type,
            output_tokens=max_tokens or None,
        )
        ranked: list[AnyCandidate] = [
            Candidate(info.provider, info.model, plan.base_params, role=plan.role)
            for info, _ in selection.ranked[:RANKED_TRIED]
        ]
        outcome = await run_chain(answering, [*ranked, *plan.candidates], label="select")
        costs = {info.target: cost for info, cost in selection.ranked}
        won = outcome.answer.attempt
        estimate = costs.get(f"{won.provider}:{won.model}")
        if estimate is not None:
            outcome.answer.annotate(f"selected: estimated ${estimate:.6f} per call")
        return Outcome(outcome.answer, f"{selection.rationale}; {outcome.rationale}", outcome.scores)
