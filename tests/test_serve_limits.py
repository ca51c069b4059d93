"""The gateway's per-key limits in isolation (orchlab.serve.key_budgets, orchlab.serve.rate_limits):
what the end-to-end tests in test_serve_keys.py and test_serve_workers.py cannot time."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from orchlab.serve.key_budgets import Ledger
from orchlab.store.keys import SECRET_ENV, ApiKey
from orchlab.store.ledger import Settlement
from tests.serve_support import serve_fixture  # noqa: F401
from tests.test_serve_keys import Q, bearer, keyed_yaml, ledger_rows, start
from tests.test_serve_workers import REAL_COST, redis_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "limits-test-secret-" + "l" * 32)


@pytest.fixture(name="limits_store", params=["memory", "redis"])
def limits_store_fixture(request: pytest.FixtureRequest) -> str:
    """``gateway.rate_limit_store``: in memory, or a redis-server of the test's own."""
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


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


def wait_for_ledger(keys: Any, done: Any, deadline_s: float = 10) -> list[dict[str, Any]]:
    """The ledger once ``done(rows)`` holds (settlements are written in batches)."""
    end = time.monotonic() + deadline_s
    while True:
        rows = ledger_rows(keys)
        if done(rows) or time.monotonic() > end:
            return rows
        time.sleep(0.02)


