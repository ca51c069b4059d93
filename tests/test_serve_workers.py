"""Keys across processes: ``orchlab serve --workers 2`` sharing one store (SQLite, PostgreSQL) and a
real redis-server for the rate limits, started on loopback by the tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

import orchlab
from orchlab.store.keys import SECRET_ENV
from orchlab.store.schema import usage_ledger
from tests.serve_support import KEY, free_port, gateway_yaml
from tests.servers.openai_wire import OpenAIWireServer, Reply
from tests.store_support import postgres_fixture, store_url_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SECRET = "workers-test-secret-" + "w" * 32
Q = [{"role": "user", "content": "What is 2+2?"}]
REAL_COST = 3 * 0.001 + 4 * 0.002  # the echo: 3 prompt tokens, 4 answer tokens


@pytest.fixture(name="redis_url")
def redis_fixture(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own on loopback (no persistence)."""
    binary = shutil.which("redis-server")
    assert binary, "the rate-limit tests need redis-server: apt-get install -y redis-server (.ci/run does it)"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)
    client.close()
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class Gateway:
    """``orchlab serve --workers N`` as a subprocess on a free loopback port."""

    def __init__(self, config: Path, workers: int, log: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ORCH_AUTH_UP_API_KEY": KEY,
            SECRET_ENV: SECRET,
        }
        self.log = log.open("wb")
        args = ["serve", "--config", str(config), "--port", str(self.port), "--workers", str(workers)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchlab", *args], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the gateway did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(name="gateway")
def gateway_fixture(tmp_path: Path) -> Iterator[Callable[[Path, int], Gateway]]:
    started: list[Gateway] = []

    def start(config: Path, workers: int = 2) -> Gateway:
        started.append(Gateway(config, workers, tmp_path / f"gateway-{len(started)}.log"))
        return started[-1]

    yield start
    for g in started:
        g.stop()


def config(tmp_path: Path, upstream: OpenAIWireServer, store_url: str, gateway: str = "") -> Path:
    yaml = gateway_yaml(upstream, "  auth: keys\n" + gateway, f'store: {{url: "{store_url}"}}\n')
    yaml = yaml.replace("roles:\n", "roles:\n  llm.pricey: {provider: up, model: pricey}\n", 1)
    yaml = yaml.replace(
        "models:\n",
        'models:\n  "up:pricey": {input_price_per_mtok: 1000.0, output_price_per_mtok: 2000.0}\n',
        1,
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml)
    return path


async def fire(url: str, key: str, n: int, body: dict[str, object]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n)) as http:
        headers = {"authorization": f"Bearer {key}"}
        return await asyncio.gather(
            *(http.post("/v1/chat/completions", json=body, headers=headers) for _ in range(n))
        )


def test_a_budget_holds_for_50_concurrent_requests_through_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIWireServer, store_url: str, gateway
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = config(tmp_path, openai_server, store_url)
    keys = orchlab.get_llm_client(path).keys
    key = keys.create("ana", budget="0.10/day")
    openai_server.push(*[Reply(delay_s=0.2, match="/chat/completions") for _ in range(50)])
    gw = gateway(path, 2)
    answers = asyncio.run(fire(gw.url, key.key, 50, {"model": "llm.pricey", "messages": Q, "max_tokens": 10}))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429} and codes.count(200) >= 1, [
        a.text for a in answers if a.status_code != 429
    ]
    refusals = [a.json()["error"] for a in answers if a.status_code == 429]
    assert all(e["code"] == "budget_exceeded" for e in refusals)
    gw.stop()  # the workers write their last settlements on the way out
    with keys.store._engine.connect() as conn:
        rows = conn.execute(select(usage_ledger.c.status, usage_ledger.c.amount_usd)).all()
    sent = [r for r in openai_server.requests if r.method == "POST"]
    assert len(sent) == codes.count(200) == len(rows)
    assert all(status == "settled" for status, _ in rows)
    assert sum(amount for _, amount in rows) <= 0.10 + 1e-12
    assert len(sent) * REAL_COST <= 0.10 and sum(a for _, a in rows) == pytest.approx(len(sent) * REAL_COST)


