"""AUTO: classify the task (rules, an LLM, or both), then follow the ``routing:`` table to a role
or a target, and answer with that role's logic (`orchlab.strategies.routing`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from orchlab.config.schema import Strategy
from orchlab.strategies.base import FALL_THROUGH, Answering, Outcome, resolve_ref
from orchlab.strategies.logic import Logic, choice
from orchlab.strategies.plan import Plan, role_candidates, role_params, selects
from orchlab.strategies.routing import (
    CLASSIFY_PROMPT,
    Classification,
    TaskType,
    classify,
    parse_task_type,
    route_for,
)
from orchlab.types import Message

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator


class Auto(Logic):
    strategy = Strategy.AUTO
    params: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        "tier": choice("fast", "standard", "advanced"),
        "task_type": TaskType,
    }

    async def answer(self, answering: Answering) -> Outcome:
        from orchlab.strategies.registry import logic_for

        plan = self.plan
        cls = await _classify(answering, plan)
        answering.ctx.task_type = cls.task_type.value
        routing = answering.orch.config.routing
        remaining = answering.orch.budgets.remaining_usd() if routing.low_budget is not None else None
        ref, why = route_for(routing, cls.task_type, plan.tier, remaining_usd=remaining)
        took = f"{cls.elapsed_s * 1e6:.0f} µs" if cls.source == "rules" else cls.source
        head = f"task {cls.task_type.value} ({cls.source}: {cls.reason}; {took})"
        if ref is None:
            if plan.role is None:
                chain = Strategy.FALLBACK if len(plan.candidates) > 1 else Strategy.SINGLE
                sub = replace(plan, strategy=chain)
                head += "; no route: the call's candidates"
            else:
                sub = _routed_plan(answering.orch, plan, plan.role)
                head += f"; no route: role {plan.role!r}"
        elif ref in answering.orch.config.roles:
            sub = _routed_plan(answering.orch, plan, ref)
            answering.ctx.role = ref
            head += f"; {why} -> role {ref!r}"
        else:
            target = resolve_ref(answering.orch, ref, params=plan.base_params)
            sub = replace(plan, strategy=Strategy.SINGLE, candidates=[target])
            head += f"; {why} -> {ref}"
        if sub.spec is not None and sub.spec.retry is not None:
            answering.retry = sub.spec.retry
        outcome = await logic_for(sub).answer(answering)
        head += f" ({sub.strategy})"
        return Outcome(outcome.answer, f"{head}; {outcome.rationale}", outcome.scores)


async def _classify(answering: Answering, plan: Plan) -> Classification:
    if plan.task_type is not None:
        return Classification(plan.task_type, "named by the caller", "given")
    routing = answering.orch.config.routing
    rules = classify(answering.question)
    if routing.classifier == "rules" or (
        routing.classifier == "hybrid" and rules.task_type != TaskType.GENERAL
    ):
        return rules
    assert routing.classifier_role is not None
    classifier = answering.candidate(routing.classifier_role)
    prompt = CLASSIFY_PROMPT.format(
        labels=", ".join(t.value for t in TaskType), text=answering.question[:2000]
    )
    try:
        answer = await answering.call(
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


def _routed_plan(orch: Orchestrator, plan: Plan, role: str) -> Plan:
    spec = orch.config.roles[role]
    cands = plan.candidates if role == plan.role else role_candidates(orch, role)
    if spec.strategy is not None and spec.strategy is not Strategy.AUTO:
        chosen = spec.strategy
    elif selects(orch, role):
        chosen = Strategy.SELECT  # the catalog picks, with the task type AUTO found
    else:
        chosen = Strategy.FALLBACK if len(cands) > 1 else Strategy.SINGLE
    return replace(
        plan, role=role, spec=spec, strategy=chosen, candidates=cands, base_params=role_params(orch, role)
    )
