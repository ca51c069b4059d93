"""The OpenAI adapter and every OpenAI-compatible kind, through the real ``openai`` SDK.

Each test writes a YAML config, builds a client with `orchlab.get_llm_client`, and calls it the way a
user does (`run`, `arun`, `stream`) against the loopback server in tests/servers/openai_wire.py,
which speaks OpenAI's wire format and records exactly what the SDK sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab.calls import CallRecord
from orchlab.errors import (
    AuthenticationError,
    AuthError,
    ContextLengthExceededError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ScrubbedCause,
)
from orchlab.orchestrator import Orchestrator
from orchlab.providers.base import DiscoveredModel
from tests.servers.openai_wire import OpenAIWireServer, Recorded, Reply, completion_body, stream_chunks

KEY = "sk-test-7f3a9c1e5b2d4680aa"
PROFILE = "acme-prod"
ENV_VAR = "ORCH_AUTH_ACME_PROD_API_KEY"
ROLE = "llm.preprocess"
MODEL = "gpt-4.1-mini"
MESSAGES = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
]

ALL_KINDS = ["openai", "deepseek", "qwen", "openrouter", "vllm", "lmstudio", "llamacpp_server"]
COMPATIBLE_KINDS = ALL_KINDS[1:]
KEYLESS_KINDS = ["vllm", "lmstudio", "llamacpp_server"]
DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "qwen": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "vllm": "http://localhost:8000/v1",
    "lmstudio": "http://localhost:1234/v1",
    "llamacpp_server": "http://localhost:8080/v1",
}
VIAS = ["run", "arun", "stream"]
# the role's params in every config unless a test says otherwise (one cached client per kind)
STD_PARAMS: dict[str, Any] = {
    "temperature": 0.3,
    "max_tokens": 12,
    "top_p": 0.9,
    "stop": ["\n\n", "END"],
    "seed": 7,
}
_OMIT = object()


def max_tokens_param(kind: str) -> str:
    return "max_completion_tokens" if kind == "openai" else "max_tokens"


def header(rec: Recorded, name: str) -> str | None:
    return next((v for k, v in rec.headers.items() if k.lower() == name.lower()), None)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(client: Orchestrator, via: str, params_override: dict[str, Any] | None = None) -> Any:
    """One call through the public API: the response (for a stream, its final response)."""
    if via == "run":
        return client.run(ROLE, MESSAGES, params_override)
    if via == "arun":
        return asyncio.run(client.arun(ROLE, MESSAGES, params_override))
    stream = client.stream(ROLE, MESSAGES, params_override)
    stream.text()
    return stream.response


MakeClient = Callable[..., Orchestrator]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIWireServer]:
    """One loopback server for the module (`reset` before each test): SDK clients are reused too."""
    with OpenAIWireServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def _client_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Orchestrator]]:
    cache: dict[str, Orchestrator] = {}
    yield cache
    for client in cache.values():
        client.close()


@pytest.fixture
def openai_server(server: OpenAIWireServer) -> OpenAIWireServer:
    """The module's server, with no request recorded and no reply scripted."""
    server.reset()
    return server