def test_rpm_60_answers_exactly_60_across_two_workers_with_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIWireServer, redis_url: str, gateway
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = config(
        tmp_path, openai_server, f"sqlite:///{tmp_path / 'store.db'}", f'  rate_limit_store: "{redis_url}"\n'
    )
    key = orchlab.get_llm_client(path).keys.create("ana", rpm=60)
    gw = gateway(path, 2)
    started = time.monotonic()
    answers: list[httpx.Response] = []
    for _ in range(10):  # 100 requests, 10 at a time
        answers += asyncio.run(fire(gw.url, key.key, 10, {"model": "llm.inference", "messages": Q}))
    assert time.monotonic() - started < 10
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 60 and codes.count(429) == 40
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in answers if a.status_code == 429)
    assert len([r for r in openai_server.requests if r.method == "POST"]) == 60


def test_rate_limits_count_alike_in_memory_and_redis_where_the_limits_library_reads_them(
    redis_url: str,
) -> None:
    """One script run per request in Redis, list operations in memory: the same answers, headers
    and counts either way, and the Redis windows are the ``limits`` library's own."""
    from datetime import UTC, datetime

    from limits import RateLimitItemPerMinute
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.storage import storage_from_string

    from orchlab.serve.errors import HTTPError
    from orchlab.serve.rate_limits import RateLimits
    from orchlab.store.keys import ApiKey

    key = ApiKey("k1", "u1", "ana", "abcd", "user", None, datetime.now(UTC), None, None, rpm=4, tpm=20)
    tokens_only = ApiKey("k2", "u1", "ana", "efgh", "user", None, datetime.now(UTC), None, None, tpm=10)

    async def drive(rates: RateLimits) -> list[tuple[int, str, str, str]]:
        seen = []
        for tokens in (7, 7, 7, 7, 7):
            try:
                h, code = await rates.admit(key), 200
                rates.count_tokens(key, tokens)
            except HTTPError as exc:
                h, code = exc.headers, exc.status
            seen.append(
                (
                    code,
                    h["x-ratelimit-remaining-requests"],
                    h.get("x-ratelimit-remaining-tokens", "-"),  # an rpm refusal stops before tpm
                    h.get("x-ratelimit-limit-tokens", "-"),
                )
            )
        h = await rates.admit(tokens_only)
        rates.count_tokens(tokens_only, 25)
        seen.append((200, "-", h["x-ratelimit-remaining-tokens"], h["x-ratelimit-reset-tokens"]))
        try:
            await rates.admit(tokens_only)
        except HTTPError as exc:
            seen.append(
                (exc.status, "-", exc.headers["x-ratelimit-remaining-tokens"], exc.headers["retry-after"])
            )
        await rates.aclose()
        return seen

    async def library_counts() -> tuple[int, int]:
        limiter = MovingWindowRateLimiter(storage_from_string(f"async+{redis_url}", implementation="redispy"))
        rpm = await limiter.get_window_stats(RateLimitItemPerMinute(4), "k1", "rpm")
        tpm = await limiter.get_window_stats(RateLimitItemPerMinute(20), "k1", "tpm")
        return rpm.remaining, tpm.remaining

    expected = [
        (200, "3", "20", "20"),
        (200, "2", "13", "20"),
        (200, "1", "6", "20"),
        (429, "0", "0", "20"),  # tpm: 20 of 20 counted (the third call's 7 capped at 6)
        (429, "0", "-", "-"),  # rpm: 4 of 4 (the request refused for its tpm was counted)
        (200, "-", "10", "1m0s"),
        (429, "-", "0", "60"),  # 25 tokens counted as the 10 left
    ]
    assert asyncio.run(drive(RateLimits("memory://"))) == expected
    assert asyncio.run(drive(RateLimits(redis_url))) == expected
    assert asyncio.run(library_counts()) == (0, 0)
