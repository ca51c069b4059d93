"""Per-key rate limits in the gateway.

**Rate limits** (`RateLimits`): requests and tokens per minute per key, in a moving window
(the ``limits`` library), counted in memory (one worker) or in Redis
(``gateway.rate_limit_store: redis://HOST:PORT``, shared by every worker and host). A request is
counted when it arrives, whatever its answer (one its budget refuses too); it is refused with a
429 when the minute already holds ``rpm`` requests, or ``tpm`` tokens (a request refused for its
tpm still counts in rpm; one refused for its rpm adds nothing). Tokens are counted when a call
ends (prompt + answer of every attempt, as the providers reported them): a call is admitted while
the minute's tokens are under the limit. Every answer to a limited key carries OpenAI's
``x-ratelimit-*`` headers; a 429 carries ``Retry-After``.

In Redis a request's count is one script run, written on the worker's own pipelined connection
(`send`), and a chat request's answer is read only when its first attempt is about to be sent
(`orchlab.serve.auth`, `orchlab.serve.key_budgets`): the round trip overlaps the route's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from orchlab.serve.errors import HTTPError

if TYPE_CHECKING:
    from orchlab.store.keys import ApiKey

log = logging.getLogger("orchlab.serve")


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
    script run (count the request, read the minute's requests and tokens for the headers). In
    Redis, a finished call's tokens ride along the worker's next request for the key (the same
    script run), or are sent on their own `FLUSH_S` after the call ended, whichever comes first:
    a request costs one round trip, not two. The windows are the ``limits`` library's moving
    windows (in Redis, its keys and list layout, so its own limiter reads the same counts)."""

    MINUTE = 60
    FLUSH_S = 0.05
    NAMES = 10_000

    def __init__(self, uri: str, *, pipelined: bool = True) -> None:
        from limits import RateLimitItemPerMinute

        self._redis: Any = None
        self._memory: dict[str, _Moving] = {}
        self._prefixed: Callable[[str], str] = str
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
            self._prefixed = bridge.prefixed_key
            self._redis = bridge.get_connection()
            self._lua_admit = self._redis.register_script(_LUA_ADMIT)
            self._lua_tokens = self._redis.register_script(_LUA_TOKENS)
        self._pipe_at = _pipe_address(uri) if pipelined else None
        self._pipe: _Pipe | None = None
        self._connecting = asyncio.Lock()
        self._item = RateLimitItemPerMinute
        self._names: dict[tuple[str, int, str], str] = {}
        self._unsent: dict[str, tuple[int, int]] = {}
        """Redis: tokens of finished calls not sent yet, by window key: (the tpm, tokens)."""
        self._sending: asyncio.Task[None] | None = None
        self._full: dict[tuple[str, int], float] = {}
        """Redis: keys whose minute holds ``rpm`` requests, until when (its oldest one's expiry).
        Until then every request is refused, by any worker (a refused request adds nothing, and
        entries leave the window oldest first): refused here, without a round trip."""

    @property
    def remote(self) -> bool:
        """Whether the windows are in Redis (a request's count is a round trip)."""
        return self._redis is not None

    def _name(self, key: ApiKey, n: int, what: str) -> str:
        """The window's key in the store (the ``limits`` library's, with its prefix in Redis)."""
        found = self._names.get((key.id, n, what))
        if found is None:
            if len(self._names) >= self.NAMES:
                self._names.clear()
            found = self._prefixed(str(self._item(n).key_for(key.id, what)))
            self._names[(key.id, n, what)] = found
        return found

    async def admit(self, key: ApiKey) -> dict[str, str]:
        """Count the request; its ``x-ratelimit-*`` headers, or `HTTPError` 429."""
        if key.rpm is None and key.tpm is None:
            return {}
        if self._redis is not None:
            return await (await self.send(key))()  # (raises what it refuses with)
        now = time.time()
        rpm: Window | None = None
        tpm: Window | None = None
        ok = True
        if key.rpm is not None:
            moving = self._moving(self._name(key, key.rpm, "rpm"))
            ok = moving.acquire(now, key.rpm, 1)
            rpm = moving.window(now, key.rpm)
        if key.tpm is not None:
            tpm = self._moving(self._name(key, key.tpm, "tpm")).window(now, key.tpm)
        return _verdict(key, ok, rpm, tpm)

    async def send(self, key: ApiKey) -> Callable[[], Awaitable[dict[str, str]]]:
        """Redis: send the request's count now (returns once it is written) and read the answer
        later, with the function this returns (`admit`'s answer; call it once). The caller does
        its own work in between: the round trip overlaps it."""
        assert self._redis is not None
        now, keys, unsent = time.time(), [], 0
        if key.rpm is not None and (until := self._full.get((key.id, key.rpm), 0.0)) > now:
            _verdict(key, False, Window(key.rpm, 0, until - now), None)
        if key.rpm is not None:
            keys.append(self._name(key, key.rpm, "rpm"))
        if key.tpm is not None:
            name = self._name(key, key.tpm, "tpm")
            keys.append(name)
            unsent = self._unsent.pop(name, (0, 0))[1]
        args = [now, self.MINUTE, key.rpm or 0, key.tpm or 0, unsent]

        def unsent_back() -> None:
            if unsent:
                self._queue(name, key.tpm or 0, unsent)

        command = ("EVALSHA", self._lua_admit.sha, len(keys), *keys, *args)
        try:
            reply = await self._send_now(command)
        except BaseException:
            unsent_back()
            raise

        async def answer() -> dict[str, str]:
            try:
                try:
                    got = await reply
                except Exception as exc:
                    from redis.exceptions import NoScriptError

                    if not (isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")):
                        raise
                    got = await self._lua_admit(keys, args)  # the server had not seen it: loaded and run
            except Exception:  # (not when cancelled: the count was sent, and ran)
                unsent_back()
                raise
            ok = bool(int(got[0]))
            rpm = None if key.rpm is None else _window(key.rpm, now, got[1], got[2])
            if rpm is not None and not ok:
                if len(self._full) >= self.NAMES:
                    self._full.clear()
                self._full[(key.id, rpm.limit)] = now + rpm.reset_s
            return _verdict(key, ok, rpm, None if key.tpm is None else _window(key.tpm, now, got[3], got[4]))

        return answer

    async def _send_now(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Write ``command`` to Redis; its reply, to come. On a plain ``redis://`` URL with
        hiredis installed, on this worker's own pipelined connection (a write: no pool, no lock,
        no wait, and the reply wakes its reader directly); else from the ``redis`` client's pool."""
        if self._pipe_at is not None:
            pipe = self._pipe
            if pipe is None or pipe.transport is None:
                pipe = await self._connect()
            future = pipe.send(command)
        else:
            pool = self._redis.connection_pool
            conn = await pool.get_connection()
            try:
                await conn.send_command(*command)
            except BaseException:
                await pool.release(conn)
                raise

            async def reply() -> Any:
                try:
                    return await conn.read_response()
                finally:
                    await pool.release(conn)

            future = asyncio.ensure_future(reply())
        future.add_done_callback(_retrieved)  # a request that ended before it read its count
        return future

    async def _connect(self) -> _Pipe:
        assert self._pipe_at is not None
        async with self._connecting:
            pipe = self._pipe
            if pipe is not None and pipe.transport is not None:
                return pipe
            host, port, db, user, password = self._pipe_at
            _, pipe = await asyncio.get_running_loop().create_connection(_Pipe, host, port)
            hello = []
            if password is not None:
                hello.append(pipe.send(("AUTH", password) if user is None else ("AUTH", user, password)))
            if db:
                hello.append(pipe.send(("SELECT", db)))
            try:
                for answer in hello:
                    await answer
            except BaseException:
                if pipe.transport is not None:
                    pipe.transport.close()
                raise
            self._pipe = pipe
            return pipe

    def count_tokens(self, key: ApiKey, tokens: int) -> None:
        """Add a finished call's tokens to the key's minute (up to what is left of it): at once in
        memory; in Redis with the next request for the key, or `FLUSH_S` from now."""
        if key.tpm is None or tokens <= 0:
            return
        name = self._name(key, key.tpm, "tpm")
        if self._redis is None:
            self._moving(name).fill(time.time(), key.tpm, tokens)
            return
        self._queue(name, key.tpm, tokens)
        if self._sending is None or self._sending.done():
            with contextlib.suppress(RuntimeError):  # no loop: they go with the next request
                self._sending = asyncio.get_running_loop().create_task(self._send_soon())

    def _queue(self, name: str, limit: int, tokens: int) -> None:
        self._unsent[name] = (limit, self._unsent.get(name, (0, 0))[1] + tokens)

    async def _send_soon(self) -> None:
        while self._unsent:  # what is queued while a batch is sent is this task's too
            await asyncio.sleep(self.FLUSH_S)
            await self._send()

    async def _send(self) -> None:
        batch, self._unsent = self._unsent, {}
        now = time.time()
        for name, (limit, tokens) in batch.items():
            try:
                await self._lua_tokens([name], [now, self.MINUTE, limit, tokens])
            except Exception as exc:
                log.warning("%d tokens not counted in the rate-limit store: %s", tokens, type(exc).__name__)

    def _moving(self, name: str) -> _Moving:
        moving = self._memory.get(name)
        if moving is None:
            moving = self._memory[name] = _Moving(self.MINUTE)
        return moving

    async def aclose(self) -> None:
        """Send the tokens not sent yet and close a Redis connection pool (memory storage holds
        nothing to close)."""
        if self._redis is None:
            return
        if self._sending is not None:
            self._sending.cancel()
        await self._send()
        if self._pipe is not None and self._pipe.transport is not None:
            self._pipe.transport.close()
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Counted:
    """A request's count in Redis, on its way (`RateLimits.send`): `result` reads it, once, in
    the task of whichever needs it first (no task of its own: the reply wakes that reader
    directly); a rate-limit store that failed is ``failed(exc)``'s answer."""

    __slots__ = ("_answer", "_failed", "_reading", "_result")

    def __init__(
        self, answer: Callable[[], Awaitable[dict[str, str]]], failed: Callable[[Exception], HTTPError]
    ) -> None:
        self._answer = answer
        self._failed = failed
        self._result: dict[str, str] | HTTPError | None = None
        self._reading: asyncio.Future[None] | None = None

    def peek(self) -> dict[str, str] | HTTPError | None:
        """The answer if it was read already (None: not yet)."""
        return self._result

    async def result(self) -> dict[str, str] | HTTPError:
        """The request's ``x-ratelimit-*`` headers, or the `HTTPError` that refuses it."""
        while self._result is None:
            if self._reading is not None:  # another task reads it: wait for that
                await asyncio.shield(self._reading)
                continue
            reading = self._reading = asyncio.get_running_loop().create_future()
            try:
                self._result = await self._answer()
            except HTTPError as exc:
                self._result = exc
            except Exception as exc:
                self._result = self._failed(exc)
            finally:  # (cancelled: a task still waiting reads it itself)
                self._reading = None
                reading.set_result(None)
        return self._result


def _pipe_address(uri: str) -> tuple[str, int, int, str | None, str | None] | None:
    """Where a pipelined connection goes: a plain ``redis://[user:password@]host[:port][/db]``
    with hiredis installed (its reply parser); None for anything else (TLS, a socket, options)."""
    from urllib.parse import unquote, urlsplit

    try:
        import hiredis  # noqa: F401
    except ImportError:
        return None
    u = urlsplit(uri)
    db = u.path.strip("/")
    if u.scheme != "redis" or u.query or not u.hostname or not (db == "" or db.isdigit()):
        return None
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password is not None else None
    return u.hostname, u.port or 6379, int(db or 0), user, password


class _Pipe(asyncio.Protocol):
    """One connection to Redis, pipelined: a command is written at once (no pool, no lock, no
    wait) and the replies are read as they come, in the order the commands were sent."""

    def __init__(self) -> None:
        import hiredis

        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # (uvloop's is not a subclass)

    def send(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        self.transport.write(_pack(command))
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        return future

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (got := self._reader.gets()) is not False:
            future = self._waiting.popleft()
            if not future.done():
                if isinstance(got, Exception):  # an error reply (hiredis.ReplyError)
                    future.set_exception(got)
                else:
                    future.set_result(got)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError("the rate-limit store closed the connection"))


def _pack(command: tuple[Any, ...]) -> bytes:
    """A command in Redis's wire format (RESP): an array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


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
    local n = math.min(limit, redis.call('llen', key))
    if n == 0 then
        return '0', 0
    end
    local last = redis.call('lindex', key, n - 1)
    if tonumber(last) >= start then  -- all of it is in the window: no search
        return last, n
    end
    local low, high, found, oldest = 0, n - 2, nil, nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local val = redis.call('lindex', key, mid)
        if val and tonumber(val) >= start then
            found, oldest = mid, val
            low = mid + 1
        else
            high = mid - 1
        end
    end
    if found then
        return oldest, found + 1
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
local rpm, tpm, unsent = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out, k = {}, 1
if tpm > 0 and unsent > 0 then
    local tk = KEYS[rpm > 0 and 2 or 1]
    local _, count = window(tk, tpm, now - expiry)
    local cost = math.min(unsent, tpm - count)
    if cost > 0 then
        push(tk, tpm, cost)
    end
end
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


def _verdict(key: ApiKey, ok: bool, rpm: Window | None, tpm: Window | None) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of an admitted request, or the 429 of a refused one."""
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
