"""Pools: one provider entry, several deployments (loopback Ollama-wire servers), spread by
least-outstanding-requests or latency, a failing deployment cooled down and its request moved."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchlab.errors import ConfigValidationError, ProviderConnectionError
from orchlab.orchestrator import Orchestrator
from orchlab.providers.deployments import DeploymentPool
from orchlab.tracking.records import _attempt_span
from tests.servers.loopback import Reply, closed_port
from tests.servers.ollama_wire import OllamaWireServer

MODEL = "llama3.1:8b"
HELLO = [{"role": "user", "content": "hello there"}]


class SlowOllama(OllamaWireServer):
    """An Ollama-wire server whose chat replies take ``delay_s`` (``kill()``: the host dies)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        reply = super().default_reply(method, path, body)
        if "/api/chat" in path:
            reply.delay_s = self.delay_s
        return reply


@pytest.fixture
def servers() -> Iterator[list[SlowOllama]]:
    made = [SlowOllama(delay) for delay in (0.02, 0.2, 0.06)]
    for s in made:
        s.start()
    yield made
    for s in made:
        if not s.killed:
            s.stop()


def pool_yaml(urls: list[str], pool: str = "") -> str:
    listed = ", ".join(f'"{u}"' for u in urls)
    return f"""
        project: pools
        tracking: {{enabled: false}}
        providers:
          gpu-pool:
            type: ollama
            timeout_s: 5
            deployments: [{listed}]
            {pool}
        roles:
          llm.chat: {{provider: gpu-pool, model: "{MODEL}"}}
        """


def watch_picks(
    pool: DeploymentPool, client: Orchestrator
) -> tuple[list[tuple[float, str]], dict[str, float]]:
    """Record every deployment picked (when) and when each deployment's cooldown started."""
    picks: list[tuple[float, str]] = []
    cooled: dict[str, float] = {}
    pick, failure = pool._pick, client.health.failure

    def picked(tried: list[Any]) -> Any:
        d = pick(tried)
        if d is not None:
            picks.append((time.monotonic(), d.url))
        return d

    def failed(provider: str, error: str, *, after: int, cooldown_s: float) -> bool:
        started = failure(provider, error, after=after, cooldown_s=cooldown_s)
        if started:
            cooled.setdefault(provider, time.monotonic())
        return started

    pool._pick = picked  # type: ignore[method-assign]
    client.health.failure = failed  # type: ignore[method-assign]
    return picks, cooled


async def test_300_requests_spread_by_speed_survive_a_deployment_killed_mid_run(
    servers: list[SlowOllama], client_for: Callable[..., Orchestrator]
) -> None:
    fast, slow, doomed = servers
    client = client_for(pool_yaml([s.url for s in servers], "pool: {health_check_s: 0, cooldown_s: 600}"))
    pool = client.provider("gpu-pool")
    assert isinstance(pool, DeploymentPool)
    picks, cooled = watch_picks(pool, client)
    gate = asyncio.Semaphore(6)
    done = 0

    async def one(i: int) -> Any:
        nonlocal done
        async with gate:
            r = await client.arun("llm.chat", [{"role": "user", "content": f"request {i}"}])
            done += 1
            if done == 100:
                doomed.kill()
            return r

    responses = await asyncio.gather(*(one(i) for i in range(300)))

    assert [r.content for r in responses] == [f"echo: request {i}" for i in range(300)]
    served = Counter(r.decision.attempts[-1].deployment for r in responses)
    assert sum(served.values()) == 300, served
    # the share follows the speed: the 20 ms server served far more than the 200 ms one
    assert served[fast.url] > 2 * served[slow.url] > 0
    # the killed deployment: cooled down at its first failure, never picked after that
    dead_key = f"gpu-pool@{doomed.url}"
    assert dead_key in cooled
    assert [url for at, url in picks if at > cooled[dead_key] and url == doomed.url] == []
    stats = {row["url"]: row for row in pool.stats()}
    assert stats[doomed.url]["errors"] >= 1
    assert stats[doomed.url]["cooling_s"] is not None
    assert sum(row["outstanding"] for row in stats.values()) == 0
    assert sum(row["ok"] for row in stats.values()) == 300
    # an in-flight request of the dead deployment was moved, and its trail says so
    moved = [r for r in responses if r.moved_from]
    assert len(moved) == stats[doomed.url]["moved"] >= 1
    attempt = moved[0].decision.attempts[-1]
    assert attempt.outcome == "ok" and attempt.deployment != doomed.url
    assert attempt.note == (
        f"moved to {attempt.deployment} after {doomed.url} (ProviderConnectionError) failed"
    )
    # per-deployment counters in usage()
    usage = client.usage(by=["provider", "deployment"])
    by_url = dict(zip(usage["deployment"], usage["calls"], strict=True))
    assert by_url == {url: n for url, n in served.items()}


