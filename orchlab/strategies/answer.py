"""From a call (``client.complete``, ``client.ensemble``, or ``run`` on a role with a strategy) to a
plan, and from the plan to the strategy that answers it.

Which strategy: the call's ``strategy=``, else the role's ``strategy:``, else ``"fallback"`` when
the role has more than one candidate, else the plain single call. No role and no model: AUTO on
the default role (``routing.default`` when it names a role, else the first role in the YAML).

Which candidates: the call's ``candidates=`` (roles or ``'provider:model'``), else the role's
model (or the call's ``model=``), then its ``candidates:``, then its ``fallbacks:``.

Where a call takes a role it takes a target: a role, ``'provider:model'`` or a URN
(`orchlab.strategies.urn`); ``plan_for_target`` is the one place a target becomes a plan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchlab.calls import CallContext
from orchlab.errors import InvalidRequestError, OrchlabError
from orchlab.output.structured import output_schema
from orchlab.resolution import check_params, parse_target
from orchlab.strategies.base import (
    Answering,
    AnyCandidate,
    Candidate,
    EnsembleMode,
    Outcome,
    Strategy,
    finalize,
    resolve_ref,
)
from orchlab.strategies.plan import Plan, as_strings, role_candidates, role_params, selects, split_options
from orchlab.strategies.registry import (
    is_logic_object,
    logic_class,
    logic_for,
    logic_id,
    logic_object_name,
)
from orchlab.strategies.routing import TaskType
from orchlab.strategies.scorers import normalize
from orchlab.strategies.select import RULE_KEYS, rule_of
from orchlab.strategies.urn import is_urn, parse_urn
from orchlab.tools.model import NO_TOOLS, ToolOffer
from orchlab.types import (
    GenerationParams,
    LLMResponse,
    Message,
    ModelRequest,
    StreamChunk,
    check_text,
    to_messages,
)

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator


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


def make_plan(
    orch: Orchestrator,
    *,
    role: str | None,
    strategy: Any = None,
    model: str | None = None,
    candidates: Sequence[str] | None = None,
    **options: Any,
) -> Plan:
    logic = strategy if is_logic_object(strategy) else None
    if logic is not None:
        # the call's own logic object: named, never registered, never one of the built-in paths
        chosen: Strategy | str | None = logic_object_name(logic)
    else:
        chosen = None if strategy is None else logic_id(strategy)
    if chosen is None and selects(orch, role) and model is None and not candidates:
        chosen = Strategy.SELECT
    if chosen is Strategy.SELECT:
        given = {k: options.pop(k) for k in list(options) if k in RULE_KEYS}
        options["select"] = rule_of(orch, role, given)
    elif role is None and model is None and not candidates:
        role = default_role(orch)
        chosen = chosen or Strategy.AUTO
    spec = orch.config.roles.get(role) if role is not None else None
    # the binding, not `resolve`: no key is looked up before a candidate is tried
    base = role_params(orch, role) if role is not None else GenerationParams()
    cands: list[AnyCandidate]
    if chosen is Strategy.SELECT and role is None and model is None and not candidates:
        cands = []  # a URN's selector: the catalog picks every candidate
    elif candidates:
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
        chosen = logic_id(spec.strategy)
    if chosen is None:
        chosen = Strategy.FALLBACK if len(cands) > 1 else Strategy.SINGLE
    extra: dict[str, Any] = {}
    if not isinstance(chosen, Strategy):  # an added/installed logic: its own options go to plan.extra
        options, extra = split_options(options)
        if logic is None and spec is not None and spec.options and chosen == spec.strategy:
            extra = {**logic_class(chosen).from_params(dict(as_strings(spec.options))), **extra}
    return Plan(
        role=role,
        spec=spec,
        strategy=chosen,
        candidates=cands,
        base_params=base,
        mode=_enum(EnsembleMode, options.pop("mode", None), "ensemble mode"),
        task_type=_enum(TaskType, options.pop("task_type", None), "task type"),
        normalizer=options.pop("normalizer", None) or normalize,
        extra=extra,
        logic=logic,
        **options,
    )


def plan_for_target(
    orch: Orchestrator,
    target: str | None,
    *,
    strategy: Any = None,
    model: str | None = None,
    candidates: Sequence[str] | None = None,
    **options: Any,
) -> Plan:
    """The plan for a call on ``target``: a role, ``'provider:model'``, a URN, or None (the
    call's ``model=`` / ``candidates=``, else AUTO on the default role)."""
    if target is not None and is_urn(target):
        given = [k for k, v in {"strategy": strategy, "model": model, "candidates": candidates}.items() if v]
        if given:
            raise InvalidRequestError(
                f"URN {target!r} names its own logic and candidates: do not pass {', '.join(given)}= with it"
            )
        urn = parse_urn(target)
        if urn.strategy is None:
            assert urn.role is not None, "a role URN names its role"
            orch.binding(urn.role)  # an unknown role: UnknownRoleError with "did you mean"
            return make_plan(orch, role=urn.role, **options)
        for ref in urn.candidates:
            try:
                resolve_ref(orch, ref)
            except OrchlabError as exc:
                raise InvalidRequestError(
                    f"URN {target!r}: candidate {ref!r}: {exc}", parameter="candidates"
                ) from None
        if urn.role is not None:
            orch.binding(urn.role)
        return make_plan(
            orch,
            role=urn.role,
            strategy=urn.strategy,
            candidates=urn.candidates or None,
            **{**urn.options, **{k: v for k, v in options.items() if v is not None}},
        )
    if target is not None and target not in orch.config.roles and ":" in target and model is None:
        return make_plan(orch, role=None, strategy=strategy, model=target, candidates=candidates, **options)
    return make_plan(orch, role=target, strategy=strategy, model=model, candidates=candidates, **options)


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
    tags: Mapping[str, str] | None = None,
    offer: ToolOffer = NO_TOOLS,
    output: Any = None,
    cache: str | None = None,
    json_answer: bool = False,
    **options: Any,
) -> LLMResponse:
    """What answers ``client.complete`` / ``ensemble`` / ``run`` with a logic (on the engine loop).

    ``params`` are the caller's overrides, checked here (`check_params`; ``where`` and
    ``keywords`` word its errors) before any plan is made or anything is sent.
    """
    if params is not None:
        params = check_params(params, where=where, keywords=keywords)
    spec = output_schema(output) if output is not None else None
    messages = as_messages(prompt, system)
    plan = plan_for_target(orch, role, strategy=strategy, model=model, candidates=candidates, **options)
    ctx = CallContext(
        role=plan.role, strategy=str(plan.strategy), messages=messages, tags=dict(tags or {}), cache=cache
    )
    if plan.strategy is Strategy.SINGLE:
        # the plain call needs no `Answering`: one attempt, the trail attached by Observe
        cand = plan.candidates[0]
        assert isinstance(cand, Candidate), "a plan's first candidate is a target (the role's model)"
        resolved = orch.resolver.resolve_target(cand.provider, cand.model, cand.params, role=cand.role)
        request = ModelRequest(
            model=resolved.model,
            messages=messages,
            params=cand.params.merged(dict(params or {})),
            tools=offer.tools,
            tool_choice=offer.choice,
            parallel_tool_calls=offer.parallel,
            output=spec,
            json_answer=json_answer,
        )
        return await orch.dispatch.finish(ctx, orch.dispatch.attempt(ctx, resolved, request))
    answering = Answering(
        orch,
        ctx,
        messages,
        params,
        plan.spec.retry if plan.spec is not None else None,
        offer=offer,
        output=spec,
        json_answer=json_answer,
    )
    return await orch.dispatch.finish(ctx, _answer(answering, plan))


