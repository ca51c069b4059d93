"""The end of a call: the trail attached to its answer, and the observers told."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchlab.calls import CallRecord
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
        attempts=list(ctx.attempts),
        winner=winner,
        rationale=rationale,
        scores=dict(scores or {}),
    )


class Observe:
    """Reports each finished call (answer or error) to one client's observers."""

    def __init__(self, observers: Observers) -> None:
        self._observers = observers

    def answered(self, ctx: CallContext, response: LLMResponse) -> LLMResponse:
        """Attach the decision trail (a logic may have set its own) and tell the observers."""
        if response.decision is None:
            winner = ctx.attempts[-1] if ctx.attempts else None
            response.decision = decision_of(
                ctx,
                winner=f"{winner.provider}:{winner.model}" if winner else None,
                rationale=f"role {ctx.role!r} is bound to {response.target}",
            )
        self._observers.notify(CallRecord(ctx, response, None, time.time()))
        return response

    def failed(self, ctx: CallContext, error: BaseException) -> None:
        self._observers.notify(CallRecord(ctx, None, error, time.time()))
