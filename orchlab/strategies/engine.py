"""From a call (``client.complete``, ``client.ensemble``, or ``run`` on a role with a strategy) to a
plan, and from the plan to the strategy that answers it.

Which strategy: the call's ``strategy=``, else the role's ``strategy:``, else ``"fallback"`` when
the role has more than one candidate, else the plain single call. No role and no model: AUTO on
the default role (``routing.default`` when it names a role, else the first role in the YAML).

Which candidates: the call's ``candidates=`` (roles or ``'provider:model'``), else the role's
model (or the call's ``model=``), then its ``candidates:``, then its ``fallbacks:``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from orchlab.calls import CallContext
from orchlab.config.schema import CandidateConfig, RoleConfig
from orchlab.errors import InvalidRequestError
from orchlab.resolution import check_params, params_from, parse_target
from orchlab.strategies.base import (
    FALL_THROUGH,
    Candidate,
    EnsembleMode,
    Outcome,
    Run,
    Strategy,
    finalize,
    ms,
    resolve_ref,
)
from orchlab.strategies.cascade import run_cascade
from orchlab.strategies.ensemble import run_ensemble
from orchlab.strategies.fallback import run_chain
from orchlab.strategies.race import run_race
from orchlab.strategies.routing import (
    CLASSIFY_PROMPT,
    Classification,
    TaskType,
    classify,
    parse_task_type,
    route_for,
)
from orchlab.strategies.scorers import Scorer, make_scorer, normalize
from orchlab.strategies.selection import select
from orchlab.types import GenerationParams, LLMResponse, Message, ModelRequest, check_text, to_messages

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

SINGLE = "single"
FALLBACK = "fallback"


@dataclass
class Plan:
    role: str | None
    spec: RoleConfig | None
    strategy: str
    candidates: list[Candidate]
    base_params: GenerationParams = field(default_factory=GenerationParams)
    scorer: Any = None
    threshold: float | None = None
    mode: EnsembleMode | None = None
    judge: str | None = None
    aggregator: str | None = None
    tier: str | None = None
    task_type: TaskType | None = None
    normalizer: Callable[[str], str] = normalize


def as_messages(prompt: object, system: str | None = None) -> tuple[Message, ...]:
    if isinstance(prompt, str):
        check_text(prompt, "prompt")
        messages = [Message("user", prompt)]
    else:
        messages = to_messages(prompt)
    if system is not None:
        check_text(system, "system")
        messages.insert(0, Message("system", system))
    return tuple(messages)


def _enum(cls: Any, value: Any, what: str) -> Any:
    if value is None or isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        raise InvalidRequestError(
            f"unknown {what} {value!r}; use one of {', '.join(m.value for m in cls)}"
        ) from None


def default_role(orch: Orchestrator) -> str:
    default = orch.config.routing.default
    if default is not None and default in orch.config.roles:
        return default
    if not orch.config.roles:
        raise InvalidRequestError("this config defines no roles: pass model='provider:model'")
    return next(iter(orch.config.roles))


def role_candidates(orch: Orchestrator, role: str, model: str | None = None) -> list[Candidate]:
    """The role's model (or ``model``), then its ``candidates:``, then its ``fallbacks:``."""
    bound = orch.binding(role)
    base = bound.params
    if model is not None:
        provider, name = parse_target(model)
        out = [Candidate(provider, name, base, role=role)]
    else:
        out = [Candidate(bound.provider, bound.model, base, role=role)]
    spec = orch.config.roles[role]
    for entry in [*spec.candidates, *spec.fallbacks]:
        if isinstance(entry, CandidateConfig):
            provider, name = parse_target(entry.target)
            params = base
            if entry.params is not None:
                params = base.merged(params_from(entry.params).as_dict())
            out.append(Candidate(provider, name, params, role, entry.threshold, entry.scorer))
        else:
            provider, name = parse_target(entry)
            out.append(Candidate(provider, name, base, role=role))
    return out


