"""Per-key rate limits and budgets in the gateway.

**Rate limits** (`RateLimits`): requests and tokens per minute per key, in a moving window
(the ``limits`` library), counted in memory (one worker) or in Redis
(``gateway.rate_limit_store: redis://HOST:PORT``, shared by every worker and host). A request is
counted when it arrives; it is refused with a 429 when the minute already holds ``rpm`` requests,
or ``tpm`` tokens. Tokens are counted when a call ends (prompt + answer of every attempt, as the
providers reported them): a call is admitted while the minute's tokens are under the limit.
Every answer to a limited key carries OpenAI's ``x-ratelimit-*`` headers; a 429 carries
``Retry-After``.

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
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from orchlab.budgets import money
from orchlab.errors import BudgetExceededError, UnknownCostError
from orchlab.serve.errors import HTTPError
from orchlab.store.keys import utcnow

if TYPE_CHECKING:
    from orchlab.calls import CallContext, CallFacts, CallRecord
    from orchlab.pipeline.inflight import InFlight
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


# --- rate limits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    remaining: int
    reset_s: float


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class RateLimits:
    """Moving one-minute windows per key, in memory or in Redis.

    A request costs one step: in memory, a few list operations on the event loop; in Redis, one
    script run (count the request, read the minute's requests and tokens for the headers). A
    finished call's tokens are counted in one more. The windows are the ``limits`` library's moving
    windows (in Redis, its keys and list layout, so its own limiter reads the same counts)."""

    MINUTE = 60

    def __init__(self, uri: str) -> None:
        from limits import RateLimitItemPerMinute

        self._redis: Any = None
        self._memory: dict[str, _Moving] = {}
        if uri.startswith(("redis://", "rediss://")):
            try:
                import redis  # noqa: F401
            except ImportError:
                from orchlab.errors import MissingDependencyError

                raise MissingDependencyError(
                    "gateway.rate_limit_store is Redis, which needs the redis package: "
                    "pip install 'orchlab[gateway]'",
                    provider="gateway",
                    kind="gateway",
                    module="redis",
                    extra="gateway",
                ) from None
            from limits.storage import storage_from_string

            storage: Any = storage_from_string(f"async+{uri}", implementation="redispy")
            bridge = storage.bridge
            self._prefixed: Callable[[str], str] = bridge.prefixed_key
            self._redis = bridge.get_connection()
            self._lua_admit = self._redis.register_script(_LUA_ADMIT)
            self._lua_tokens = self._redis.register_script(_LUA_TOKENS)
        self._items: dict[int, Any] = {}
        self._item = RateLimitItemPerMinute

    def _key(self, n: int, key: ApiKey, what: str) -> str:
        item = self._items.get(n)
        if item is None:
            item = self._items[n] = self._item(n)
        return str(item.key_for(key.id, what))

    async def admit(self, key: ApiKey) -> dict[str, str]:
        """Count the request; its ``x-ratelimit-*`` headers, or `HTTPError` 429."""
        if key.rpm is None and key.tpm is None:
            return {}
        now = time.time()
        rpm: Window | None = None
        tpm: Window | None = None
        ok = True
        if self._redis is None:
            if key.rpm is not None:
                moving = self._moving(self._key(key.rpm, key, "rpm"))
                ok = moving.acquire(now, key.rpm, 1)
                rpm = moving.window(now, key.rpm)
            if key.tpm is not None:
                tpm = self._moving(self._key(key.tpm, key, "tpm")).window(now, key.tpm)
        else:
            keys = [
                self._prefixed(self._key(n, key, w)) for n, w in ((key.rpm, "rpm"), (key.tpm, "tpm")) if n
            ]
            got = await self._lua_admit(keys, [now, self.MINUTE, key.rpm or 0, key.tpm or 0])
            if key.rpm is not None:
                ok = bool(int(got[0]))
                rpm = _window(key.rpm, now, got[1], got[2])
            if key.tpm is not None:
                tpm = _window(key.tpm, now, got[3], got[4])
        headers: dict[str, str] = {}
        if rpm is not None:
            headers.update(_headers("requests", rpm))
            if not ok:
                raise _too_many(f"this key's limit of {key.rpm} requests per minute is reached", rpm, headers)
        if tpm is not None:
            headers.update(_headers("tokens", tpm))
            if tpm.remaining <= 0:
                raise _too_many(f"this key's limit of {key.tpm:,} tokens per minute is reached", tpm, headers)
        return headers

    async def count_tokens(self, key: ApiKey, tokens: int) -> None:
        """Add a finished call's tokens to the key's minute (up to what is left of it)."""
        if key.tpm is None or tokens <= 0:
            return
        name = self._key(key.tpm, key, "tpm")
        now = time.time()
        if self._redis is None:
            self._moving(name).fill(now, key.tpm, tokens)
        else:
            await self._lua_tokens([self._prefixed(name)], [now, self.MINUTE, key.tpm, tokens])

    def _moving(self, name: str) -> _Moving:
        moving = self._memory.get(name)
        if moving is None:
            moving = self._memory[name] = _Moving(self.MINUTE)
        return moving

    async def aclose(self) -> None:
        """Close a Redis connection pool (memory storage holds nothing to close)."""
        with contextlib.suppress(Exception):
            if self._redis is not None:
                await self._redis.aclose()


class _Moving:
    """One key's moving window in memory: when each unit was counted, oldest first (units counted
    together share an entry); a unit counts while it is under a window old (the ``limits``
    library's rule)."""

    __slots__ = ("entries", "expiry", "total")

    def __init__(self, expiry: int) -> None:
        from collections import deque

        self.expiry = expiry
        self.entries: deque[list[float]] = deque()
        self.total = 0

    def _drop_old(self, now: float) -> None:
        start = now - self.expiry
        entries = self.entries
        while entries and entries[0][0] < start:
            self.total -= int(entries.popleft()[1])

    def acquire(self, now: float, limit: int, amount: int) -> bool:
        self._drop_old(now)
        if self.total + amount > limit:
            return False
        self.entries.append([now, amount])
        self.total += amount
        return True

    def fill(self, now: float, limit: int, amount: int) -> None:
        """Count up to ``amount`` units, as many as the window has room for."""
        self._drop_old(now)
        cost = min(amount, limit - self.total)
        if cost > 0:
            self.entries.append([now, cost])
            self.total += cost

    def window(self, now: float, limit: int) -> Window:
        self._drop_old(now)
        oldest = self.entries[0][0] if self.entries else now
        return Window(limit, max(limit - self.total, 0), max(oldest + self.expiry - now, 0.0))


def _window(limit: int, now: float, oldest: Any, count: Any) -> Window:
    start = float(oldest) if int(count) else now
    return Window(limit, max(limit - int(count), 0), max(start + RateLimits.MINUTE - now, 0.0))


# The ``limits`` library's moving window in Redis: a list per key, newest first, one entry per unit
# (its timestamp), trimmed to the limit. These scripts do in one round trip what its
# ``acquire_moving_window.lua`` and ``moving_window.lua`` do in several.
_LUA_WINDOW = """
local function window(key, limit, start)
    local low, high, found = 0, limit - 1, nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local val = tonumber(redis.call('lindex', key, mid))
        if val and val >= start then
            found = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if found then
        return tostring(redis.call('lindex', key, found)), found + 1
    end
    return '0', 0
end
local now, expiry = tonumber(ARGV[1]), tonumber(ARGV[2])
local function push(key, limit, amount)
    local entries = {}
    for i = 1, amount do
        entries[i] = now
    end
    for i = 1, #entries, 5000 do
        redis.call('lpush', key, unpack(entries, i, math.min(i + 4999, #entries)))
    end
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
end
"""

_LUA_ADMIT = (
    _LUA_WINDOW
    + """
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, k = {}, 1
if rpm > 0 then
    local entry = redis.call('lindex', KEYS[k], rpm - 1)
    local ok = 0
    if not (entry and tonumber(entry) >= now - expiry) then
        push(KEYS[k], rpm, 1)
        ok = 1
    end
    local oldest, count = window(KEYS[k], rpm, now - expiry)
    out[1], out[2], out[3] = ok, oldest, count
    k = k + 1
else
    out[1], out[2], out[3] = 1, '0', 0
end
if tpm > 0 then
    local oldest, count = window(KEYS[k], tpm, now - expiry)
    out[4], out[5] = oldest, count
end
return out
"""
)

_LUA_TOKENS = (
    _LUA_WINDOW
    + """
local limit, tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
local _, count = window(KEYS[1], limit, now - expiry)
local cost = math.min(tokens, limit - count)
if cost > 0 then
    push(KEYS[1], limit, cost)
end
return cost
"""
)


def _headers(what: str, w: Window) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{what}": str(w.limit),
        f"x-ratelimit-remaining-{what}": str(w.remaining),
        f"x-ratelimit-reset-{what}": reset_text(w.reset_s),
    }


def _too_many(message: str, w: Window, headers: dict[str, str]) -> HTTPError:
    return HTTPError(
        429,
        f"{message}; try again in {reset_text(w.reset_s)}",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={**headers, "retry-after": str(max(1, math.ceil(w.reset_s)))},
    )


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

    def __init__(
        self,
        ledger: Ledger,
        caller: Callable[[], Caller | None],
        rates: RateLimits,
        keep: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        self._ledger = ledger
        self._caller = caller
        self._rates = rates
        self._keep = keep

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
            with contextlib.suppress(RuntimeError):  # no loop: a blocking call, not the gateway's
                self._keep(asyncio.get_running_loop().create_task(self._count(caller.key, tokens)))
        return None

    async def _count(self, key: ApiKey, tokens: int) -> None:
        try:
            await self._rates.count_tokens(key, tokens)
        except Exception as exc:
            log.warning("tokens of key %s not counted: %s", key.id, type(exc).__name__)
