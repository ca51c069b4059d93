"""`delegate`: give a role a task and tools; it calls the model, runs the tools the model asks
for (several at once when it asks for several), sends the results back, and repeats until the
model answers in text. For example:

    r = client.delegate("Weather in Paris and Oslo, and the sum of the temperatures?",
                        role="assistant", tools=[get_weather, add])
    print(r.content, r.cost_usd)
    print(r.decision.explain())          # every step's attempt, then every tool run

- **Stops** on a text answer (returned), after ``max_steps`` model calls while the model still
  asks for tools (`ToolLoopError`, holding the last answer), or when a budget refuses the next
  step (`BudgetExceededError`: checked before each step is sent, as for any call).
- **One call**: the whole loop is one trace (a CHAT_MODEL span per step, a TOOL span per tool
  run), one decision trail (``decision.attempts`` and ``decision.tools``), its cost and usage
  summed over every step; the per-call budget covers the whole loop.
- **Any logic**: each step is answered by the role's logic (fallback, race, ...) with the
  conversation so far; a candidate that cannot take it (a model without tool support) fails
  before sending and a fallback moves on. An answer that calls tools is never taken for an
  empty one: a cascade accepts it unscored (the next step starts the cascade again), a race
  takes it as a good answer, a vote groups answers by their calls (the same names and
  arguments, in any order) against the text answers, a chain returns a draft that calls tools
  as it is (a refiner is offered the tools with ``tool_choice`` ``none``), a judge is shown the
  calls as text and is not offered the tools, ``fuse`` lets the vote decide a step where a
  proposal calls tools (an aggregator writes text), and AUTO routes every step afresh.
- ``on_tool``: a callable told of each tool run (a `ToolRun`) as it finishes, on the loop's
  thread (``%%llm --tools`` shows each call with it).
- ``tool_choice`` applies to the first step only (later steps are ``auto``), so ``required``
  cannot loop forever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from orchlab.calls import CallContext
from orchlab.errors import InvalidRequestError, ToolLoopError
from orchlab.resolution import check_params
from orchlab.strategies.answer import as_messages, execute, plan_for_target
from orchlab.strategies.base import Answering, finalize
from orchlab.tools.functions import FunctionTool, run_calls
from orchlab.tools.model import Tool, ToolOffer, ToolRun
from orchlab.tools.toolsets import make_offer
from orchlab.types import LLMResponse, Message

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

DEFAULT_MAX_STEPS = 8


async def delegate(
    orch: Orchestrator,
    task: object,
    *,
    role: str | None = None,
    tools: object = None,
    toolset: str | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    tool_choice: object = None,
    parallel_tool_calls: bool | None = None,
    system: str | None = None,
    params: object = None,
    on_tool: Callable[[ToolRun], object] | None = None,
) -> LLMResponse:
    """The loop (see the module docstring); ``task`` is a string or messages."""
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise InvalidRequestError(
            f"max_steps must be a positive integer, got {max_steps!r}", parameter="max_steps"
        )
    if params is not None:
        params = check_params(params, where="delegate()")
    messages = list(as_messages(task, system))
    plan = plan_for_target(orch, role)
    spec = orch.config.roles.get(role) if role is not None else None
    first, found = make_offer(
        orch.config.toolsets,
        spec.toolset if spec is not None else None,
        tools=tools,
        toolset=toolset,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
    )
    if not first.tools:
        raise InvalidRequestError(
            "delegate() needs tools: pass tools=[...] or toolset=..., or give the role a toolset:",
            parameter="tools",
        )
    schema_only = [t.name for t in found if isinstance(t, Tool)]
    if schema_only:
        raise InvalidRequestError(
            f"delegate() runs the tools it offers, but {', '.join(schema_only)} has no function (an "
            "orchlab.Tool or tool JSON is a schema only): pass the Python function or @orchlab.tool",
            parameter="tools",
        )
    runnable: dict[str, FunctionTool] = {t.name: t for t in found if isinstance(t, FunctionTool)}
    later = ToolOffer(first.tools, None, first.parallel)
    ctx = CallContext(role=plan.role, strategy="delegate", messages=tuple(messages))
    ctx.tags["orchlab.logic"] = str(plan.strategy)
    retry = plan.spec.retry if plan.spec is not None else None
    try:
        for step in range(1, max_steps + 1):
            answering = Answering(
                orch, ctx, tuple(messages), params, retry, offer=first if step == 1 else later
            )
            answering.prefix = f"step {step} / "
            outcome = await execute(answering, plan)
            answer = outcome.answer.response
            calls = answer.tool_calls
            if not calls:
                return orch.dispatch.observe.answered(ctx, _final(answering, outcome, step))
            if step == max_steps:
                last = _final(answering, outcome, step)
                names = ", ".join(dict.fromkeys(c.name for c in calls))
                raise ToolLoopError(
                    f"delegate() reached max_steps={max_steps} and the model still asks for tools "
                    f"({names}): no final answer. Raise max_steps or narrow the task; the last answer, "
                    "its trail and cost are on this error's .response",
                    steps=step,
                    response=last,
                )
            messages.append(Message("assistant", answer.content, tool_calls=calls))
            runs = await run_calls(calls, runnable, step, on_tool)
            ctx.tool_runs.extend(runs)
            messages.extend(
                Message("tool", r.result.content, tool_call_id=r.result.call_id, is_error=r.result.is_error)
                for r in runs
            )
    except BaseException as exc:
        orch.dispatch.observe.failed(ctx, exc)
        raise
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _final(answering: Answering, outcome: Any, steps: int) -> LLMResponse:
    """The last answer with every step's usage and cost, and the loop's decision trail."""
    response = finalize(answering, outcome)
    runs = answering.ctx.tool_runs
    counts = Counter(r.call.name for r in runs)
    used = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.items()) or "none"
    errors = sum(1 for r in runs if r.result.is_error)
    rationale = (
        f"{steps} step{'s' if steps != 1 else ''}, {len(runs)} tool run{'s' if len(runs) != 1 else ''} "
        f"({used}{f'; {errors} failed' if errors else ''}); last step: {outcome.rationale}"
    )
    assert response.decision is not None
    return replace(response, decision=replace(response.decision, rationale=rationale))