def test_a_request_the_rate_limit_refuses_is_a_429_whatever_it_carried_and_holds_no_budget(
    serve, write_config, openai_server, limits_store: str
) -> None:
    """In Redis the count of a chat request is read while the route works (the round trip
    overlaps it): the answer is the same as in memory, where it is read first. A refused request
    sends nothing upstream, and a reservation made while its count was on its way is taken back."""
    yaml = keyed_yaml(openai_server, f'  rate_limit_store: "{limits_store}"\n')
    served, keys = start(serve, write_config, yaml)
    budgeted = keys.create("ana", rpm=1, budget="5/day")
    plain = keys.create("bo", rpm=1)
    streaming = keys.create("cy", rpm=1, budget="5/day")
    chat = {"model": "llm.inference", "messages": Q, "max_tokens": 10}
    with httpx.Client(base_url=served.base_url) as http:
        answers = [
            http.post("/chat/completions", json=chat, headers=bearer(budgeted)),
            http.post("/chat/completions", json=chat, headers=bearer(budgeted)),  # reserves, then refused
            http.post("/chat/completions", content=b"{not json", headers=bearer(budgeted)),
            http.post("/chat/completions", json=chat, headers=bearer(plain)),
            http.post("/chat/completions", content=b"{not json", headers=bearer(plain)),  # a 400 otherwise
            http.post("/chat/completions", json={**chat, "stream": True}, headers=bearer(streaming)),
            http.post("/chat/completions", json={**chat, "stream": True}, headers=bearer(streaming)),
        ]
    assert [a.status_code for a in answers] == [200, 429, 429, 200, 429, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["0"] * 7
    assert "data: [DONE]" in answers[5].text
    for a in answers[1:3] + answers[4:5] + answers[6:]:
        assert (
            a.json()["error"]["code"] == "rate_limit_exceeded" and 50 <= int(a.headers["retry-after"]) <= 60
        )
    assert len([r for r in openai_server.requests if r.method == "POST"]) == 3
    rows = wait_for_ledger(keys, lambda rows: len(rows) == 3 and all(r["status"] == "settled" for r in rows))
    assert sorted(r["key_id"] for r in rows) == sorted(k.info.id for k in (budgeted, plain, streaming))


def test_a_request_the_budget_refuses_still_counts_against_the_rate_limit(
    serve, write_config, openai_server, limits_store: str
) -> None:
    """A keyed request counts when it arrives, whatever its answer (as OpenAI counts them)."""
    yaml = keyed_yaml(openai_server, f'  allow_direct_targets: true\n  rate_limit_store: "{limits_store}"\n')
    served, keys = start(serve, write_config, yaml)
    key = keys.create("ana", rpm=3, budget="0.01/day")  # less than one llm.pricey call's worst case
    with httpx.Client(base_url=served.base_url, headers=bearer(key)) as http:
        answers = [
            http.post("/chat/completions", json={"model": "llm.pricey", "messages": Q, "max_tokens": 10})
            for _ in range(4)
        ]
    assert [a.status_code for a in answers[:3]] == [429] * 3
    assert [a.json()["error"]["code"] for a in answers] == ["budget_exceeded"] * 3 + ["rate_limit_exceeded"]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert openai_server.requests == [] and ledger_rows(keys) == []


def test_counts_in_redis_answer_alike_on_the_pipelined_connection_and_on_the_pool(redis_url: str) -> None:
    """The worker's own pipelined connection (hiredis installed) and the redis client's pool
    (the fallback) count, answer and refuse alike, concurrent requests included."""
    from orchlab.serve.errors import HTTPError
    from orchlab.serve.rate_limits import RateLimits

    async def drive(rates: RateLimits, key_id: str) -> list[tuple[int, str]]:
        key = api_key(key_id, rpm=5, tpm=30)

        async def one() -> tuple[int, str]:
            try:
                return 200, (await rates.admit(key))["x-ratelimit-remaining-requests"]
            except HTTPError as exc:
                return exc.status, exc.headers["x-ratelimit-remaining-requests"]

        seen = sorted(await asyncio.gather(*(one() for _ in range(7))))
        rates.count_tokens(key, 40)
        seen.append(await one())  # rpm already refuses: the tokens are still to be sent
        await rates.aclose()
        return seen

    expected = [
        (200, "0"),
        (200, "1"),
        (200, "2"),
        (200, "3"),
        (200, "4"),
        (429, "0"),
        (429, "0"),
        (429, "0"),
    ]
    assert asyncio.run(drive(RateLimits(redis_url), "piped")) == expected
    assert asyncio.run(drive(RateLimits(redis_url, pipelined=False), "pooled")) == expected

    async def tokens_left(key_id: str) -> int:
        from limits import RateLimitItemPerMinute
        from limits.aio.strategies import MovingWindowRateLimiter
        from limits.storage import storage_from_string

        limiter = MovingWindowRateLimiter(storage_from_string(f"async+{redis_url}", implementation="redispy"))
        return int((await limiter.get_window_stats(RateLimitItemPerMinute(30), key_id, "tpm")).remaining)

    assert asyncio.run(tokens_left("piped")) == asyncio.run(tokens_left("pooled")) == 0  # sent on close


@pytest.mark.parametrize("path", ["/chat/completions", "/models"])
def test_a_rate_limit_store_that_is_down_is_a_503_that_says_so(
    serve, write_config, openai_server, path
) -> None:
    from tests.serve_support import free_port

    yaml = keyed_yaml(openai_server, f'  rate_limit_store: "redis://127.0.0.1:{free_port()}"\n')
    served, keys = start(serve, write_config, yaml)
    key = keys.create("ana", rpm=10)
    with httpx.Client(base_url=served.base_url, headers=bearer(key)) as http:
        chat = {"model": "llm.inference", "messages": Q}
        answer = http.post(path, json=chat) if path == "/chat/completions" else http.get(path)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "auth_unavailable"
    assert openai_server.requests == []


def test_a_workers_remembered_budget_sum_is_read_again_once_another_connection_wrote(tmp_path) -> None:
    """Two workers' no-wait connections and the settlements' own: each reservation checks the
    sum a fresh SUM would find (the remembered one only while nobody else wrote)."""
    from datetime import timedelta

    from orchlab.store.keys import Keys
    from orchlab.store.ledger import BUSY, NoWait, Refused, settle, spent
    from orchlab.store.settings import StoreSettings
    from orchlab.store.store import Store

    settings = StoreSettings(f"sqlite:///{tmp_path / 'ledger.db'}")
    store = Store.open(settings)
    info = Keys(store).create("ana", budget="1/day").info
    since = datetime.now(UTC) - timedelta(hours=1)
    a, b = NoWait(settings), NoWait(settings)

    def hold(worker: NoWait) -> str | Refused:
        found = worker.reserve(
            key_id=info.id,
            user_id=info.user_id,
            amount_usd=0.3,
            limit_usd=1.0,
            since=since,
            request_id=None,
            endpoint=None,
            provider="up",
            model="m",
        )
        assert found is not BUSY
        return found

    first = hold(a)
    assert isinstance(first, str) and isinstance(hold(b), str) and isinstance(hold(a), str)  # 0.9 held
    assert hold(b) == Refused(pytest.approx(0.9))
    store.write(settle, [Settlement(first, 0.0, "released", info.id, info.user_id)])  # 0.6 held
    assert isinstance(hold(a), str)  # 0.9 held
    assert hold(b) == Refused(pytest.approx(0.9)) and hold(a) == Refused(pytest.approx(0.9))
    assert store.read(spent, info.id, since) == pytest.approx(0.9)
    a.close()
    b.close()
    store.close()
