"""The end of a call: the trail attached to its answer, the observers told, and what they learnt
(the trace id) attached to the answer the caller gets."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from orchlab import logs
from orchlab.calls import CallRecord
from orchlab.errors import OrchlabError
from orchlab.types import Decision

if TYPE_CHECKING:
    from orchlab.calls import CallContext, Observers
    from orchlab.types import LLMResponse


def decision_of(
    ctx: CallContext, *, winner: str | None, rationale: str, scores: dict[str, float] | None = None
) -> Decision:
    """The one place a call's `Decision` is built: its context's trail, the winner and why."""
    return Decision(
        strategy=ctx.strategy,
        task_type=ctx.task_type,
        attempts=tuple(ctx.attempts),
        winner=winner,
        rationale=rationale,
        scores=dict(scores or {}),
        tools=tuple(ctx.tool_runs),
    )


class Observe:
    """Reports each finished call (answer or error) to one client's observers."""

    def __init__(self, observers: Observers) -> None:
        self._observers = observers

    def answered(self, ctx: CallContext, response: LLMResponse) -> LLMResponse:
        """The response with its decision trail (a logic may have attached its own) and the facts
        the observers returned (the trace id): what the caller gets."""
        if response.decision is None:
            winner = ctx.attempts[-1] if ctx.attempts else None
            response = replace(
                response,
                decision=decision_of(
                    ctx,
                    winner=f"{winner.provider}:{winner.model}" if winner else None,
                    rationale=f"role {ctx.role!r} is bound to {response.target}",
                ),
            )
        facts = self._observers.notify(CallRecord(ctx, response, None, time.time()))
        if facts is not None and facts.trace_id is not None:
            response = replace(response, trace_id=facts.trace_id)
        logs.call_finished(ctx, response, None, response.trace_id)
        return response

    def failed(self, ctx: CallContext, error: BaseException) -> None:
        """Tell the observers; an orchlab error gets the trace id (``OrchlabError.trace_id``
        exists for it: an SDK's or Python's exception is never patched)."""
        facts = self._observers.notify(CallRecord(ctx, None, error, time.time()))
        trace_id = facts.trace_id if facts is not None else None
        if trace_id is not None and isinstance(error, OrchlabError):
            error.trace_id = trace_id
        logs.call_finished(ctx, None, error, trace_id)