def make_plan(
    orch: Orchestrator,
    *,
    role: str | None,
    strategy: Any = None,
    model: str | None = None,
    candidates: Sequence[str] | None = None,
    **options: Any,
) -> Plan:
    chosen = _enum(Strategy, strategy, "strategy")
    if role is None and model is None and not candidates:
        role = default_role(orch)
        chosen = chosen or Strategy.AUTO
    spec = orch.config.roles.get(role) if role is not None else None
    # the binding, not `resolve`: no key is looked up before a candidate is tried
    base = orch.binding(role).params if role is not None else GenerationParams()
    if candidates:
        cands = [resolve_ref(orch, ref, params=base) for ref in candidates]
        if model is not None:
            provider, name = parse_target(model)
            cands.insert(0, Candidate(provider, name, base, role=role))
    elif role is not None:
        cands = role_candidates(orch, role, model)
    else:
        assert model is not None
        provider, name = parse_target(model)
        orch.resolver.provider_config(provider)
        cands = [Candidate(provider, name, base)]
    if chosen is None and spec is not None and spec.strategy is not None:
        chosen = Strategy(spec.strategy)
    name = chosen.value if chosen is not None else (FALLBACK if len(cands) > 1 else SINGLE)
    return Plan(
        role=role,
        spec=spec,
        strategy=name,
        candidates=cands,
        base_params=base,
        mode=_enum(EnsembleMode, options.pop("mode", None), "ensemble mode"),
        task_type=_enum(TaskType, options.pop("task_type", None), "task type"),
        normalizer=options.pop("normalizer", None) or normalize,
        **options,
    )


async def complete(
    orch: Orchestrator,
    prompt: object,
    *,
    role: str | None = None,
    strategy: Any = None,
    model: str | None = None,
    candidates: Sequence[str] | None = None,
    system: str | None = None,
    params: object = None,
    where: str = "params_override",
    keywords: tuple[str, ...] = (),
    **options: Any,
) -> LLMResponse:
    """The engine behind ``client.complete`` / ``ensemble`` / ``run`` (runs on the engine loop).

    ``params`` are the caller's overrides, checked here (`check_params`; ``where`` and
    ``keywords`` word its errors) before any plan is made or anything is sent.
    """
    if params is not None:
        params = check_params(params, where=where, keywords=keywords)
    messages = as_messages(prompt, system)
    plan = make_plan(orch, role=role, strategy=strategy, model=model, candidates=candidates, **options)
    ctx = CallContext(role=plan.role, strategy=plan.strategy, messages=messages)
    if plan.strategy == SINGLE:
        cand = plan.candidates[0]
        resolved = orch.resolver.resolve_target(cand.provider, cand.model, cand.params, role=cand.role)
        request = ModelRequest(
            model=resolved.model, messages=messages, params=cand.params.merged(dict(params or {}))
        )
        return await orch.dispatch.finish(ctx, orch.dispatch.attempt(ctx, resolved, request))
    run = Run(orch, ctx, messages, params, plan.spec.retry if plan.spec is not None else None)
    return await orch.dispatch.finish(ctx, _answer(run, plan))


async def _answer(run: Run, plan: Plan) -> LLMResponse:
    return finalize(run, await execute(run, plan))


async def execute(run: Run, plan: Plan) -> Outcome:
    """Run ``plan``'s strategy inside ``run`` (AUTO calls this again for the routed plan)."""
    s = plan.strategy
    cands = plan.candidates
    if s == SINGLE:
        answer = await run.call(cands[0], stage="single")
        return Outcome(answer, f"{cands[0].target} answered in {ms(answer.attempt.latency_s)}")
    if s == FALLBACK:
        return await run_chain(run, cands)
    strategy = Strategy(s)
    if strategy in (Strategy.LOCAL_ONLY, Strategy.CLOUD_ONLY, Strategy.LOCAL_FIRST, Strategy.CLOUD_FIRST):
        return await run_chain(run, select(run, strategy, cands), label=strategy.value)
    if strategy is Strategy.PARALLEL:
        config = plan.spec.parallel if plan.spec is not None else None
        spec = plan.scorer if plan.scorer is not None else (config.scorer if config is not None else None)
        scorer = make_scorer(spec, config) if spec is not None else None
        threshold = plan.threshold if plan.threshold is not None else (config.threshold if config else 1.0)
        return await run_race(run, cands, scorer=scorer, threshold=threshold)
    if strategy is Strategy.CASCADE:
        return await _cascade(run, plan)
    if strategy is Strategy.ENSEMBLE:
        ens = plan.spec.ensemble if plan.spec is not None else None
        mode = plan.mode or EnsembleMode(ens.mode if ens is not None else "vote")
        judge_ref = plan.judge or (ens.judge if ens is not None else None)
        aggregator_ref = plan.aggregator or (ens.aggregator if ens is not None else None)
        return await run_ensemble(
            run,
            cands,
            mode,
            judge=run.candidate(judge_ref, params=plan.base_params) if judge_ref else None,
            aggregator=run.candidate(aggregator_ref, params=plan.base_params) if aggregator_ref else None,
            normalizer=plan.normalizer,
        )
    return await _auto(run, plan)


