"""The gateway's per-key limits in isolation (orchlab.serve.key_budgets, orchlab.serve.rate_limits):
what the end-to-end tests in test_serve_keys.py and test_serve_workers.py cannot time."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

from orchlab.serve.key_budgets import Ledger
from orchlab.store.keys import ApiKey
from orchlab.store.ledger import Settlement
from tests.test_serve_workers import redis_fixture  # noqa: F401


def api_key(key_id: str, rpm: int | None = None, tpm: int | None = None) -> ApiKey:
    return ApiKey(key_id, "u1", "ana", "abcd", "user", None, datetime.now(UTC), None, None, rpm=rpm, tpm=tpm)


def done(entry: str) -> Settlement:
    return Settlement(entry, 0.01, "settled", "k1", "u1")


def test_settlements_queued_while_a_batch_is_written_are_written_too() -> None:
    """A call that ends while the previous batch is being written is settled by that same flush,
    without waiting for another call to end (it used to wait, unwritten, for the next one)."""
    writing, go_on = threading.Event(), threading.Event()
    written: list[list[str | None]] = []

    class SlowStore:
        def write(self, fn: Any, batch: list[Settlement]) -> None:
            writing.set()
            go_on.wait(10)
            written.append([s.entry_id for s in batch])

    async def scenario() -> list[list[str | None]]:
        tasks: set[asyncio.Task[Any]] = set()
        ledger = Ledger(SlowStore, tasks.add)  # type: ignore[arg-type]
        ledger.FLUSH_S = 0.001
        ledger.settle_later([done("a")])
        assert await asyncio.to_thread(writing.wait, 10)
        ledger.settle_later([done("b")])  # queued while "a" is being written
        go_on.set()
        end = time.monotonic() + 10
        while len(written) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.005)
        seen = list(written)
        await ledger.aclose()
        return seen

    assert asyncio.run(scenario()) == [["a"], ["b"]]


def test_in_redis_a_request_is_one_script_run_and_a_calls_tokens_ride_along_the_next(redis_url: str) -> None:
    """A finished call's tokens go with the worker's next request for the key (one round trip a
    request, not two); with no next request they are sent on their own, soon after."""
    import redis
    from limits import RateLimitItemPerMinute
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.storage import storage_from_string

    from orchlab.serve.rate_limits import RateLimits

    key = api_key("k1", rpm=10, tpm=100)
    stats = redis.Redis.from_url(redis_url)

    def script_runs() -> int:
        found = stats.info("commandstats").get("cmdstat_evalsha", {})
        return int(found.get("calls", 0)) - int(found.get("failed_calls", 0))

    async def tokens_left() -> int:
        limiter = MovingWindowRateLimiter(storage_from_string(f"async+{redis_url}", implementation="redispy"))
        return int((await limiter.get_window_stats(RateLimitItemPerMinute(100), "k1", "tpm")).remaining)

    async def scenario() -> tuple[list[str], int, int]:
        rates = RateLimits(redis_url)
        await rates.admit(api_key("warm-up", rpm=1))  # the script is loaded
        stats.config_resetstat()
        seen = []
        for tokens in (7, 7, 0):
            seen.append((await rates.admit(key))["x-ratelimit-remaining-tokens"])
            rates.count_tokens(key, tokens)
        runs = script_runs()
        rates.count_tokens(key, 5)  # no request follows
        end = time.monotonic() + 10
        while await tokens_left() != 100 - 19 and time.monotonic() < end:
            await asyncio.sleep(0.01)
        left = await tokens_left()
        await rates.aclose()
        return seen, runs, left

    assert asyncio.run(scenario()) == (["100", "93", "86"], 3, 81)
