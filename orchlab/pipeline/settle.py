"""After an attempt: its cost from the actual usage, and its budget reservation settled.

Costs: ``cost_usd`` is computed from input, output, cache-read and cache-write tokens at the
model's prices (`orchlab.catalog.prices`); reasoning tokens are billed as output tokens, which
already count them. Precedence: a price in the YAML ``models:``; else a cost the adapter reported
itself; else genai-prices (or $0 for a local provider). A provider that reports no usage at all
gives ``cost_usd=None`` (never a silent 0), and a budget then keeps the reserved worst case as spent.

A provider that reports more usage than was reserved for it is charged what it reports; the
difference is recorded as ``overrun_usd`` (response, attempt, ``client.usage()``) and an
`OrchlabWarning` is emitted once per role and model.

An attempt that ended without a response (`Settle.release`): a failed one gets its reservation
back; a cloud call cancelled after sending keeps its worst case as spent.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

from orchlab.budgets import money
from orchlab.errors import OrchlabWarning

if TYPE_CHECKING:
    from orchlab.budgets import Budgets
    from orchlab.catalog.catalog import Catalog
    from orchlab.pipeline.inflight import InFlight
    from orchlab.types import LLMResponse

NO_USAGE_NOTE = "the provider reported no token usage for this call, so its cost is unknown"


class Charge(NamedTuple):
    """What an answer cost: dispatch puts these on the response and its attempt (`Settle.charge`)."""

    cost_usd: float | None
    cost_note: str | None
    overrun_usd: float | None
    """How much more than its budget reservation it cost (None: not more)."""


class Settle:
    """Cost accounting for one client's attempts."""

    def __init__(self, catalog: Catalog, budgets: Budgets) -> None:
        self._catalog = catalog
        self._budgets = budgets
        self._warned: set[tuple[str | None, str]] = set()

    def charge(self, flight: InFlight, response: LLMResponse) -> Charge:
        """The response's cost (and why it is unknown) from its usage; the reservation settled."""
        entry = flight.entry
        price = entry.price
        if price is None and response.model != entry.info.model:
            # the provider answered with a more specific model id (a dated version, a router's pick)
            alternative = self._catalog.entry(entry.info.provider, response.model)
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
        overrun = self._budgets.settle(flight.reservation, cost, flight.budget_role)
        if overrun:
            self._overrun(flight, cost, overrun)
            return Charge(cost, note, overrun)
        return Charge(cost, note, response.overrun_usd)

    def _overrun(self, flight: InFlight, cost: float | None, overrun: float) -> None:
        """Warn of an answer that cost more than its reservation, once per role and model."""
        assert flight.reservation is not None
        role, target = flight.budget_role, flight.entry.info.target
        if (role, target) in self._warned:
            return
        self._warned.add((role, target))
        named = f" (role {role!r})" if role is not None else ""
        warnings.warn(
            f"orchlab: {target}{named} reported usage costing "
            f"{money(cost)}, {money(overrun)} more than the worst case reserved "
            f"before sending ({money(flight.reservation.amount)}). It is charged what it reported, so "
            "a budget may end above its limit by that much; the overrun is recorded as overrun_usd "
            "on the response, its attempt and in client.usage(). Further overruns of this role and "
            "model are recorded without a warning.",
            OrchlabWarning,
            stacklevel=2,
        )

    def release(self, flight: InFlight, *, cancelled_after_send: bool = False) -> None:
        """The attempt ended without a priced response: settle its reservation.

        A cloud call cancelled after it was sent (a race's loser, a cut-off attempt) keeps its
        reserved worst case as spent: the provider may bill the prompt and the tokens generated
        before the cancel, and never says how many. Otherwise the reservation is given back: a
        failed call is not billed, and a local model costs nothing.
        """
        if flight.reservation is None:
            return
        if cancelled_after_send and not flight.entry.info.local:
            self._budgets.settle(flight.reservation, None)
        else:
            self._budgets.release(flight.reservation)
