"""The response cache (`orchlab.pipeline.cache`): which requests it answers, what a hit looks like
(trail, usage, stream), what is never stored, its key, its bounds, and Redis for real."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchlab.errors import InvalidRequestError, ProviderError
from orchlab.orchestrator import Orchestrator
from orchlab.pipeline.cache import RedisBackend, SQLiteBackend, cache_key
from orchlab.resolution import ResolvedLLMConfig
from orchlab.types import GenerationParams, Message, ModelRequest
from tests.servers.openai_wire import OpenAIWireServer, Reply
from tests.store_support import opened_behind_a_lock

Q = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _cache_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ORCH_CACHE")  # conftest turns it off for every other test
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-cache-test-0123456789")


def config(base_url: str, extra: str = "") -> str:
    return (
        f"""\
        project: t
        providers:
          oa: {{type: openai, api_base: "{base_url}"}}
        models:
          "oa:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
        roles:
          det: {{provider: oa, model: m, params: {{temperature: 0}}}}
          twin: {{provider: oa, model: m, params: {{temperature: 0}}}}
          seeded: {{provider: oa, model: m, params: {{seed: 7}}}}
          free: {{provider: oa, model: m}}
          forced: {{provider: oa, model: m, cache: force}}
          never: {{provider: oa, model: m, params: {{temperature: 0}}, cache: off}}
        """
        + extra
    )


@pytest.fixture
def client(openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]) -> Orchestrator:
    return client_for(config(openai_server.base_url))


def sent(server: OpenAIWireServer) -> int:
    return len([r for r in server.requests if r.path.endswith("/chat/completions")])


def test_a_deterministic_request_is_answered_once_then_from_the_cache_for_nothing(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    first = client.run("det", Q)
    again = client.run("det", Q)
    assert sent(openai_server) == 1
    assert (first.cache, first.cost_usd) == ("miss", pytest.approx(0.003))
    assert (again.content, again.cache, again.cost_usd) == (first.content, "hit", 0.0)
    assert (again.usage.input_tokens, again.usage.output_tokens) == (0, 0)
    assert again.cost_note == (
        "cache hit: the stored answer of an earlier call (1 in / 2 out tokens, it cost $0.003000); "
        "nothing was sent, $0"
    )
    [attempt] = again.decision.attempts
    assert (attempt.cache, attempt.cost_usd, attempt.outcome) == ("hit", 0.0, "ok")
    assert "cache hit" in again.decision.explain()
    [row] = client.usage_tracker.totals(by=["role"])
    assert (row["calls"], row["cache_hits"], row["cost_usd"]) == (2, 1, pytest.approx(0.003))
    # a seed makes a request deterministic too
    client.run("seeded", Q)
    assert client.run("seeded", Q).cache == "hit"
    assert sent(openai_server) == 2


def test_two_roles_bound_to_the_same_target_share_entries(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    client.run("det", Q)
    assert client.run("twin", Q).cache == "hit"
    assert sent(openai_server) == 1


def test_a_request_that_samples_is_sent_every_time_unless_forced(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    assert [client.run("free", Q).cache for _ in range(2)] == [None, None]
    assert sent(openai_server) == 2
    assert [client.run("forced", Q).cache for _ in range(2)] == ["miss", "hit"]  # role cache: force
    assert [client.run("free", Q, cache="force").cache for _ in range(2)] == ["hit", "hit"]  # shared key
    assert sent(openai_server) == 3


def test_off_per_role_and_per_call_and_the_kill_switch(
    client: Orchestrator,
    openai_server: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [client.run("never", Q).cache for _ in range(2)] == [None, None]
    client.run("det", Q)
    assert client.run("det", Q, cache="off").cache is None
    assert client.run("det", Q, cache=False).cache is None
    assert sent(openai_server) == 5
    with pytest.raises(InvalidRequestError, match=r"cache='sometimes': expected one of auto, force, off"):
        client.run("det", Q, cache="sometimes")
    monkeypatch.setenv("ORCH_CACHE", "off")
    off = client_for(config(openai_server.base_url))
    assert [off.run("det", Q, cache="force").cache for _ in range(2)] == [None, None]
    assert sent(openai_server) == 7


def test_a_changed_parameter_is_another_entry(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    client.run("det", Q)
    for change in (
        {"max_tokens": 5},
        {"top_p": 0.5},
        {"stop": ["x"]},
        {"response_format": {"type": "json_object"}},
    ):
        assert client.run("det", Q, change).cache == "miss", change
    assert client.run("det", [{"role": "system", "content": "be brief"}, *Q]).cache == "miss"
    assert client.run("det", Q, {"timeout_s": 9}).cache == "hit"  # a timeout never changes the answer
    assert sent(openai_server) == 6


def test_errors_are_never_stored(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    openai_server.push(Reply.error(500, "boom"))
    with pytest.raises(ProviderError):
        client.run("det", Q)
    assert client.run("det", Q).cache == "miss"
    assert client.run("det", Q).cache == "hit"
    assert sent(openai_server) == 2


async def test_a_streamed_hit_replays_the_answer_as_a_stream(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    stream = client.stream("det", Q)
    first = [d async for d in stream]
    assert stream.response is not None and stream.response.cache == "miss"
    replay = client.stream("det", Q)
    assert [d async for d in replay] == first == ["echo: ", "hi "]  # the same chunks
    assert replay.response is not None
    assert (replay.response.cache, replay.response.cost_usd) == ("hit", 0.0)
    assert (await client.arun("det", Q)).cache == "hit"  # the streamed answer serves a plain call
    assert sent(openai_server) == 1


def test_a_streamed_hit_replays_in_a_sync_for_loop_too(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    stream = client.stream("det", Q)
    first = list(stream)  # a sync stream runs on the blocking client, in this thread
    assert stream.response is not None and stream.response.cache == "miss"
    replay = client.stream("det", Q)
    assert list(replay) == first == ["echo: ", "hi "]
    assert replay.response is not None
    assert (replay.response.cache, replay.response.cost_usd) == ("hit", 0.0)
    assert sent(openai_server) == 1


async def test_a_stream_cut_off_is_not_stored(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    stream = client.stream("det", Q)
    async for _ in stream:
        break
    await stream._chunks.aclose()  # type: ignore[attr-defined]
    assert (await client.arun("det", Q)).cache == "miss"
    assert sent(openai_server) == 2


def test_the_default_store_is_a_sqlite_file_beside_the_thread_store(
    client: Orchestrator, tmp_path: Path
) -> None:
    client.run("det", Q)
    assert (tmp_path / ".orchlab" / "cache.db").is_file()  # tracking off: the store is in the cwd too


def test_compare_measures_instead_of_replaying_unless_asked(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    from orchlab.tracking.compare import compare

    client.run("det", Q)
    compare(["hi"], ["det"], client=client, progress=False, log_runs=False, warmup=False)
    assert sent(openai_server) == 2
    compare(["hi"], ["det"], client=client, progress=False, log_runs=False, warmup=False, cache="auto")
    assert sent(openai_server) == 2


# --- the key ---------------------------------------------------------------------------------


def resolved(**changes: object) -> ResolvedLLMConfig:
    base = {"provider": "oa", "kind": "openai", "model": "m", "api_key": None, "api_base": "http://x/v1"}
    return ResolvedLLMConfig(**{**base, **changes})  # type: ignore[arg-type]


def request(**changes: object) -> ModelRequest:
    params = GenerationParams(temperature=0, extra={"response_format": {"type": "json_object", "a": 1}})
    base: dict[str, object] = {"model": "m", "messages": (Message("user", "hi"),), "params": params}
    return ModelRequest(**{**base, **changes})  # type: ignore[arg-type]


KEY_SCRIPT = """
import sys
from tests.test_cache import resolved, request
from orchlab.types import GenerationParams
from orchlab.pipeline.cache import cache_key
params = GenerationParams(temperature=0, extra={"response_format": {"a": 1, "type": "json_object"}})
print(cache_key(resolved(), request(params=params)))
"""


def test_the_key_is_the_same_in_another_process_and_for_any_dict_order() -> None:
    here = cache_key(resolved(), request())
    there = subprocess.run(
        [sys.executable, "-c", KEY_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],  # the tests run in a temp dir; `tests` imports from the root
    ).stdout.strip()
    assert there == here
    assert len(here) == 64 and int(here, 16) >= 0


def test_each_part_of_the_resolved_request_changes_the_key() -> None:
    from orchlab.tools.model import Tool

    base = cache_key(resolved(), request())
    variants = [
        cache_key(resolved(provider="other"), request()),
        cache_key(resolved(kind="vllm"), request()),
        cache_key(resolved(api_base="http://y/v1"), request()),
        cache_key(resolved(), request(model="m2")),
        cache_key(resolved(), request(messages=(Message("user", "hi "),))),
        cache_key(resolved(), request(tools=(Tool("f"),))),
        cache_key(resolved(), request(tool_choice="none")),
        cache_key(resolved(), request(parallel_tool_calls=False)),
        cache_key(resolved(), request(params=GenerationParams(temperature=0))),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    # a key (any credential) is not part of it: the same request with another key shares entries
    from orchlab.auth import Secret

    assert cache_key(resolved(api_key=Secret("sk-another-key-000000")), request()) == base


# --- bounds ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def test_sqlite_entries_expire_after_their_ttl_and_the_oldest_go_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchlab.pipeline.cache as cache_module

    clock = Clock()
    monkeypatch.setattr(cache_module, "time", clock)
    db = SQLiteBackend(tmp_path / "c.db", ttl_s=60, max_entries=3)
    for i in range(5):
        clock.now += 1
        db.put(f"k{i}", f"v{i}")
    assert len(db) == 3
    assert [db.get(f"k{i}") for i in range(5)] == [None, None, "v2", "v3", "v4"]
    clock.now += 58.5  # k2 was stored 60.5 s ago by now, k3 59.5 s ago
    assert [db.get(f"k{i}") for i in (2, 3, 4)] == [None, "v3", "v4"]
    db.close()


def test_a_new_sqlite_cache_waits_while_another_process_holds_a_lock_on_it(tmp_path: Path) -> None:
    def open_cache() -> str | None:
        backend = SQLiteBackend(tmp_path / "c.db", ttl_s=60, max_entries=3)
        backend.put("k", "v")
        try:
            return backend.get("k")
        finally:
            backend.close()

    assert opened_behind_a_lock(tmp_path / "c.db", open_cache) == "v"


# --- Redis, a real server on loopback ----------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed (apt-get install -y redis-server)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_two_clients_share_answers_through_redis(
    redis_url: str, openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    yaml = config(openai_server.base_url, f"cache: {{url: '{redis_url}', ttl_s: 30}}\n")
    one, two = client_for(yaml), client_for(yaml)
    assert one.run("det", Q).cache == "miss"
    assert two.run("det", Q).cache == "hit"
    assert sent(openai_server) == 1
    ttl = redis.Redis.from_url(redis_url).pttl("orchlab:cache:" + next(iter(_index(redis_url))))
    assert 0 < ttl <= 30_000


def _index(url: str) -> list[str]:
    import redis

    return [k.decode() for k in redis.Redis.from_url(url).zrange("orchlab:cache:index", 0, -1)]


def test_redis_keeps_at_most_max_entries(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    db = RedisBackend(redis_url, ttl_s=60, max_entries=2)
    for i in range(4):
        db.put(f"k{i}", json.dumps(i))
    assert sorted(_index(redis_url)) == ["k2", "k3"]
    assert [db.get(f"k{i}") for i in range(4)] == [None, None, "2", "3"]
    db.close()


def test_a_cache_that_is_down_warns_once_and_the_calls_are_sent(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    from tests.servers.loopback import closed_port

    client = client_for(
        config(openai_server.base_url, f"cache: {{url: 'redis://127.0.0.1:{closed_port()}/0'}}\n")
    )
    with pytest.warns(Warning, match=r"the response cache failed \(ConnectionError"):
        assert client.run("det", Q).content == "echo: hi"
    assert client.run("det", Q).cache is None
    assert sent(openai_server) == 2