def test_latency_balance_gives_sequential_requests_by_speed(
    servers: list[SlowOllama], client_for: Callable[..., Orchestrator]
) -> None:
    fast, slow, _other = servers  # 20, 200 and 60 ms
    client = client_for(pool_yaml([s.url for s in servers], "pool: {balance: latency, health_check_s: 0}"))
    pool = client.provider("gpu-pool")
    pool._random.seed(7)
    for i in range(60):
        client.run("llm.chat", [{"role": "user", "content": f"n{i}"}])
    served = {row["url"]: row["requests"] for row in pool.stats()}
    # each is measured once, then drawn by speed: the slowest keeps a small share
    assert served[fast.url] == max(served.values())
    assert served[fast.url] > 2 * served[slow.url] >= 2
    assert client.usage(by="deployment")["calls"].sum() == 60


def test_least_outstanding_sync_run_records_the_deployment_in_the_trail_and_span(
    servers: list[SlowOllama], client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(pool_yaml([s.url for s in servers[:2]], "pool: {health_check_s: 0}"))
    r = client.run("llm.chat", HELLO)
    assert r.content == "echo: hello there"
    assert r.deployment in {servers[0].url, servers[1].url}
    assert r.decision.attempts[0].deployment == r.deployment
    span = _attempt_span(r.decision.attempts[0], [], {"gpu-pool": "ollama"}, time.time())
    assert span["attributes"]["orchlab.deployment"] == r.deployment


def test_a_dead_deployment_fails_over_on_the_sync_path_and_cools_down(
    servers: list[SlowOllama], client_for: Callable[..., Orchestrator]
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    client = client_for(pool_yaml([dead, servers[0].url], "pool: {health_check_s: 0, cooldown_s: 600}"))
    results = [client.run("llm.chat", HELLO) for _ in range(5)]
    assert [r.deployment for r in results] == [servers[0].url] * 5
    assert results[0].moved_from == (f"{dead} (ProviderConnectionError)",)
    assert [r.moved_from for r in results[1:]] == [()] * 4  # cooling: not tried again
    assert client.health.cooling(f"gpu-pool@{dead}") is not None


def test_every_deployment_down_raises_one_error_naming_each(client_for: Callable[..., Orchestrator]) -> None:
    urls = [f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"]
    client = client_for(pool_yaml(urls, "pool: {health_check_s: 0}"))
    with pytest.raises(ProviderConnectionError) as caught:
        client.run("llm.chat", HELLO)
    message = str(caught.value)
    assert "every deployment of 'gpu-pool' failed this request" in message
    assert all(f"{u} (ProviderConnectionError)" in message for u in urls)
    assert caught.value.provider == "gpu-pool"


def test_a_stream_moves_before_its_first_token(
    servers: list[SlowOllama], client_for: Callable[..., Orchestrator]
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    client = client_for(pool_yaml([dead, servers[0].url], "pool: {health_check_s: 0}"))
    stream = client.stream("llm.chat", HELLO)
    assert "".join(stream) == "echo: hello there"
    assert stream.response is not None
    assert stream.response.deployment == servers[0].url
    assert stream.response.decision.attempts[0].deployment == servers[0].url


async def test_the_health_check_marks_deployments_down_and_stops_with_the_client(
    servers: list[SlowOllama], client_for: Callable[..., Orchestrator]
) -> None:
    fast, slow, doomed = servers
    client = client_for(pool_yaml([s.url for s in servers], "pool: {health_check_s: 0.05}"))
    pool = client.provider("gpu-pool")
    assert isinstance(pool, DeploymentPool) and pool.watching
    doomed.kill()
    deadline = time.monotonic() + 10
    while {r["url"]: r["up"] for r in pool.stats()}[doomed.url] and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert {r["url"]: r["up"] for r in pool.stats()} == {fast.url: True, slow.url: True, doomed.url: False}
    assert pool.available() is None
    r = await client.arun("llm.chat", HELLO)
    assert r.deployment != doomed.url  # marked down: not picked
    checks = len([q for q in fast.requests if q.route == "/api/tags"])
    assert checks >= 1
    await client.aclose()
    assert not pool.watching
    settled = len([q for q in fast.requests if q.route == "/api/tags"])
    await asyncio.sleep(0.2)
    assert len([q for q in fast.requests if q.route == "/api/tags"]) == settled


def test_a_dropped_client_stops_its_health_check(
    servers: list[SlowOllama], write_config: Callable[[str], Any]
) -> None:
    import gc

    import orchlab

    client = orchlab.get_llm_client(write_config(pool_yaml([servers[0].url], "pool: {health_check_s: 0.05}")))
    pool = client.provider("gpu-pool")
    assert isinstance(pool, DeploymentPool)
    watcher = pool._watcher
    assert watcher is not None and not watcher.done()
    del client, pool
    gc.collect()
    deadline = time.monotonic() + 5
    while not watcher.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watcher.cancelled() or watcher.done()


@pytest.mark.parametrize(
    ("entry", "where", "says"),
    [
        (
            'type: ollama\n    api_base: "http://a:1"\n    deployments: ["http://b:1"]',
            "providers.p",
            "not both",
        ),
        ("type: ollama\n    pool: {balance: latency}", "providers.p", "pool: applies to deployments:"),
        ('type: ollama\n    deployments: ["http://a:1", "http://a:1"]', "providers.p", "listed twice"),
        (
            'type: ollama\n    deployments: ["http://a:1"]\n    pool: {balance: fastest}',
            "providers.p.pool.balance",
            "",
        ),
    ],
)
def test_bad_pool_entries_are_refused_at_load(
    entry: str, where: str, says: str, write_config: Callable[[str], Any]
) -> None:
    import orchlab

    path = write_config(f"project: t\nproviders:\n  p:\n    {entry}\n")
    with pytest.raises(ConfigValidationError) as caught:
        orchlab.get_llm_client(path)
    assert where in str(caught.value) and says in str(caught.value)


def test_an_in_process_kind_cannot_have_deployments(client_for: Callable[..., Orchestrator]) -> None:
    client = client_for(
        'project: t\nproviders:\n  local: {type: llamacpp, deployments: ["http://a:1"]}\n'
        "roles:\n  r: {provider: local, model: m}\n"
    )
    with pytest.raises(ConfigValidationError) as caught:
        client.provider("local")
    assert "providers.local.deployments: type 'llamacpp' runs its model in this process" in str(caught.value)


def test_a_vllm_pool_moves_off_a_killed_deployment(client_for: Callable[..., Orchestrator]) -> None:
    from tests.servers.openai_wire import OpenAIWireServer

    with OpenAIWireServer() as one, OpenAIWireServer() as two:
        client = client_for(
            f"""
            project: t
            tracking: {{enabled: false}}
            providers:
              vpool:
                type: vllm
                deployments: ["{one.base_url}", "{two.base_url}"]
                pool: {{health_check_s: 0, cooldown_s: 600}}
            roles:
              r: {{provider: vpool, model: qwen3}}
            """
        )
        first = [client.run("r", [{"role": "user", "content": f"q{i}"}]).deployment for i in range(4)]
        assert set(first[:2]) == {one.base_url, two.base_url}  # each unmeasured one is tried first
        # the one the pool picks next: none in flight, so the lower recent latency (the last
        # call's own latency moves it, so the last pick is not a guide)
        pool = client.provider("vpool")
        fastest = min(pool.deployments, key=lambda d: d.latency_s or 0.0).url
        doomed, alive = (one, two) if fastest == one.base_url else (two, one)
        doomed.kill()
        after = [client.run("r", [{"role": "user", "content": f"k{i}"}]) for i in range(4)]
        assert [r.content for r in after] == [f"echo: k{i}" for i in range(4)]
        assert [r.deployment for r in after] == [alive.base_url] * 4
        assert [r.moved_from for r in after] == [
            (f"{doomed.base_url} (ProviderConnectionError)",),
            (),
            (),
            (),
        ]
        order = [d.url for d in client.provider("vpool").deployments]
        assert asyncio.run(client.provider("vpool").check()) == [u == alive.base_url for u in order]