@pytest.fixture
def make_client(
    tmp_path_factory: pytest.TempPathFactory,
    openai_server: OpenAIWireServer,
    _client_cache: dict[str, Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[MakeClient]:
    """`get_llm_client(path)` for a one-provider, one-role YAML config written from the arguments.

    Clients for the same config are built once per module (building the SDK clients costs ~70 ms
    each); ``fresh=True`` builds a new one for this test only.
    """
    monkeypatch.setenv(ENV_VAR, KEY)
    monkeypatch.setenv("ORCH_TRACKING", "0")  # MLflow tracking is tested in its own module
    fresh_clients: list[Orchestrator] = []

    def make(
        kind: str = "openai",
        *,
        api_base: Any = None,
        params: dict[str, Any] | None = STD_PARAMS,
        provider: dict[str, Any] | None = None,
        auth: bool = True,
        fresh: bool = False,
    ) -> Orchestrator:
        entry: dict[str, Any] = {"type": kind}
        if api_base is not _OMIT:
            entry["api_base"] = api_base or openai_server.base_url
        if auth:
            entry["auth_profile"] = PROFILE
        entry.update(provider or {})
        role: dict[str, Any] = {"provider": "remote", "model": MODEL}
        if params:
            role["params"] = params
        text = textwrap.dedent(
            f"""\
            project: adapter_tests
            env: test
            providers:
              remote: {json.dumps(entry)}
            roles:
              {ROLE}: {json.dumps(role)}
            """
        )
        if not fresh and text in _client_cache:
            return _client_cache[text]
        path = tmp_path_factory.mktemp("config") / "llm_orchestrator.yaml"
        path.write_text(text, encoding="utf-8")
        client = orchlab.get_llm_client(path)
        if fresh:
            fresh_clients.append(client)
        else:
            _client_cache[text] = client
        return client

    yield make
    for client in fresh_clients:
        client.close()


# --- JSON completions ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_completion_sends_the_exact_body_and_reads_the_answer(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    openai_server.push(
        Reply(
            body=completion_body(
                "Paris.", model="gpt-4.1-mini-2025-04-14", prompt_tokens=14, completion_tokens=2
            )
        )
    )

    r = client.run(ROLE, MESSAGES)

    assert len(openai_server.requests) == 1
    rec = openai_server.requests[0]
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.body == {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0.3,
        max_tokens_param(kind): 12,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "seed": 7,
    }
    assert header(rec, "authorization") == f"Bearer {KEY}"
    assert r.content == "Paris."
    assert str(r) == "Paris."
    assert (r.provider, r.model, r.role) == ("remote", "gpt-4.1-mini-2025-04-14", ROLE)
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (14, 2, 16)
    assert r.finish_reason == "stop"
    assert r.raw.id == "chatcmpl-loopback"
    assert 0 < r.latency_s < 5
    assert r.decision is not None
    attempt = r.decision.attempts[0]
    assert (attempt.provider, attempt.model, attempt.outcome, attempt.output) == (
        "remote",
        MODEL,
        "ok",
        "Paris.",
    )


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_arun_sends_the_same_body_as_run(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    sync = client.run(ROLE, MESSAGES)
    asyn = asyncio.run(client.arun(ROLE, MESSAGES))
    first, second = openai_server.requests
    assert first.body == second.body
    assert first.body[max_tokens_param(kind)] == 12
    assert header(second, "authorization") == f"Bearer {KEY}"
    # the default echo: "echo: <last message>", usage counted in words
    assert sync.content == asyn.content == "echo: Capital of France?"
    assert (asyn.usage.input_tokens, asyn.usage.output_tokens) == (7, 4)
    assert asyn.role == ROLE and asyn.finish_reason == "stop"


def test_usage_details_cached_and_reasoning_tokens(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    body = completion_body("42", model="o4-mini", prompt_tokens=2048, completion_tokens=80)
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1024, "audio_tokens": 0}
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 64, "audio_tokens": 0}
    openai_server.push(Reply(body=body))
    u = client.run(ROLE, MESSAGES).usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.reasoning_tokens) == (2048, 80, 1024, 64)