async def _cascade(run: Run, plan: Plan) -> Outcome:
    config = plan.spec.cascade if plan.spec is not None else None
    default: Scorer = make_scorer(plan.scorer, config)
    threshold = plan.threshold if plan.threshold is not None else (config.threshold if config else 0.7)
    named: dict[str, Scorer] = {}

    def scorer_for(cand: Candidate) -> Scorer:
        if cand.scorer is None or plan.scorer is not None:
            return default
        if cand.scorer not in named:
            named[cand.scorer] = make_scorer(cand.scorer, config)
        return named[cand.scorer]

    stages = plan.candidates
    if config is not None and config.order == "price":
        stages = sorted(stages, key=lambda c: _price(run, c))
    return await run_cascade(run, stages, scorer_for=scorer_for, threshold=threshold)


def _price(run: Run, cand: Candidate) -> float:
    """Catalog price (input + output per Mtok) for ordering; local models cost 0, unknown sorts last."""
    price = run.orch.catalog.entry(cand.provider, cand.model).price
    return math.inf if price is None else price.input_per_mtok + price.output_per_mtok


async def _classify(run: Run, plan: Plan) -> Classification:
    if plan.task_type is not None:
        return Classification(plan.task_type, "named by the caller", "given")
    routing = run.orch.config.routing
    rules = classify(run.question)
    if routing.classifier == "rules" or (
        routing.classifier == "hybrid" and rules.task_type != TaskType.GENERAL
    ):
        return rules
    assert routing.classifier_role is not None
    classifier = run.candidate(routing.classifier_role)
    prompt = CLASSIFY_PROMPT.format(labels=", ".join(t.value for t in TaskType), text=run.question[:2000])
    try:
        answer = await run.call(
            classifier,
            stage="classify",
            messages=[Message("user", prompt)],
            params={"temperature": 0.0, "max_tokens": 16, "logprobs": False},
        )
    except FALL_THROUGH as exc:
        return replace(rules, reason=f"{rules.reason}; the LLM classifier failed ({type(exc).__name__})")
    found = parse_task_type(answer.content)
    if found is None:
        return replace(rules, reason=f"{rules.reason}; the LLM classifier said {answer.content[:30]!r}")
    return Classification(found, f"{classifier.target} said {answer.content.strip()[:30]!r}", "llm")


async def _auto(run: Run, plan: Plan) -> Outcome:
    cls = await _classify(run, plan)
    run.ctx.task_type = cls.task_type.value
    routing = run.orch.config.routing
    remaining = run.orch.budgets.remaining_usd() if routing.low_budget is not None else None
    ref, why = route_for(routing, cls.task_type, plan.tier, remaining_usd=remaining)
    took = f"{cls.elapsed_s * 1e6:.0f} µs" if cls.source == "rules" else cls.source
    head = f"task {cls.task_type.value} ({cls.source}: {cls.reason}; {took})"
    if ref is None:
        if plan.role is None:
            sub = replace(plan, strategy=FALLBACK if len(plan.candidates) > 1 else SINGLE)
            head += "; no route: the call's candidates"
        else:
            sub = _routed_plan(run.orch, plan, plan.role)
            head += f"; no route: role {plan.role!r}"
    elif ref in run.orch.config.roles:
        sub = _routed_plan(run.orch, plan, ref)
        run.ctx.role = ref
        head += f"; {why} -> role {ref!r}"
    else:
        sub = replace(plan, strategy=SINGLE, candidates=[resolve_ref(run.orch, ref, params=plan.base_params)])
        head += f"; {why} -> {ref}"
    if sub.spec is not None and sub.spec.retry is not None:
        run.retry = sub.spec.retry
    outcome = await execute(run, sub)
    head += f" ({sub.strategy})"
    return Outcome(outcome.answer, f"{head}; {outcome.rationale}", outcome.scores)


def _routed_plan(orch: Orchestrator, plan: Plan, role: str) -> Plan:
    spec = orch.config.roles[role]
    cands = plan.candidates if role == plan.role else role_candidates(orch, role)
    strategy = spec.strategy if spec.strategy not in (None, "auto") else None
    name = strategy or (FALLBACK if len(cands) > 1 else SINGLE)
    return replace(
        plan, role=role, spec=spec, strategy=name, candidates=cands, base_params=orch.binding(role).params
    )
