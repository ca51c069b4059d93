"""One provider attempt in progress, as the passes, dispatch and settle see it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchlab.budgets import Reservation
    from orchlab.calls import CallContext
    from orchlab.catalog.catalog import Entry
    from orchlab.catalog.tokens import TokenCount
    from orchlab.resolution import ResolvedLLMConfig
    from orchlab.types import Attempt, LLMResponse


@dataclass(slots=True)
class InFlight:
    """The attempt's slot in the call's trail, what the passes found, and whether anything was sent."""

    resolved: ResolvedLLMConfig
    ctx: CallContext
    slot: int
    """Where the attempt's record is in ``ctx.attempts`` (its end replaces it there)."""
    entry: Entry
    """The catalog entry of the model asked for (facts and price)."""
    budget_role: str | None
    """The role whose budgets apply: the candidate's role, else the call's."""
    ceiling: int = 0
    """A cheap upper bound of the prompt's tokens (`orchlab.catalog.tokens.upper_bound`)."""
    count: TokenCount | None = None
    """The prompt's counted tokens, when the context-window pass had to count them."""
    reservation: Reservation | None = None
    store: Callable[[LLMResponse, list[str] | None], None] | None = None
    """Set by the response cache on a miss: keeps the settled answer (never an error) and, for a
    stream, its ``pieces``."""
    pieces: list[str] | None = None
    """A streamed attempt's text deltas as they came (set by the response cache on a hit: the
    stored stream's), so a streamed hit replays the chunks the first stream had."""
    sent: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def record(self) -> Attempt:
        """The attempt's record as it stands in the trail."""
        return self.ctx.attempts[self.slot]

    @property
    def role(self) -> str | None:
        """The role the answer is labelled with (the candidate's own)."""
        return self.resolved.role

    @property
    def provider(self) -> str:
        return self.resolved.provider
