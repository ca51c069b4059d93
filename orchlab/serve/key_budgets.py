"""Per-key budgets and usage in the gateway.

**Budgets** (`KeyBudget`, a pipeline pass, and `KeyUsage`, a call observer): before each provider
attempt of a call made with a budgeted key, the attempt's worst-case cost (the library's own:
`orchlab.pipeline.passes.worst_case`) is reserved in the store's usage ledger, checked against
the ledger's sum for the budget's window (`orchlab.store.ledger`); an unpriced model, or one whose
output nothing bounds, is refused under a budget, never counted as $0. When the call ends, each
attempt is settled at its real cost; a failed attempt is released; a cloud attempt cut off after
it was sent (the caller disconnected mid-stream, a race's loser) keeps its worst case, since the
provider bills what it generated and reports no usage for it. Every attempt made with a key,
budgeted or not, ends up in the ledger (``client.keys.usage()``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from orchlab.budgets import money
from orchlab.errors import BudgetExceededError, UnknownCostError
from orchlab.store.keys import utcnow

if TYPE_CHECKING:
    from orchlab.calls import CallContext, CallFacts, CallRecord
    from orchlab.pipeline.inflight import InFlight
    from orchlab.serve.rate_limits import Counted, RateLimits
    from orchlab.store.keys import ApiKey
    from orchlab.store.ledger import NoWait, Refused, Settlement
    from orchlab.store.store import Store
    from orchlab.types import LLMResponse, ModelRequest

log = logging.getLogger("orchlab.serve")
T = TypeVar("T")


# --- who is calling (set by orchlab.serve.auth for the request's task) ---------------------------


@dataclass(slots=True)
class Pending:
    """An attempt made for a keyed request: its slot in the call's trail, its ledger row."""

    ctx: CallContext
    slot: int
    entry_id: str | None
    reserved_usd: float
    local: bool
    provider: str
    model: str


@dataclass(slots=True)
class Caller:
    """The key a request came with, and the attempts its call made so far."""

    key: ApiKey
    pending: list[Pending] = field(default_factory=list)
    admitted: Counted | None = None
    """The rate limits' count of this request, still on its way (Redis; `orchlab.serve.auth`):
    its ``x-ratelimit-*`` headers, or the `HTTPError` that refuses the request. Every attempt
    waits for it before sending anything."""


# --- budgets: reserve before each attempt, settle when the call ends ---------------------------


