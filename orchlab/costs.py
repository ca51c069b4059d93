"""The engine's checks around each provider call: context window and budget before, cost after.

`Meter.preflight` runs before an attempt sends anything: it refuses a prompt that cannot fit the
model's context window (`ContextWindowError`) and reserves the attempt's worst-case cost against
every budget that applies (`BudgetExceededError`). `Meter.charge` sets ``response.cost_usd`` from
the actual usage (``cost_note`` says why when it is unknown; a local model costs 0.0 with a note)
and settles the reservation. `Meter.release` settles an attempt that ended without a response:
a failed one gets its reservation back, a cloud call cancelled after sending keeps its worst case
as spent.

Costs: ``cost_usd`` is computed from input, output, cache-read and cache-write tokens at the
model's prices (`orchlab.catalog.prices`); reasoning tokens are billed as output tokens, which
already count them. Precedence: a price in the YAML ``models:``; else a cost the adapter reported
itself; else genai-prices (or $0 for a local provider). A provider that reports no usage at all
gives ``cost_usd=None`` (never a silent 0), and a budget then keeps the reserved worst case as spent.

Context check: the prompt is counted only when a cheap ceiling (`tokens.upper_bound`) says it
might not fit; then by the model's own tokenizer, tiktoken, or a documented estimate
(`orchlab.catalog.tokens`). The check is ``prompt + max_tokens > context window`` (``max_tokens``
unset counts as 0: the provider then fits the answer in what is left).

A provider that reports more usage than was reserved for it is charged what it reports; the
difference is recorded as ``overrun_usd`` (response, attempt, ``client.usage()``) and an
`OrchlabWarning` is emitted once per role and model.

An unpriced model under a budget is refused (`UnknownCostError`, a `BudgetExceededError`): its
worst case cannot be bounded. So is a priced model when neither ``max_tokens``, the model's max
output tokens nor its context window bounds the output.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchlab.budgets import Reservation, money
from orchlab.catalog.tokens import (
    PER_MESSAGE,
    REPLY_PRIMING,
    TokenCount,
    count_prompt,
    count_prompt_sync,
    upper_bound,
)
from orchlab.errors import ContextWindowError, OrchlabWarning, UnknownCostError
from orchlab.types import Usage

if TYPE_CHECKING:
    from orchlab.calls import CallContext
    from orchlab.catalog.catalog import Entry
    from orchlab.orchestrator import Orchestrator
    from orchlab.resolution import ResolvedLLMConfig
    from orchlab.types import LLMResponse, ModelRequest

NO_USAGE_NOTE = "the provider reported no token usage for this call, so its cost is unknown"


@dataclass(slots=True)
class Ticket:
    """What preflight decided for one attempt: the catalog entry and the budget reservation."""

    entry: Entry
    role: str | None
    reservation: Reservation | None = None
    prompt_tokens: TokenCount | None = None


class Meter:
    """Preflight checks and cost accounting for one orchestrator."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orch = orchestrator
        self._warned: set[tuple[str | None, str]] = set()

    async def preflight(self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest) -> Ticket:
        """Check the context window and reserve the worst-case cost; raise before anything is sent."""
        entry = self._orch.catalog.entry(resolved.provider, request.model)
        ceiling = upper_bound(request.messages)
        count = None
        if self._must_count(entry, request, ceiling):
            count = await count_prompt(self._orch.provider(resolved.provider), request)
        return self._admit(ctx, resolved, request, entry, ceiling, count)

    def preflight_sync(self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest) -> Ticket:
        """`preflight` for the sync API (counting, when needed, runs in the caller's thread)."""
        entry = self._orch.catalog.entry(resolved.provider, request.model)
        ceiling = upper_bound(request.messages)
        count = None
        if self._must_count(entry, request, ceiling):
            count = count_prompt_sync(self._orch.provider(resolved.provider), request)
        return self._admit(ctx, resolved, request, entry, ceiling, count)

    @staticmethod
    def _must_count(entry: Entry, request: ModelRequest, ceiling: int) -> bool:
        """Count only when the cheap ceiling says the prompt might not fit."""
        window = entry.info.context_window
        return window is not None and ceiling + (request.params.max_tokens or 0) > window

    def _admit(
        self,
        ctx: CallContext,
        resolved: ResolvedLLMConfig,
        request: ModelRequest,
        entry: Entry,
        ceiling: int,
        count: TokenCount | None,
    ) -> Ticket:
        info = entry.info
        max_out = request.params.max_tokens or 0
        window = info.context_window
        if count is not None and window is not None and count.tokens + max_out > window:
            raise ContextWindowError(
                f"{info.target}: the prompt has {count.tokens:,} tokens ({count.method}) and "
                f"max_tokens is {max_out:,}: {count.tokens + max_out:,} > the model's context window "
                f"of {window:,} tokens. Nothing was sent. Shorten the prompt, lower max_tokens, or "
                "pick a model with a larger window (client.catalog.choose_model(prompt_tokens=...)).",
                provider=resolved.provider,
                model=request.model,
                prompt_tokens=count.tokens,
                max_output_tokens=max_out,
                context_window=window,
            )
        role = resolved.role if resolved.role is not None else ctx.role
        ticket = Ticket(entry, role, prompt_tokens=count)
        if self._orch.budgets.applies(role):
            ticket.reservation = self._reserve(ctx, ticket, request, ceiling, count)
        return ticket

    def _reserve(
        self, ctx: CallContext, ticket: Ticket, request: ModelRequest, ceiling: int, count: TokenCount | None
    ) -> Reservation:
        budgets = self._orch.budgets
        info, price = ticket.entry.info, ticket.entry.price
        scope, limit = budgets.first_limit(ticket.role)
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
            return budgets.reserve(ctx, ticket.role, info.target, 0.0)
        prompt = ceiling
        if count is not None and count.exact:
            # an exact count, with the chat overhead allowed for twice
            prompt = min(ceiling, count.tokens + PER_MESSAGE * len(request.messages) + REPLY_PRIMING)
        out = request.params.max_tokens
        if out is None:
            out = info.max_output_tokens
        if out is None and info.context_window is not None:
            out = max(info.context_window - prompt, 0)
        if out is None:
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
        out = max(out, 0)  # a reservation is never negative (nor is Budgets.reserve's amount)
        amount = price.cost(Usage(input_tokens=prompt, output_tokens=out))
        return budgets.reserve(ctx, ticket.role, info.target, amount, tokens=(prompt, out))

    def charge(self, ticket: Ticket, response: LLMResponse) -> None:
        """Set ``response.cost_usd`` / ``cost_note`` from its usage and settle the reservation."""
        entry = ticket.entry
        price = entry.price
        if price is None and response.model != entry.info.model:
            # the provider answered with a more specific model id (a dated version, a router's pick)
            alternative = self._orch.catalog.entry(entry.info.provider, response.model)
            if alternative.price is not None:
                entry, price = alternative, alternative.price
        cost: float | None
        note: str | None
        if response.cost_usd is not None and (price is None or price.source != "config"):
            # the adapter reported the cost itself (a router's bill, the test double's prices):
            # only a price in the YAML overrides that
            cost, note = response.cost_usd, response.cost_note
        elif price is not None:
            usage = response.usage
            if not price.free and usage.input_tokens == 0 and usage.output_tokens == 0:
                cost, note = None, NO_USAGE_NOTE
            else:
                cost = price.cost(usage)
                note = entry.info.price_note if entry.info.local and price.source == "local" else None
        else:
            cost, note = None, entry.info.price_note
        response.cost_usd, response.cost_note = cost, note
        overrun = self._orch.budgets.settle(ticket.reservation, cost, ticket.role)
        if overrun:
            self._overrun(ticket, response, overrun)

    def _overrun(self, ticket: Ticket, response: LLMResponse, overrun: float) -> None:
        """Record an answer that cost more than its reservation; warn once per role and model."""
        assert ticket.reservation is not None
        response.overrun_usd = overrun
        key = (ticket.role, ticket.entry.info.target)
        if key in self._warned:
            return
        self._warned.add(key)
        role = f" (role {ticket.role!r})" if ticket.role is not None else ""
        warnings.warn(
            f"orchlab: {ticket.entry.info.target}{role} reported usage costing "
            f"{money(response.cost_usd)}, {money(overrun)} more than the worst case reserved "
            f"before sending ({money(ticket.reservation.amount)}). It is charged what it reported, so "
            "a budget may end above its limit by that much; the overrun is recorded as overrun_usd "
            "on the response, its attempt and in client.usage(). Further overruns of this role and "
            "model are recorded without a warning.",
            OrchlabWarning,
            stacklevel=2,
        )

    def release(self, ticket: Ticket | None, *, cancelled_after_send: bool = False) -> None:
        """The attempt failed or was cancelled: settle its reservation without a response.

        A cloud call cancelled after it was sent (a race's loser, a cut-off attempt) keeps its
        reserved worst case as spent: the provider may bill the prompt and the tokens generated
        before the cancel, and never says how many. Otherwise the reservation is given back: a
        failed call is not billed, and a local model costs nothing.
        """
        if ticket is None or ticket.reservation is None:
            return
        if cancelled_after_send and not ticket.entry.info.local:
            self._orch.budgets.settle(ticket.reservation, None)
        else:
            self._orch.budgets.release(ticket.reservation)