def test_deepseek_cache_hit_tokens_are_read(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("deepseek")
    body = completion_body("ok", model="deepseek-chat", prompt_tokens=300, completion_tokens=3)
    body["usage"].update({"prompt_cache_hit_tokens": 256, "prompt_cache_miss_tokens": 44})
    openai_server.push(Reply(body=body))
    u = client.run(ROLE, MESSAGES).usage
    assert (u.input_tokens, u.cache_read_tokens) == (300, 256)


def test_logprobs_are_requested_and_read(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openai")
    openai_server.push(
        Reply(
            body=completion_body(
                "Yes", model=MODEL, prompt_tokens=3, completion_tokens=2, logprobs=[-0.105, -2.5]
            )
        )
    )
    r = client.run(ROLE, MESSAGES, params_override={"logprobs": True})
    assert openai_server.requests[0].body["logprobs"] is True
    assert r.logprobs == [-0.105, -2.5]


def test_finish_reason_length_is_reported(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("vllm")
    openai_server.push(
        Reply(
            body=completion_body(
                "The capital", model=MODEL, prompt_tokens=9, completion_tokens=2, finish_reason="length"
            )
        )
    )
    r = client.run(ROLE, MESSAGES, params_override={"max_tokens": 2})
    assert (r.finish_reason, r.usage.output_tokens) == ("length", 2)
    assert openai_server.requests[0].body["max_tokens"] == 2


@pytest.mark.parametrize("kind", COMPATIBLE_KINDS)
def test_params_override_and_extra_params(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    client.run(
        ROLE, MESSAGES, params_override={"temperature": 0.9, "max_tokens": 3, "stop": "###", "top_k": 40}
    )
    client.run(ROLE, MESSAGES)
    overridden, default = (r.body for r in openai_server.requests)
    assert overridden == {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0.9,
        "max_tokens": 3,
        "top_p": 0.9,
        "stop": ["###"],
        "seed": 7,
        "top_k": 40,  # not a known param: passed through as it is (extra_body)
    }
    # the override is per call: the role's own params come back on the next call
    assert default == {"model": MODEL, "messages": MESSAGES, **STD_PARAMS}


def test_role_extra_params_are_passed_through(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("vllm", params={"temperature": 0, "extra": {"top_k": 5, "repetition_penalty": 1.1}})
    client.run(ROLE, MESSAGES)
    assert openai_server.requests[0].body == {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0,
        "top_k": 5,
        "repetition_penalty": 1.1,
    }


def test_a_conversation_keeps_roles_and_order(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    assert client.run(ROLE, conversation).content == "echo: Bye"
    assert openai_server.requests[0].body["messages"] == conversation


# --- the sync API inside a running loop, concurrency, observers ---------------------------------


async def test_sync_api_inside_a_running_event_loop(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    asyncio.get_running_loop()  # this test body runs on a loop, like a Jupyter cell
    assert client.run(ROLE, MESSAGES).content == "echo: Capital of France?"
    assert "".join(client.stream(ROLE, MESSAGES)) == "echo: Capital of France? "
    assert (await client.arun(ROLE, MESSAGES)).content == "echo: Capital of France?"
    assert len(openai_server.requests) == 3


async def test_concurrent_aruns(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    """The four calls are in flight at once: no reply is sent before the server holds all four
    requests (calls that queued would never get there; no timing is asserted)."""
    import threading

    client = make_client("deepseek")
    all_in, overlapped = threading.Event(), threading.Event()
    openai_server.push(*(Reply(after=all_in) for _ in range(4)))

    def release_once_four_are_in() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not overlapped.is_set():
            if len(openai_server.requests) == 4:
                overlapped.set()
            time.sleep(0.005)
        all_in.set()  # the replies go out either way

    threading.Thread(target=release_once_four_are_in, daemon=True).start()
    answers = await asyncio.gather(
        *(client.arun(ROLE, [{"role": "user", "content": f"question {i}"}]) for i in range(4))
    )
    assert overlapped.is_set(), "the four calls were not in flight at once"
    assert [a.content for a in answers] == [f"echo: question {i}" for i in range(4)]
    assert len(openai_server.requests) == 4


def test_sync_run_from_several_threads(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = make_client("vllm", fresh=True)  # fresh: the threads race to build the SDK client
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda i: client.run(ROLE, [{"role": "user", "content": f"thread {i}"}]).content, range(8)
            )
        )
    assert answers == [f"echo: thread {i}" for i in range(8)]
    assert len(openai_server.requests) == 8


@pytest.mark.parametrize("via", VIAS)
def test_observers_hear_success_and_failure(
    via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    records: list[CallRecord] = []

    class Recorder:
        def call_finished(self, record: CallRecord) -> None:
            records.append(record)

    client.observers.add(recorder := Recorder())
    ok = call(client, via)
    openai_server.push(Reply.error(500, "boom", type_="server_error"))
    with pytest.raises(ProviderUnavailableError):
        call(client, via)

    client.observers.remove(recorder)
    good, bad = records
    assert good.response is ok and good.error is None
    assert [(a.outcome, a.usage.output_tokens) for a in good.context.attempts] == [("ok", 4)]
    assert good.context.attempts[0].latency_s > 0
    assert bad.response is None and isinstance(bad.error, ProviderUnavailableError)
    (failed,) = bad.context.attempts
    assert (failed.outcome, failed.error_type) == ("error", "ProviderUnavailableError")
    assert "boom" in (failed.error or "")


# --- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_stream_yields_deltas_in_order_and_ends_with_usage(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    pieces = ["Hel", "lo", ",", " wor", "ld"]
    openai_server.push(
        Reply(stream_chunks=stream_chunks(pieces, model="served-model", prompt_tokens=9, completion_tokens=5))
    )

    stream = client.stream(ROLE, MESSAGES)
    assert stream.response is None
    assert list(stream) == pieces

    r = stream.response
    assert r is not None
    assert (r.content, r.model, r.role, r.finish_reason) == ("Hello, world", "served-model", ROLE, "stop")
    assert (r.usage.input_tokens, r.usage.output_tokens) == (9, 5)
    assert r.latency_s > 0
    body = openai_server.requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body[max_tokens_param(kind)] == 12
    assert header(openai_server.requests[0], "authorization") == f"Bearer {KEY}"


async def test_async_stream(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openrouter")
    openai_server.push(Reply(stream_chunks=stream_chunks(["a", "b", "c"], model=MODEL, prompt_tokens=4)))
    stream = client.stream(ROLE, MESSAGES)
    deltas = [d async for d in stream]
    assert deltas == ["a", "b", "c"]
    assert stream.response is not None
    assert (stream.response.content, stream.response.usage.output_tokens) == ("abc", 3)


def test_stream_delivers_deltas_as_they_arrive(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    openai_server.push(
        Reply(
            stream_chunks=stream_chunks(["one ", "two ", "three"], model=MODEL, prompt_tokens=2),
            chunk_delay_s=0.06,
        )
    )
    started = time.perf_counter()
    arrivals = [(delta, time.perf_counter() - started) for delta in client.stream(ROLE, MESSAGES)]
    assert [d for d, _ in arrivals] == ["one ", "two ", "three"]
    # the first delta is in hand well before the last (the server sleeps 0.06 s after each chunk)
    assert arrivals[0][1] < arrivals[-1][1] - 0.1


def test_stream_logprobs(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openai")
    chunks = stream_chunks(["Yes", "!"], model=MODEL, prompt_tokens=2)
    for chunk, lp in zip(chunks[1:3], (-0.5, -1.25), strict=True):
        chunk["choices"][0]["logprobs"] = {
            "content": [{"token": "t", "logprob": lp, "bytes": None, "top_logprobs": []}]
        }
    openai_server.push(Reply(stream_chunks=chunks))
    stream = client.stream(ROLE, MESSAGES, params_override={"logprobs": True})
    assert stream.text() == "Yes!"
    assert stream.response is not None and stream.response.logprobs == [-0.5, -1.25]
    assert openai_server.requests[0].body["logprobs"] is True


def test_stream_without_usage_chunk(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    """A server that ignores stream_options sends no usage: the text still arrives, usage is zero."""
    client = make_client("lmstudio")
    chunks = stream_chunks(["x", "y"], model=MODEL, prompt_tokens=3)[:-1]  # drop the usage chunk
    openai_server.push(Reply(stream_chunks=chunks))
    stream = client.stream(ROLE, MESSAGES)
    assert stream.text() == "xy"
    assert stream.response is not None
    assert (stream.response.usage.input_tokens, stream.response.usage.output_tokens) == (0, 0)
    assert stream.response.finish_reason == "stop"


def test_error_event_inside_a_stream(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    """OpenRouter-style: HTTP 200, some text, then ``{"error": {"code": 502, ...}}`` in the stream."""
    client = make_client("openrouter")
    chunks: list[Any] = stream_chunks(["partial "], model=MODEL, prompt_tokens=2)[:2]
    chunks.append({"error": {"message": "upstream provider went away", "code": 502}})
    openai_server.push(Reply(stream_chunks=chunks))
    got: list[str] = []
    with pytest.raises(ProviderUnavailableError) as info:
        got.extend(client.stream(ROLE, MESSAGES))
    assert got == ["partial "]
    assert info.value.status_code == 502 and info.value.retryable
    assert "upstream provider went away" in str(info.value)

    openai_server.push(
        Reply(stream_chunks=[{"error": {"message": "content policy", "type": "invalid_request"}}])
    )
    with pytest.raises(ProviderError) as info2:
        client.stream(ROLE, MESSAGES).text()
    assert type(info2.value) is ProviderError
    assert "content policy" in str(info2.value)


# --- errors -------------------------------------------------------------------------------------

# every kind through run(), and the openai kind through every path (run uses the sync SDK client,
# arun and stream the async one)
KIND_VIA = [(k, "run") for k in ALL_KINDS] + [("openai", "arun"), ("openai", "stream"), ("qwen", "arun")]


@pytest.mark.parametrize(("kind", "via"), KIND_VIA)
def test_401_is_an_authentication_error(
    kind: str, via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    openai_server.push(
        Reply.error(401, "Incorrect API key provided", type_="invalid_request_error", code="invalid_api_key")
    )
    with pytest.raises(AuthenticationError) as info:
        call(client, via)
    err = info.value
    assert (err.provider, err.model, err.status_code, err.retryable) == ("remote", MODEL, 401, False)
    assert "Incorrect API key provided" in str(err)
    assert str(err).startswith(f"remote:{MODEL} [HTTP 401]")
    assert isinstance(err.__cause__, ScrubbedCause)  # the SDK's exception holds the key: summarised
    assert err.__cause__.type_name == "openai.AuthenticationError" and err.__cause__.status_code == 401
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(("kind", "via"), KIND_VIA)
def test_429_is_a_rate_limit_error_with_retry_after(
    kind: str, via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    openai_server.push(Reply.error(429, "Rate limit reached", type_="requests", headers={"retry-after": "7"}))
    with pytest.raises(RateLimitError) as info:
        call(client, via)
    err = info.value
    assert (err.status_code, err.retry_after, err.retryable) == (429, 7.0, True)
    assert isinstance(err, orchlab.RateLimitError)
    assert len(openai_server.requests) == 1  # max_retries defaults to 0: the SDK did not retry


def test_429_retry_after_ms_wins_and_http_dates_work(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    openai_server.push(Reply.error(429, "slow down", headers={"retry-after-ms": "1500", "retry-after": "9"}))
    with pytest.raises(RateLimitError) as info:
        client.run(ROLE, MESSAGES)
    assert info.value.retry_after == 1.5

    openai_server.push(
        Reply.error(429, "slow down", headers={"retry-after": formatdate(time.time() + 30, usegmt=True)})
    )
    with pytest.raises(RateLimitError) as info:
        asyncio.run(client.arun(ROLE, MESSAGES))
    assert info.value.retry_after is not None and 27 <= info.value.retry_after <= 31

    openai_server.push(Reply.error(429, "quota exceeded", type_="insufficient_quota"))
    with pytest.raises(RateLimitError) as info:
        client.run(ROLE, MESSAGES)
    assert info.value.retry_after is None


@pytest.mark.parametrize(("kind", "via"), KIND_VIA)
def test_500_is_unavailable_and_not_retried_silently(
    kind: str, via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(kind)
    openai_server.push(Reply.error(500, "The server had an error", type_="server_error"))
    with pytest.raises(ProviderUnavailableError) as info:
        call(client, via)
    assert (info.value.status_code, info.value.retryable) == (500, True)
    assert isinstance(info.value.__cause__, ScrubbedCause)
    assert info.value.__cause__.type_name == "openai.InternalServerError"
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("status", [502, 503, 529])
def test_other_5xx_are_unavailable(
    status: int, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    openai_server.push(Reply.error(status, "overloaded"))
    with pytest.raises(ProviderUnavailableError) as info:
        client.run(ROLE, MESSAGES)
    assert info.value.status_code == status


@pytest.mark.parametrize("via", VIAS)
def test_context_length_exceeded(via: str, make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openai")
    openai_server.push(
        Reply.error(
            400,
            "This model's maximum context length is 128000 tokens. However, your messages resulted in "
            "130512 tokens. Please reduce the length of the messages.",
            type_="invalid_request_error",
            code="context_length_exceeded",
        )
    )
    with pytest.raises(ContextLengthExceededError) as info:
        call(client, via)
    assert (info.value.status_code, info.value.retryable) == (400, False)
    assert "130512 tokens" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "status", "message", "code", "type_"),
    [
        pytest.param(
            "vllm",
            400,
            "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
            None,
            "BadRequestError",
            id="vllm",
        ),
        pytest.param(
            "llamacpp_server",
            400,
            "the request exceeds the available context size, try increasing it",
            None,
            "exceed_context_size_error",
            id="llama-server",
        ),
        pytest.param(
            "llamacpp_server",
            400,
            "Requested tokens (1500) exceed context window of 1024",
            None,
            "invalid_request_error",
            id="llama-cpp-python",
        ),
        pytest.param(
            "openai",
            400,
            "Invalid request.",
            "context_length_exceeded",
            "invalid_request_error",
            id="by-code",
        ),
        pytest.param("openrouter", 413, "Payload too large: prompt is too long", None, "error", id="413"),
    ],
)
def test_context_length_wordings_of_compatible_servers(
    kind: str,
    status: int,
    message: str,
    code: str | None,
    type_: str,
    make_client: MakeClient,
    openai_server: OpenAIWireServer,
) -> None:
    client = make_client(kind)
    openai_server.push(Reply.error(status, message, type_=type_, code=code))
    with pytest.raises(ContextLengthExceededError) as info:
        client.run(ROLE, MESSAGES)
    assert info.value.status_code == status and message in str(info.value)


@pytest.mark.parametrize(
    ("status", "message"), [(400, "Unrecognized request argument: foo"), (404, "model not found")]
)
def test_other_4xx_are_plain_provider_errors(
    status: int, message: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("vllm")
    openai_server.push(Reply.error(status, message, type_="invalid_request_error"))
    with pytest.raises(ProviderError) as info:
        client.run(ROLE, MESSAGES)
    assert type(info.value) is ProviderError
    assert (info.value.status_code, info.value.retryable) == (status, False)
    assert message in str(info.value)


def test_403_is_an_authentication_error(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openrouter")
    openai_server.push(Reply.error(403, "Country, region, or territory not supported"))
    with pytest.raises(AuthenticationError) as info:
        asyncio.run(client.arun(ROLE, MESSAGES))
    assert info.value.status_code == 403


@pytest.mark.parametrize("via", ["run", "arun"])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>502 Bad Gateway</html>", id="not-json"),
        pytest.param({"id": "x", "object": "chat.completion", "model": MODEL}, id="no-choices"),
        pytest.param({"id": "x", "object": "chat.completion", "choices": []}, id="empty-choices"),
        pytest.param(
            {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": 42}}]},
            id="bad-content",
        ),
    ],
)
def test_malformed_body_is_a_response_error(
    body: Any, via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    openai_server.push(Reply(status=200, body=body))
    with pytest.raises(ProviderResponseError) as info:
        call(client, via)
    assert info.value.provider == "remote" and not info.value.retryable
    assert openai_server.base_url in str(info.value) or "content" in str(info.value)


def test_malformed_stream_chunk_is_a_response_error(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai")
    openai_server.push(Reply(stream_chunks=[b"{not json"]))
    with pytest.raises(ProviderResponseError):
        client.stream(ROLE, MESSAGES).text()


@pytest.mark.parametrize("via", VIAS)
def test_timeout_from_the_provider_setting(
    via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("deepseek", provider={"timeout_s": 0.15})
    openai_server.push(Reply(delay_s=1.0))
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as info:
        call(client, via)
    assert time.perf_counter() - started < 0.9
    assert info.value.retryable and info.value.status_code is None
    assert "0.15s" in str(info.value) and openai_server.base_url in str(info.value)
    assert len(openai_server.requests) == 1


def test_timeout_from_the_call_params(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openai")
    openai_server.push(Reply(delay_s=1.0))
    with pytest.raises(ProviderTimeoutError) as info:
        client.run(ROLE, MESSAGES, params_override={"timeout_s": 0.15})
    assert "0.15s" in str(info.value)
    assert header(openai_server.requests[0], "x-stainless-read-timeout") == "0.15"


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("kind", ["openai", "llamacpp_server"])
def test_connection_refused(kind: str, via: str, make_client: MakeClient) -> None:
    port = closed_port()
    client = make_client(kind, api_base=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ProviderConnectionError) as info:
        call(client, via)
    assert info.value.retryable and info.value.provider == "remote"
    assert f"127.0.0.1:{port}" in str(info.value)


def test_max_retries_is_passed_to_the_sdk(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openai", provider={"max_retries": 1})
    openai_server.push(Reply.error(500, "blip", headers={"retry-after-ms": "1"}))
    assert client.run(ROLE, MESSAGES).content == "echo: Capital of France?"
    assert [header(r, "x-stainless-retry-count") for r in openai_server.requests] == ["0", "1"]


# --- models and availability -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_list_models_and_is_available(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    provider = make_client(kind).provider("remote")
    assert provider.list_models_sync() == [
        DiscoveredModel(id="loopback-model", provider="remote", details={"owned_by": "orchlab-tests"})
    ]
    assert provider.is_available_sync() is True
    rec = openai_server.requests[0]
    assert (rec.method, rec.path) == ("GET", "/v1/models")
    assert header(rec, "authorization") == f"Bearer {KEY}"


def test_list_models_errors_and_unavailability(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    provider = make_client("openai").provider("remote")
    openai_server.push(Reply.error(401, "bad key"))
    with pytest.raises(AuthenticationError):
        provider.list_models_sync()
    openai_server.push(Reply.error(503, "down"))
    assert provider.is_available_sync() is False

    closed = make_client("vllm", api_base=f"http://127.0.0.1:{closed_port()}/v1").provider("remote")
    assert closed.is_available_sync() is False
    with pytest.raises(ProviderConnectionError):
        closed.list_models_sync()


async def test_list_models_async(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    openai_server.push(
        Reply(
            body={
                "object": "list",
                "data": [
                    {"id": "deepseek-chat", "object": "model", "created": 0, "owned_by": "deepseek"},
                    {"id": "deepseek-reasoner", "object": "model", "created": 0, "owned_by": "deepseek"},
                ],
            }
        )
    )
    client = make_client("deepseek")
    from orchlab.loop import run_async

    models = await run_async(client.provider("remote").list_models())
    assert [m.id for m in models] == ["deepseek-chat", "deepseek-reasoner"]


# --- configuration: base URLs, keys ----------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_default_base_urls(kind: str, make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client(kind, api_base=_OMIT)
    assert client.resolve(ROLE).api_base == DEFAULT_BASES[kind]
    provider = client.provider("remote")
    assert provider.api_base == DEFAULT_BASES[kind]
    # what the SDK clients will call (nothing is sent here)
    assert str(provider.sync_client.base_url).rstrip("/") == DEFAULT_BASES[kind]  # type: ignore[attr-defined]
    if kind == "openai":
        assert str(provider.client.base_url).rstrip("/") == DEFAULT_BASES[kind]  # type: ignore[attr-defined]
    assert openai_server.requests == []


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_which_kinds_need_a_key(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR)
    if kind in KEYLESS_KINDS:
        client = make_client(kind, auth=False, fresh=True)
        assert client.run(ROLE, MESSAGES).content == "echo: Capital of France?"
        assert header(openai_server.requests[0], "authorization") != f"Bearer {KEY}"
    else:
        client = make_client(kind, fresh=True)
        with pytest.raises(AuthError) as info:
            client.run(ROLE, MESSAGES)
        assert info.value.env_var == ENV_VAR
        assert ENV_VAR in str(info.value)
        assert openai_server.requests == []


@pytest.mark.parametrize("kind", KEYLESS_KINDS)
def test_keyless_kinds_send_a_key_when_a_profile_is_set(
    kind: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    """vLLM started with --api-key, LM Studio behind a proxy: an auth_profile still works."""
    make_client(kind).run(ROLE, MESSAGES)
    assert header(openai_server.requests[0], "authorization") == f"Bearer {KEY}"


def test_key_file_is_used_when_the_env_var_is_absent(
    make_client: MakeClient, openai_server: OpenAIWireServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV_VAR)
    (tmp_path / "deepseek.key").write_text("sk-from-file-123\n", encoding="utf-8")
    key_file = tmp_path / "deepseek.key"
    make_client("deepseek", provider={"key_file": str(key_file)}, fresh=True).run(ROLE, MESSAGES)
    assert header(openai_server.requests[0], "authorization") == "Bearer sk-from-file-123"


def _assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


def test_the_key_never_shows(make_client: MakeClient, openai_server: OpenAIWireServer) -> None:
    client = make_client("openai")
    resolved = client.resolve(ROLE)
    provider = client.provider("remote")
    _assert_no_key(str(resolved), repr(resolved), str(provider), repr(provider), repr(client))
    assert resolved.api_key is not None and resolved.api_key.reveal() == KEY

    # a server that echoes the key back in its error message (some compatible servers do)
    for status in (401, 400, 500):
        for via in VIAS:
            openai_server.push(Reply.error(status, f"Incorrect API key provided: {KEY}. context length"))
            with pytest.raises(ProviderError) as info:
                call(client, via)
            err = info.value
            formatted = "".join(traceback.format_exception(err))
            _assert_no_key(str(err), repr(err), formatted, *map(str, err.args))
            assert "Incorrect API key provided: **********" in str(err)


def test_the_key_never_shows_on_connection_and_timeout_errors(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client("openai", provider={"timeout_s": 0.15})
    openai_server.push(Reply(delay_s=1.0))
    with pytest.raises(ProviderTimeoutError) as timeout:
        client.run(ROLE, MESSAGES)
    refused = make_client("openai", api_base=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ProviderConnectionError) as conn:
        refused.run(ROLE, MESSAGES)
    for err in (timeout.value, conn.value):
        _assert_no_key(str(err), repr(err), "".join(traceback.format_exception(err)))


def test_provider_instances_and_sdk_clients_are_reused(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    """The sync client for good; the async one per event loop (reused within it: test_caller_loop
    checks that each loop gets its own)."""
    client = make_client("openai", fresh=True)
    provider = client.provider("remote")
    client.run(ROLE, MESSAGES)
    sdk_sync = provider.sync_client  # type: ignore[attr-defined]

    async def twice() -> bool:
        await client.arun(ROLE, MESSAGES)
        sdk_async = provider.client  # type: ignore[attr-defined]
        await client.arun(ROLE, MESSAGES)
        return provider.client is sdk_async  # type: ignore[attr-defined]

    assert asyncio.run(twice())
    client.run(ROLE, MESSAGES)
    assert client.provider("remote") is provider
    assert provider.sync_client is sdk_sync  # type: ignore[attr-defined]
    assert len(openai_server.requests) == 4


def test_sdk_is_imported_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, orchlab\n"
        "from orchlab.providers import openai as adapter\n"
        "print('openai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("via", ["run", "arun"])
def test_a_well_formed_answer_is_a_typed_chat_completion(
    via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall

    client = make_client("openai")
    body = {
        "id": "chatcmpl-typed",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "service": "x"},
    }
    openai_server.push(Reply(status=200, body=body))
    r = call(client, via)
    assert type(r.raw) is ChatCompletion
    assert type(r.raw.choices[0].message.tool_calls[0]) is ChatCompletionMessageFunctionToolCall
    assert r.raw.usage.model_extra == {"service": "x"}
    assert r.raw.model_dump(exclude_unset=True) == body
    assert [(c.id, c.name, c.arguments) for c in r.tool_calls] == [("call_1", "f", {})]


@pytest.mark.parametrize("via", ["run", "arun"])
def test_an_answer_the_sdk_types_refuse_is_read_leniently_as_before(
    via: str, make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    """A compatible server's off-spec answer (no ``object``, a finish reason OpenAI does not
    define, a tool call without ``type``) still reads as it did through ``create()``."""
    client = make_client("vllm")
    body = {
        "id": "cmpl-odd",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "calling",
                    "tool_calls": [{"id": "call_9", "function": {"name": "g", "arguments": '{"a": 1}'}}],
                },
                "finish_reason": "eos",
            }
        ],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "total_tokens": 10,
            "prompt_cache_hit_tokens": 4,  # DeepSeek's name for cached prompt tokens
        },
    }
    openai_server.push(Reply(status=200, body=body))
    r = call(client, via)
    assert (r.content, r.finish_reason, r.raw.id) == ("calling", "eos", "cmpl-odd")
    assert [(c.id, c.name, c.arguments) for c in r.tool_calls] == [("call_9", "g", {"a": 1})]
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cache_read_tokens) == (7, 3, 4)