class Ledger:
    """One worker's writes to the usage ledger.

    A reservation is on the request's path, so it is made at once where it can: on SQLite, on the
    event loop with a connection that never waits for the write lock (a few hundred microseconds;
    a hop to a thread costs more than that on a busy machine); when another process holds the
    lock, or on PostgreSQL (a network round trip), from the ledger's own thread. Settlements are
    off the path: queued, and written together every `FLUSH_S` from that thread (until then the
    reservation stands, which errs on the safe side)."""

    FLUSH_S = 0.05

    def __init__(self, store: Callable[[], Store], keep: Callable[[asyncio.Task[Any]], None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self._keep = keep
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="orchlab-ledger")
        self._now: NoWait | None = None
        self._queue: list[Settlement] = []
        self._flushing: asyncio.Task[None] | None = None

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def reserve(self, **kwargs: Any) -> str | Refused:
        from orchlab.store.ledger import Busy, NoWait, reserve

        store = self._store()
        if store.settings.backend == "sqlite":
            if self._now is None:
                self._now = NoWait(store.settings)
            found = self._now.reserve(**kwargs)
            if not isinstance(found, Busy):
                return found
        return await self._in_thread(lambda: store.write(reserve, **kwargs))

    def reserve_sync(self, **kwargs: Any) -> str | Refused:
        from orchlab.store.ledger import reserve

        return self._store().write(reserve, **kwargs)

    def settle_later(self, done: list[Settlement]) -> None:
        self._queue.extend(done)
        if self._flushing is None or self._flushing.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a blocking call: write now
                self._write(self._take())
                return
            self._flushing = loop.create_task(self._flush_soon())
            self._keep(self._flushing)

    async def _flush_soon(self) -> None:
        # settlements queued while a batch is being written are this task's too: `settle_later`
        # starts no task while this one runs, so it writes until the queue is empty
        while self._queue:
            await asyncio.sleep(self.FLUSH_S)
            await self._in_thread(self._write, self._take())

    def _take(self) -> list[Settlement]:
        batch, self._queue = self._queue, []
        return batch

    def _write(self, batch: list[Settlement]) -> None:
        from orchlab.store.ledger import settle

        if not batch:
            return
        try:
            self._store().write(settle, batch)
        except Exception as exc:  # the reservations stand: the budgets err on the safe side
            log.error("%d ledger settlements were not written: %s", len(batch), exc)

    async def aclose(self) -> None:
        """Write what is queued; close the thread and the no-wait engine."""
        if self._flushing is not None:
            self._flushing.cancel()
        await self._in_thread(self._write, self._take())
        await asyncio.to_thread(self._pool.shutdown, True)
        if self._now is not None:
            self._now.close()


class KeyBudget:
    """A pipeline pass: reserve a keyed attempt's worst case in the ledger (budgeted keys), and
    note the attempt for `KeyUsage` to settle. Not a keyed request: nothing to do."""

    def __init__(self, ledger: Ledger, caller: Callable[[], Caller | None]) -> None:
        self._ledger = ledger
        self._caller = caller

    async def admit(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        caller = self._caller()
        if caller is None:
            return None
        entry, amount = None, 0.0
        budget = caller.key.budget
        if budget is not None:
            amount = self._worst_case(caller.key, flight, request)
            now = utcnow()
            found = await self._ledger.reserve(**self._row(caller.key, ctx, flight, request, amount, now))
            entry = self._check(found, caller.key, flight, amount, now)
        if caller.admitted is not None:  # the rate limits' answer came while the route worked
            got = await caller.admitted.result()
            if isinstance(got, Exception):
                if entry is not None:  # refused: nothing is sent, nothing stays in the ledger
                    self._ledger.settle_later([withdrawn(caller.key, entry)])
                raise got
        self._note(caller, ctx, flight, request, entry, amount)
        return None

    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        caller = self._caller()
        if caller is None:
            return None
        entry, amount = None, 0.0
        if caller.key.budget is not None:
            amount = self._worst_case(caller.key, flight, request)
            now = utcnow()
            found = self._ledger.reserve_sync(**self._row(caller.key, ctx, flight, request, amount, now))
            entry = self._check(found, caller.key, flight, amount, now)
        got = None if caller.admitted is None else caller.admitted.peek()
        if isinstance(got, Exception):  # (a blocking call cannot wait for the count; the gateway's
            if entry is not None:  # routes make none: this is for completeness)
                self._ledger.settle_later([withdrawn(caller.key, entry)])
            raise got
        self._note(caller, ctx, flight, request, entry, amount)
        return None

    @staticmethod
    def _note(
        caller: Caller,
        ctx: CallContext,
        flight: InFlight,
        request: ModelRequest,
        entry: str | None,
        amount: float,
    ) -> None:
        ctx.tags.setdefault("orchlab.user", caller.key.user)
        ctx.tags.setdefault("orchlab.key_id", caller.key.id)
        local = bool(flight.entry.info.local)
        caller.pending.append(Pending(ctx, flight.slot, entry, amount, local, flight.provider, request.model))

    @staticmethod
    def _worst_case(key: ApiKey, flight: InFlight, request: ModelRequest) -> float:
        from orchlab.pipeline.passes import worst_case

        assert key.budget is not None
        info = flight.entry.info
        if flight.entry.price is None:
            why = f"{info.target} has no known price: {info.price_note}"
        else:
            worst = worst_case(flight, request)
            if worst is not None:
                return worst[0]
            why = (
                f"{info.target}: nothing bounds this call's output tokens (send max_tokens, or set "
                "max_output_tokens under models: in the gateway's YAML)"
            )
        raise UnknownCostError(
            f"{why}; a budget applies to this key, so the call is refused before sending",
            scope=f"budget of key ok_{key.prefix} ({key.budget})",
            limit_usd=key.budget.usd,
            requested_usd=math.inf,
            spent_usd=math.nan,
        )

    @staticmethod
    def _row(
        key: ApiKey, ctx: CallContext, flight: InFlight, request: ModelRequest, amount: float, now: datetime
    ) -> dict[str, Any]:
        assert key.budget is not None
        return {
            "key_id": key.id,
            "user_id": key.user_id,
            "amount_usd": amount,
            "limit_usd": key.budget.usd,
            "since": key.budget.start(now),
            "request_id": ctx.tags.get("orchlab.request_id"),
            "endpoint": ctx.tags.get("orchlab.endpoint"),
            "provider": flight.provider,
            "model": request.model,
        }

    @staticmethod
    def _check(found: str | Refused, key: ApiKey, flight: InFlight, amount: float, now: datetime) -> str:
        if isinstance(found, str):
            return found
        budget = key.budget
        assert budget is not None
        end = budget.end(now)
        whole = "" if end is None else f"; it is whole again at {end:%Y-%m-%d %H:%M} UTC"
        raise BudgetExceededError(
            f"this key's budget of {budget}: {money(found.spent_usd)} spent or held by calls in "
            f"flight; this call to {flight.entry.info.target} may cost up to {money(amount)}. "
            f"Nothing was sent. Send a lower max_tokens to reserve less{whole}.",
            scope=f"budget of key ok_{key.prefix}",
            limit_usd=budget.usd,
            requested_usd=amount,
            spent_usd=found.spent_usd,
        )


def withdrawn(key: ApiKey, entry: str) -> Settlement:
    """A reservation taken back before its attempt began (the rate limits refused the request)."""
    from orchlab.store.ledger import Settlement

    return Settlement(entry, 0.0, "withdrawn", key.id, key.user_id)


def settlement(p: Pending, key: ApiKey) -> Settlement:
    """What one attempt costs the key, from its record in the call's trail."""
    from orchlab.store.ledger import Settlement

    a = p.ctx.attempts[p.slot]
    if a.cost_usd is not None:
        amount, status = a.cost_usd, "settled"
    elif (a.outcome == "error" and a.error_type is not None) or p.local:
        amount, status = 0.0, "released"  # failed: not billed; local: free
    else:
        # sent and cut off, or answered without usage: the reservation stands (unknown without one)
        amount, status = p.reserved_usd, "settled" if p.entry_id is not None else "unpriced"
    return Settlement(
        p.entry_id,
        amount,
        status,
        key.id,
        key.user_id,
        p.provider,
        p.model,
        a.usage.input_tokens,
        a.usage.output_tokens,
        p.ctx.tags.get("orchlab.request_id"),
        p.ctx.tags.get("orchlab.endpoint"),
    )


class KeyUsage:
    """A call observer: when a keyed call ends, queue its attempts' settlements for the ledger
    and count its tokens against the key's tpm (the answer waits for neither)."""

    def __init__(self, ledger: Ledger, caller: Callable[[], Caller | None], rates: RateLimits) -> None:
        self._ledger = ledger
        self._caller = caller
        self._rates = rates

    def call_finished(self, record: CallRecord) -> CallFacts | None:
        caller = self._caller()
        if caller is None:
            return None
        ctx = record.context
        mine = [p for p in caller.pending if p.ctx is ctx]
        if not mine:
            return None
        caller.pending = [p for p in caller.pending if p.ctx is not ctx]
        done = [settlement(p, caller.key) for p in mine]
        self._ledger.settle_later(done)
        tokens = sum((s.input_tokens or 0) + (s.output_tokens or 0) for s in done)
        if caller.key.tpm is not None and tokens > 0:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a blocking call in another thread, not the gateway's
                return None
            self._rates.count_tokens(caller.key, tokens)
        return None
