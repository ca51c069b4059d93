"""The checks before an attempt sends anything, as an explicit ordered list of passes.

A pass has one method, ``admit(flight, request)``: it may refuse the request by raising an orchlab
error (nothing is sent), answer it itself by returning a response (nothing is sent; the
reservation is given back), or return None to let the next pass look. `default_passes` is the
order every call goes through:

1. `ContextWindow`: a prompt that cannot fit the model's window is a `ContextWindowError`. The
   prompt is counted only when a cheap ceiling (`tokens.upper_bound`) says it might not fit; then
   by the model's own tokenizer, tiktoken, or a documented estimate (`orchlab.catalog.tokens`).
   The check is ``prompt + max_tokens > context window`` (``max_tokens`` unset counts as 0).
2. `BudgetAdmission`: reserve the attempt's worst-case cost against every budget that applies
   (`BudgetExceededError`). An unpriced model under a budget is refused (`UnknownCostError`): its
   worst case cannot be bounded; so is a priced model when neither ``max_tokens``, the model's
   max output tokens nor its context window bounds the output.
3. `EmptyAnswer`: ``max_tokens=0`` is answered with the empty answer, the same on every provider
   (their APIs refuse 0 or read it as "no limit"), and nothing is billed.

0. `orchlab.pipeline.cache.ResponseCache` (when the client has one): a stored answer of the
   same fully resolved request, for $0; on a miss the settled answer is stored.

Later passes (memory, output format) slot into this list.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from orchlab import logs
from orchlab.catalog.tokens import PER_MESSAGE, REPLY_PRIMING, count_prompt, count_prompt_sync
from orchlab.errors import ContextWindowError, UnknownCostError
from orchlab.types import LLMResponse, Usage

if TYPE_CHECKING:
    from orchlab.budgets import Budgets, Reservation
    from orchlab.calls import CallContext
    from orchlab.pipeline.inflight import InFlight
    from orchlab.providers.base import Provider
    from orchlab.types import ModelRequest

UNSENT_NOTE = "max_tokens=0: an empty answer, nothing was sent"


class Pass(Protocol):
    """One check before sending. ``admit_sync`` is its twin for the blocking ``run()`` path."""

    async def admit(
        self, ctx: CallContext, flight: InFlight, request: ModelRequest
    ) -> LLMResponse | None: ...

    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None: ...


class SyncPass(ABC):
    """A pass that never waits: ``admit`` is ``admit_sync``."""

    async def admit(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        return self.admit_sync(ctx, flight, request)

    @abstractmethod
    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        """Refuse ``request`` (raise an orchlab error), answer it (a response), or let it pass (None)."""


class ContextWindow:
    """Refuse a prompt that cannot fit the model's context window (`ContextWindowError`)."""

    def __init__(self, providers: Callable[[str], Provider]) -> None:
        self._providers = providers

    async def admit(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        if self._must_count(flight, request):
            flight.count = await count_prompt(self._providers(flight.provider), request)
            self._check(flight, request)
        return None

    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        if self._must_count(flight, request):
            flight.count = count_prompt_sync(self._providers(flight.provider), request)
            self._check(flight, request)
        return None

    @staticmethod
    def _must_count(flight: InFlight, request: ModelRequest) -> bool:
        """Count only when the cheap ceiling says the prompt might not fit."""
        window = flight.entry.info.context_window
        return window is not None and flight.ceiling + (request.params.max_tokens or 0) > window

    @staticmethod
    def _check(flight: InFlight, request: ModelRequest) -> None:
        info, count = flight.entry.info, flight.count
        max_out = request.params.max_tokens or 0
        window = info.context_window
        if count is not None and window is not None and count.tokens + max_out > window:
            raise ContextWindowError(
                f"{info.target}: the prompt has {count.tokens:,} tokens ({count.method}) and "
                f"max_tokens is {max_out:,}: {count.tokens + max_out:,} > the model's context window "
                f"of {window:,} tokens. Nothing was sent. Shorten the prompt, lower max_tokens, or "
                "pick a model with a larger window (client.catalog.choose_model(prompt_tokens=...)).",
                provider=flight.provider,
                model=request.model,
                prompt_tokens=count.tokens,
                max_output_tokens=max_out,
                context_window=window,
            )


class BudgetAdmission(SyncPass):
    """Reserve the attempt's worst-case cost against every budget that applies."""

    def __init__(self, budgets: Budgets) -> None:
        self._budgets = budgets

    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        if self._budgets.applies(flight.budget_role):
            flight.reservation = reservation = self._reserve(ctx, flight, request)
            logs.decision(
                "budget reservation",
                role=flight.budget_role,
                target=flight.entry.info.target,
                reserved_usd=reservation.amount,
            )
        return None

    def _reserve(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> Reservation:
        budgets = self._budgets
        info, price = flight.entry.info, flight.entry.price
        scope, limit = budgets.first_limit(flight.budget_role)
        if price is None:
            raise UnknownCostError(
                f"{info.target} has no known price and a budget applies, so the call is refused "
                f"before sending: {info.price_note}",
                scope=scope,
                limit_usd=limit,
                requested_usd=math.inf,
                spent_usd=budgets.spent_usd(),
            )
        if price.free:
            return budgets.reserve(ctx, flight.budget_role, info.target, 0.0)
        worst = worst_case(flight, request)
        if worst is None:
            raise UnknownCostError(
                f"{info.target}: a budget applies but nothing bounds this call's output tokens "
                "(no max_tokens, and the catalog knows no max output or context window for the "
                "model), so its worst-case cost is unknown and the call is refused before sending. "
                "Set params.max_tokens for the role, or max_output_tokens under models: in the YAML.",
                scope=scope,
                limit_usd=limit,
                requested_usd=math.inf,
                spent_usd=budgets.spent_usd(),
            )
        amount, prompt, out = worst
        return budgets.reserve(ctx, flight.budget_role, info.target, amount, tokens=(prompt, out))


def worst_case(flight: InFlight, request: ModelRequest) -> tuple[float, int, int] | None:
    """The attempt's worst-case cost: (USD, prompt tokens at most, output tokens at most), at the
    model's known price (``flight.entry.price``); None when nothing bounds the output tokens.
    Also used by the gateway's per-key budgets (`orchlab.serve.key_budgets`)."""
    info, price = flight.entry.info, flight.entry.price
    assert price is not None, "an unpriced model has no worst case"
    if price.free:
        return 0.0, 0, 0
    prompt = flight.ceiling
    count = flight.count
    if count is not None and count.exact:
        # an exact count, with the chat overhead allowed for twice
        prompt = min(prompt, count.tokens + PER_MESSAGE * len(request.messages) + REPLY_PRIMING)
    out = request.params.max_tokens
    if out is None:
        out = info.max_output_tokens
    if out is None and info.context_window is not None:
        out = max(info.context_window - prompt, 0)
    if out is None:
        return None
    out = max(out, 0)  # a reservation is never negative (nor is Budgets.reserve's amount)
    return price.cost(Usage(input_tokens=prompt, output_tokens=out)), prompt, out


class EmptyAnswer(SyncPass):
    """``max_tokens=0``: the empty answer, given without sending anything."""

    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        if request.params.max_tokens != 0:
            return None
        return LLMResponse(
            "",
            flight.provider,
            request.model,
            role=flight.role,
            finish_reason="length",
            cost_usd=0.0,
            cost_note=UNSENT_NOTE,
        )


def default_passes(
    budgets: Budgets, providers: Callable[[str], Provider], *, cache: Pass | None = None
) -> list[Pass]:
    """The passes every attempt goes through, in order; the response cache (when given) first:
    a stored answer costs nothing, so no budget or window check is needed for it."""
    first = [cache] if cache is not None else []
    return [*first, ContextWindow(providers), BudgetAdmission(budgets), EmptyAnswer()]