async def _answer(answering: Answering, plan: Plan) -> LLMResponse:
    return finalize(answering, await execute(answering, plan))


async def execute(answering: Answering, plan: Plan) -> Outcome:
    """``plan``'s logic answers inside ``answering`` (AUTO calls this again for the routed plan)."""
    return await logic_for(plan).answer(answering)


async def stream(
    orch: Orchestrator,
    messages: object,
    *,
    role: str,
    params: object = None,
    tags: Mapping[str, str] | None = None,
    offer: ToolOffer = NO_TOOLS,
    cache: str | None = None,
) -> AsyncIterator[StreamChunk]:
    """``client.stream`` on a role with a strategy (or a URN, or ``'provider:model'``): the logic's
    deltas, then one last chunk with the whole decision trail and the cost rolled up over every
    attempt."""
    if params is not None:
        params = check_params(params)
    plan = plan_for_target(orch, role)
    ctx = CallContext(
        role=plan.role,
        strategy=str(plan.strategy),
        messages=as_messages(messages),
        tags=dict(tags or {}),
        cache=cache,
    )
    answering = Answering(
        orch, ctx, ctx.messages, params, plan.spec.retry if plan.spec is not None else None, offer=offer
    )
    answered = first = False
    try:
        items = logic_for(plan).stream(answering)
        async with contextlib.aclosing(items):  # type: ignore[type-var]
            async for item in items:
                if isinstance(item, Outcome):
                    response = orch.dispatch.observe.answered(ctx, finalize(answering, item))
                    answered = True
                    yield StreamChunk(response=response)
                    return
                if not first:  # what the cache did for the attempt streaming (`ResponseStream.cache`)
                    first = True
                    yield StreamChunk(delta=item, cache=ctx.first_cache)
                else:
                    yield StreamChunk(delta=item)
    except BaseException as exc:
        if not answered:
            orch.dispatch.observe.failed(ctx, exc)
        raise
