"""A streamed cache hit replays the chunks of the stream that stored it (SQLite and a real Redis),
in the library (``client.stream``, async and sync) and on the gateway (SSE); an entry without
them (a plain call's, or one an older orchlab stored) replays as one chunk; the stream says
``hit`` / ``miss`` from its first chunk, so the gateway's streamed answer carries
``x-orchlab-cache`` like a plain one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchlab.orchestrator import Orchestrator
from orchlab.pipeline.cache import SQLiteBackend
from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply, stream_chunks
from tests.test_cache import redis_url  # noqa: F401  (a real redis-server on loopback)

Q = [{"role": "user", "content": "hi"}]
PIECES = ["The", " answer", " is", " four", "."]


@pytest.fixture(autouse=True)
def _cache_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_CACHE")  # conftest turns it off for every other test
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-cache-test-0123456789")


def config(base_url: str, cache_url: str) -> str:
    return f"""\
project: t
cache: {{url: "{cache_url}"}}
providers:
  oa: {{type: openai, api_base: "{base_url}", max_retries: 0}}
models:
  "oa:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
roles:
  det: {{provider: oa, model: m, params: {{temperature: 0}}}}
  fb: {{strategy: fallback, candidates: ["oa:m"], params: {{temperature: 0}}}}
"""


def sent(server: OpenAIWireServer) -> int:
    return len([r for r in server.requests if r.path.endswith("/chat/completions")])


def push_stream(server: OpenAIWireServer, pieces: list[str] = PIECES) -> None:
    server.push(Reply(stream_chunks=stream_chunks(pieces, model="m", prompt_tokens=3)))


@pytest.fixture(params=["sqlite", "redis"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cache.db'}"
    import redis

    url: str = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return url


async def test_a_streamed_hit_yields_the_chunks_of_the_miss_in_order(
    cache_url: str, openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(config(openai_server.base_url, cache_url))
    push_stream(openai_server)
    miss = client.stream("det", Q)
    seen = []
    async for delta in miss:
        seen.append((delta, miss.cache))  # the cache's verdict is known from the first chunk on
    assert seen == [(p, "miss") for p in PIECES]
    hit = client.stream("det", Q)
    replayed = []
    async for delta in hit:
        replayed.append((delta, hit.cache))
    assert replayed == [(p, "hit") for p in PIECES]
    assert hit.response is not None and (hit.response.cache, hit.response.cost_usd) == ("hit", 0.0)
    assert hit.response.content == "The answer is four." and hit.response.finish_reason == "stop"
    # in a sync for loop (another client, the same store) too, and a plain call gets the whole text
    other = client_for(config(openai_server.base_url, cache_url))
    assert list(other.stream("det", Q)) == PIECES
    assert other.run("det", Q).content == "The answer is four."
    assert sent(openai_server) == 1


async def test_a_logic_streams_its_hit_in_the_same_chunks(
    tmp_path: Path, openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(config(openai_server.base_url, f"sqlite:///{tmp_path / 'c.db'}"))
    push_stream(openai_server)
    miss = client.stream("fb", Q)
    assert [(d, miss.cache) async for d in miss] == [(p, "miss") for p in PIECES]
    hit = client.stream("fb", Q)
    assert [(d, hit.cache) async for d in hit] == [(p, "hit") for p in PIECES]
    assert hit.response is not None and hit.response.cache == "hit"
    assert sent(openai_server) == 1


def test_a_plain_answer_or_an_old_entry_replays_as_one_chunk(
    tmp_path: Path, openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    client = client_for(config(openai_server.base_url, url))
    assert client.run("det", Q).cache == "miss"  # a plain call stores no chunks
    hit = client.stream("det", Q)
    assert (list(hit), hit.cache) == (["echo: hi"], "hit")
    # an entry as the orchlab before chunk boundaries wrote it (no "cuts"): one chunk, no crash
    db = SQLiteBackend(tmp_path / "c.db", ttl_s=60, max_entries=10)
    [key] = [row[0] for row in db._db.execute("SELECT key FROM entries")]
    old = {
        "content": "stored long ago",
        "model": "m",
        "finish_reason": "stop",
        "usage": [1, 2, 0, 0],
        "cost_usd": 0.003,
        "logprobs": None,
        "tool_calls": [],
        "stored_at": time.time(),
    }
    db.put(key, json.dumps(old))
    db.close()
    fresh = client_for(config(openai_server.base_url, url))
    replay = fresh.stream("det", Q)
    assert (list(replay), replay.cache) == (["stored long ago"], "hit")
    assert sent(openai_server) == 1


def test_an_old_redis_entry_replays_as_one_chunk(
    redis_url: str,  # noqa: F811
    openai_server: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    client = client_for(config(openai_server.base_url, redis_url))
    assert client.run("det", Q).cache == "miss"
    [key] = [k.decode() for k in r.zrange("orchlab:cache:index", 0, -1)]
    old = json.loads(r.get("orchlab:cache:" + key))
    assert "cuts" not in old  # a plain call's entry: the old layout
    old["content"] = "from an older orchlab"
    r.set("orchlab:cache:" + key, json.dumps(old))
    replay = client.stream("det", Q)
    assert (list(replay), replay.cache) == (["from an older orchlab"], "hit")


# --- the gateway ---------------------------------------------------------------------------------


def _sse(
    served, headers: dict[str, str] | None = None, model: str = "llm.inference"
) -> tuple[httpx.Response, list[dict]]:
    body = {"model": model, "messages": Q, "stream": True, "temperature": 0}
    with httpx.stream(
        "POST", f"{served.base_url}/chat/completions", json=body, headers=headers or {}, timeout=30
    ) as r:
        frames = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    return r, frames


def _texts(frames: list[dict]) -> list[str]:
    return [
        f["choices"][0]["delta"]["content"]
        for f in frames
        if f.get("choices") and f["choices"][0]["delta"].get("content")
    ]


@pytest.mark.parametrize("model", ["llm.inference", "llm.fallback"])
def test_the_gateway_streams_a_hit_in_the_same_chunks_with_its_cache_header(
    serve, openai_server: OpenAIWireServer, tmp_path: Path, model: str
) -> None:
    extra = (
        '  llm.fallback: {strategy: fallback, candidates: ["up:cheap"]}\n'
        f"cache: {{url: 'sqlite:///{tmp_path / 'c.db'}'}}\n"
    )
    served = serve(gateway_yaml(openai_server, extra=extra))
    push_stream(openai_server)
    first, frames = _sse(served, model=model)
    assert (first.status_code, first.headers.get("x-orchlab-cache")) == (200, "miss")
    assert _texts(frames) == PIECES
    again, frames = _sse(served, model=model)
    assert (again.status_code, again.headers.get("x-orchlab-cache")) == (200, "hit")
    assert _texts(frames) == PIECES and frames[-1]["choices"][0]["finish_reason"] == "stop"
    # not asked: no header, as for a plain answer
    off, frames = _sse(served, {"x-orchlab-cache": "off"}, model=model)
    assert "x-orchlab-cache" not in off.headers and _texts(frames) == ["echo: ", "hi "]
    assert sent(openai_server) == 2


def test_a_streamed_error_before_the_first_chunk_is_an_openai_error_and_not_stored(
    serve, openai_server: OpenAIWireServer, tmp_path: Path
) -> None:
    served = serve(gateway_yaml(openai_server, extra=f"cache: {{url: 'sqlite:///{tmp_path / 'c.db'}'}}\n"))
    openai_server.push(Reply.error(500, "boom"))
    r, _ = _sse(served)
    assert r.status_code == 503 and "x-orchlab-cache" not in r.headers
    with httpx.Client() as http:
        body = {"model": "llm.inference", "messages": Q, "stream": True, "temperature": 0}
        openai_server.push(Reply.error(500, "boom"))
        err = http.post(f"{served.base_url}/chat/completions", json=body)
    assert err.json()["error"]["code"] == "upstream_unavailable"
    assert set(err.json()["error"]) == {"message", "type", "param", "code"}
    push_stream(openai_server)
    assert _sse(served)[0].headers["x-orchlab-cache"] == "miss"  # the errors were not stored


def test_an_entry_keeps_the_chunk_boundaries_as_lengths_only_when_they_make_up_the_answer() -> None:
    from orchlab.pipeline.cache import encode
    from orchlab.types import LLMResponse

    answer = LLMResponse("The answer is four.", "oa", "m")
    assert json.loads(encode(answer, PIECES))["cuts"] == [3, 7, 3, 5, 1]
    assert "cuts" not in json.loads(encode(answer, ["The answer", " is five."]))  # not this answer
    assert "cuts" not in json.loads(encode(answer, ["The answer is four."]))  # one chunk anyway
    assert "cuts" not in json.loads(encode(answer))
