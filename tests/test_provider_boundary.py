"""The provider boundary, the same for every adapter: deadlines that hold, SDK exceptions translated
by behaviour, no empty success, no hidden tool call (it is returned), no key reachable from an error.

Each test runs every cloud adapter (OpenAI, Anthropic, Gemini, Ollama) through its real SDK
against its loopback wire server, called the way a user calls it (`client.run`, `client.stream`),
with the server's fault modes (tests/servers/loopback.py): a trickle of one byte at a time, a stall,
a reset connection, bodies that are no stream at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchlab.errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ScrubbedCause,
    UnsupportedCapabilityError,
)
from orchlab.orchestrator import Orchestrator
from orchlab.providers.translate import translate
from tests.secret_walk import reachable_strings
from tests.servers import anthropic_wire, gemini_wire, ollama_wire, openai_wire
from tests.servers.loopback import LoopbackServer, Reply, closed_port

KEY = "sk-canary-boundary-5f1e2d9a"
ENV_VAR = "ORCH_AUTH_CANARY_API_KEY"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
TEXT = "It is sunny in Paris today, with a light breeze from the west and about twenty degrees."
TOOL = "get_weather"


@dataclass(frozen=True)
class Kit:
    """How to speak to one adapter's wire server."""

    kind: str
    server: type[LoopbackServer]
    model: str
    content_type: str
    base: Callable[[Any], str]
    answer: Callable[[str, str], Any]
    """``(text, model)`` -> the JSON body of a non-streamed answer."""
    frames: Callable[[list[str], str], list[bytes]]
    """``(pieces, model)`` -> the frames of a streamed answer."""
    tool_answer: Callable[[str, str], Any]
    tool_frames: Callable[[str, str], list[bytes]]
    error: Callable[[int, str, dict[str, str]], Reply]
    """``(status, message, headers)`` -> an HTTP error reply in the provider's error body."""

    def stream(self, frames: list[bytes], **kwargs: Any) -> Reply:
        return Reply(stream=frames, content_type=self.content_type, **kwargs)


def _openai_frames(pieces: list[str], model: str) -> list[bytes]:
    return openai_wire.sse_frames(openai_wire.stream_chunks(pieces, model=model, prompt_tokens=3))


def _gemini_tool_frames(name: str, model: str) -> list[bytes]:
    return [gemini_wire.sse(gemini_wire.function_call_body(name, model=model))]


def _ollama_frames(pieces: list[str], model: str) -> list[bytes]:
    return ollama_wire.stream_lines(pieces, model=model, prompt_eval_count=3, eval_count=len(pieces))


def _ollama_tool_frames(name: str, model: str) -> list[bytes]:
    body = ollama_wire.tool_call_body(name, model=model)
    first = {**body, "done": False}
    last = ollama_wire.chat_body("", model=model, prompt_eval_count=9, eval_count=7)
    return [ollama_wire.ndjson(first), ollama_wire.ndjson(last)]


KITS = {
    "openai": Kit(
        kind="openai",
        server=openai_wire.OpenAIWireServer,
        model="gpt-4.1-mini",
        content_type="text/event-stream",
        base=lambda s: s.base_url,
        answer=lambda text, model: openai_wire.completion_body(
            text, model=model, prompt_tokens=3, completion_tokens=len(text.split())
        ),
        frames=_openai_frames,
        tool_answer=lambda name, model: openai_wire.tool_call_body(name, model=model),
        tool_frames=lambda name, model: openai_wire.sse_frames(
            openai_wire.tool_call_chunks(name, model=model)
        ),
        error=lambda status, message, headers: Reply(
            status=status,
            body={"error": {"message": message, "type": "invalid_request_error", "code": None}},
            headers=headers,
        ),
    ),
    "anthropic": Kit(
        kind="anthropic",
        server=anthropic_wire.AnthropicWireServer,
        model="claude-loopback-1",
        content_type="text/event-stream",
        base=lambda s: s.url,
        answer=lambda text, model: anthropic_wire.message_body(
            text, model=model, input_tokens=3, output_tokens=len(text.split())
        ),
        frames=lambda pieces, model: anthropic_wire.stream_events(
            pieces, model=model, input_tokens=3, output_tokens=len(pieces)
        ),
        tool_answer=lambda name, model: anthropic_wire.tool_use_body(name, model=model),
        tool_frames=lambda name, model: anthropic_wire.tool_use_events(name, model=model),
        error=lambda status, message, headers: anthropic_wire.anthropic_error(
            status, message=message, headers=headers
        ),
    ),
    "gemini": Kit(
        kind="gemini",
        server=gemini_wire.GeminiWireServer,
        model="gemini-loopback",
        content_type="text/event-stream",
        base=lambda s: s.url,
        answer=lambda text, model: gemini_wire.response_body(
            text, model=model, usage=gemini_wire.usage_metadata(3, len(text.split()))
        ),
        frames=lambda pieces, model: gemini_wire.stream_frames(
            pieces, model=model, prompt=3, candidates=len(pieces)
        ),
        tool_answer=lambda name, model: gemini_wire.function_call_body(name, model=model),
        tool_frames=_gemini_tool_frames,
        error=lambda status, message, headers: gemini_wire.gemini_error(
            status, "UNAUTHENTICATED" if status == 401 else "INTERNAL", message, headers=headers
        ),
    ),
    "ollama": Kit(
        kind="ollama",
        server=ollama_wire.OllamaWireServer,
        model="llama3.1:8b",
        content_type="application/x-ndjson",
        base=lambda s: s.url,
        answer=lambda text, model: ollama_wire.chat_body(
            text, model=model, prompt_eval_count=3, eval_count=len(text.split())
        ),
        frames=_ollama_frames,
        tool_answer=lambda name, model: ollama_wire.tool_call_body(name, model=model),
        tool_frames=_ollama_tool_frames,
        error=lambda status, message, headers: ollama_wire.ollama_error(status, message, headers=headers),
    ),
}
KINDS = list(KITS)


@pytest.fixture(params=KINDS)
def kit(request: pytest.FixtureRequest) -> Kit:
    return KITS[str(request.param)]


@pytest.fixture
def server(kit: Kit) -> Iterator[Any]:
    with kit.server() as srv:
        yield srv


MakeClient = Callable[..., Orchestrator]


@pytest.fixture
def make_client(
    kit: Kit, server: Any, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> MakeClient:
    """A client whose role ``r`` is bound to ``kit``'s adapter on ``server`` (the key: ``KEY``).

    Every adapter sends the key (Ollama as a bearer token, as behind an authenticating proxy)."""
    monkeypatch.setenv(ENV_VAR, KEY)

    def make(api_base: str | None = None, **provider: Any) -> Orchestrator:
        entry = {"type": kit.kind, "api_base": api_base or kit.base(server), "auth_profile": "canary"}
        entry.update(provider)
        fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items())
        return client_for(
            f"""\
            project: boundary
            providers:
              remote: {{{fields}}}
            roles:
              r: {{provider: remote, model: "{kit.model}"}}
            """
        )

    return make


def stream_text(client: Orchestrator, deltas: list[str] | None = None) -> str:
    got = deltas if deltas is not None else []
    for delta in client.stream("r", MESSAGES):
        got.append(delta)
    return "".join(got)


def assert_no_key(error: BaseException) -> None:
    leaks = [s for s in reachable_strings(error) if KEY in s]
    assert leaks == []


def warm_up(client: Orchestrator, kit: Kit, server: Any) -> None:
    """One answered call first: the SDK's import and client set-up (seconds on a loaded machine)
    stay out of the timed call."""
    server.push(Reply(body=kit.answer("Sunny.", kit.model)))
    assert client.run("r", MESSAGES, {"timeout_s": 60}).content == "Sunny."


def trickled_s(body: Any) -> float:
    """How long the whole body takes at one byte per 50 ms."""
    return len(body if isinstance(body, bytes | str) else json.dumps(body)) * 0.05


# --- item 7: timeout_s is a deadline --------------------------------------------------------------


def test_a_trickled_answer_is_cut_at_the_deadline(kit: Kit, server: Any, make_client: MakeClient) -> None:
    """One byte every 50 ms keeps every read short: only a deadline on the whole attempt ends it
    (the body would take ~10 s)."""
    client = make_client(timeout_s=0.5)
    warm_up(client, kit, server)
    body = kit.answer(TEXT * 2, kit.model)
    server.push(Reply(body=body, trickle_s=0.05))
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as info:
        client.run("r", MESSAGES)
    elapsed = time.perf_counter() - started
    err = info.value
    assert (err.provider, err.model, err.limit_s, err.retryable) == ("remote", kit.model, 0.5, True)
    assert "0.5s (timeout_s)" in str(err)
    assert elapsed < trickled_s(body) / 2  # cut by the deadline, not by the end of the body
    assert_no_key(err)


def test_the_async_path_has_the_same_deadline(kit: Kit, server: Any, make_client: MakeClient) -> None:
    client = make_client()
    warm_up(client, kit, server)
    body = kit.answer(TEXT * 2, kit.model)
    server.push(Reply(body=body, trickle_s=0.05))
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as info:
        asyncio.run(client.arun("r", MESSAGES, {"timeout_s": 0.4}))
    assert info.value.limit_s == 0.4 and time.perf_counter() - started < trickled_s(body) / 2


@pytest.mark.parametrize("call", ["run", "arun", "stream"])
def test_a_first_calls_deadline_starts_after_the_sdk_is_imported(call: str, tmp_path: Path) -> None:
    """A fresh process: importing the openai SDK and building its client (~0.3 s here, seconds on
    a loaded machine) comes before the 0.2 s deadline, which bounds the server's answer only. The
    first call takes longer than the deadline in all (asserted), so a deadline that covered the
    set-up would have cut it."""
    openai_server = openai_wire.OpenAIWireServer(nodelay=True).start()
    config = tmp_path / "llm_orchestrator.yaml"
    config.write_text(
        f"project: p\nproviders:\n  remote: {{type: openai, api_base: '{openai_server.base_url}', "
        "auth_profile: canary, timeout_s: 0.2}\nroles:\n  r: {provider: remote, model: m}\n",
        encoding="utf-8",
    )
    code = {
        "run": "print(client.run('r', MESSAGES).content)",
        "arun": "import asyncio; print(asyncio.run(client.arun('r', MESSAGES)).content)",
        "stream": "print(''.join(client.stream('r', MESSAGES)))",
    }[call]
    script = (
        "import sys, time, orchlab\n"
        "assert 'openai' not in sys.modules\n"
        f"client = orchlab.get_llm_client({str(config)!r})\n"
        "MESSAGES = [{'role': 'user', 'content': 'hi'}]\n"
        "started = time.perf_counter()\n"
        f"{code}\n"
        "print(f'{time.perf_counter() - started:.3f}')\n"
    )
    env = {**os.environ, ENV_VAR: KEY, "ORCH_TRACKING": "0", "ORCH_CACHE": "off"}
    try:
        argv = [sys.executable, "-c", script]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    finally:
        openai_server.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    answer, took = out.stdout.split()[:-1], float(out.stdout.split()[-1])
    assert " ".join(answer) == "echo: hi"
    assert took > 0.2  # the SDK's set-up took longer than the deadline: it was not inside it


def test_the_deadline_does_not_cut_an_answer_in_time(kit: Kit, server: Any, make_client: MakeClient) -> None:
    client = make_client(timeout_s=3)
    server.push(Reply(body=kit.answer("Sunny.", kit.model), delay_s=0.2))
    assert client.run("r", MESSAGES).content == "Sunny."
    assert asyncio.run(client.arun("r", MESSAGES)).content.startswith("echo:")


def test_a_stream_whose_first_event_trickles_is_cut_by_timeout_s(
    kit: Kit, server: Any, make_client: MakeClient
) -> None:
    client = make_client(timeout_s=0.5)
    warm_up(client, kit, server)
    server.push(kit.stream(kit.frames(["Sunny ", "today."], kit.model), trickle_s=0.05))
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as info:
        stream_text(client)
    assert info.value.limit_s == 0.5
    assert "no first stream event within 0.5s (timeout_s)" in str(info.value)
    assert time.perf_counter() - started < 3.0


def test_a_stream_that_goes_silent_is_cut_by_stream_idle_timeout_s(
    kit: Kit, server: Any, make_client: MakeClient
) -> None:
    """The idle limit is the provider's ``stream_idle_timeout_s``, apart from ``timeout_s``."""
    client = make_client(timeout_s=5, stream_idle_timeout_s=0.4)
    warm_up(client, kit, server)
    frames = kit.frames(["Sunny ", "today."], kit.model)
    server.push(kit.stream(frames[:1], stall_s=10))
    deltas: list[str] = []
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as info:
        stream_text(client, deltas)
    assert info.value.limit_s == 0.4
    assert "silent for 0.4s (stream_idle_timeout_s)" in str(info.value)
    assert time.perf_counter() - started < 3.0
    assert "".join(deltas) in ("", "Sunny ")


def test_a_stream_may_last_longer_than_timeout_s(kit: Kit, server: Any, make_client: MakeClient) -> None:
    """``timeout_s`` bounds the first event, not the answer: a frame every 0.3 s for 1.5-2.7 s
    passes with ``timeout_s: 1`` (an SDK whose timeout is a total would cut it)."""
    client = make_client(timeout_s=1)
    pieces = ["a ", "b ", "c ", "d ", "e"]
    server.push(kit.stream(kit.frames(pieces, kit.model), chunk_delay_s=0.3))
    assert stream_text(client) == "a b c d e"


def test_an_idle_limit_above_timeout_s_is_honoured(kit: Kit, server: Any, make_client: MakeClient) -> None:
    """A silence longer than ``timeout_s`` but within ``stream_idle_timeout_s`` is no timeout: the
    SDK's own read timeout must not cut it first."""
    client = make_client(timeout_s=1, stream_idle_timeout_s=5)
    server.push(kit.stream(kit.frames(["slow ", "thinker"], kit.model), stall_s=1.6, stall_after=1))
    assert stream_text(client) == "slow thinker"


def test_a_slow_consumer_is_not_an_idle_stream(kit: Kit, server: Any, make_client: MakeClient) -> None:
    """The idle limit counts the server's silence, not the time the caller takes between chunks."""
    client = make_client(timeout_s=5, stream_idle_timeout_s=0.3)
    server.push(kit.stream(kit.frames(["Sunny ", "and ", "warm."], kit.model)))
    got = []
    for delta in client.stream("r", MESSAGES):
        got.append(delta)
        time.sleep(0.5)
    assert "".join(got) == "Sunny and warm."


def test_a_fallback_chain_moves_on_after_one_deadline(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary trickles: the chain gives up on it at its deadline, once, and answers from the
    fallback (retrying a deadline would sit through it again)."""
    monkeypatch.setenv(ENV_VAR, KEY)
    with openai_wire.OpenAIWireServer() as slow, openai_wire.OpenAIWireServer() as fast:
        body = KITS["openai"].answer(TEXT * 2, "m")
        slow.push(Reply(body=body, trickle_s=0.05))
        client = client_for(
            f"""\
            project: boundary
            providers:
              slow: {{type: openai, api_base: "{slow.base_url}", auth_profile: canary, timeout_s: 0.5}}
              fast: {{type: openai, api_base: "{fast.base_url}", auth_profile: canary}}
            roles:
              r: {{provider: slow, model: m, fallbacks: ["fast:m"]}}
            """
        )
        started = time.perf_counter()
        response = client.run("r", MESSAGES)
        elapsed = time.perf_counter() - started
        assert response.content.startswith("echo:") and response.provider == "fast"
        assert len(slow.requests) == 1 and len(fast.requests) == 1
        assert elapsed < trickled_s(body) / 2  # one deadline, not the whole trickled body
        assert response.decision is not None
        outcomes = [(a.provider, a.outcome, a.error_type) for a in response.decision.attempts]
        assert outcomes == [("slow", "error", "ProviderTimeoutError"), ("fast", "ok", None)]


# --- item 14: SDK and transport exceptions, translated by behaviour -------------------------------


def test_a_stream_cut_by_the_server_is_a_connection_error(
    kit: Kit, server: Any, make_client: MakeClient
) -> None:
    """A TCP reset after two events (anthropic 2.x raised httpx2.ReadError untranslated)."""
    client = make_client()
    server.push(kit.stream(kit.frames(["Sunny ", "and ", "warm."], kit.model)[:2], reset=True))
    with pytest.raises(ProviderConnectionError) as info:
        stream_text(client)
    err = info.value
    assert err.retryable and (err.provider, err.model) == ("remote", kit.model)
    # the SDKs on httpx2 raise ReadError; aiohttp (Gemini) ends the stream: cut short
    assert "broke" in str(err) or "cut short" in str(err)
    assert err.__cause__ is None or isinstance(err.__cause__, ScrubbedCause)
    assert_no_key(err)


def test_an_answer_cut_by_the_server_is_a_connection_error(
    kit: Kit, server: Any, make_client: MakeClient
) -> None:
    client = make_client()
    server.push(Reply(body=kit.answer(TEXT, kit.model), reset=True))
    with pytest.raises(ProviderConnectionError) as info:
        client.run("r", MESSAGES)
    assert info.value.retryable
    assert_no_key(info.value)


def test_a_stream_that_stalls_is_a_timeout(kit: Kit, server: Any, make_client: MakeClient) -> None:
    """Headers, then nothing (anthropic 2.x raised httpx2.ReadTimeout untranslated)."""
    client = make_client(timeout_s=0.4)
    server.push(kit.stream([], stall_s=10))
    with pytest.raises(ProviderTimeoutError) as info:
        stream_text(client)
    assert info.value.retryable and info.value.provider == "remote"
    assert_no_key(info.value)


def _exc(name: str, module: str, *bases: type[BaseException], **attrs: Any) -> BaseException:
    """An exception of a class named ``module.name`` that orchlab has never seen."""
    cls = type(name, bases or (Exception,), {"__module__": module})
    exc = cls(f"{name} happened")
    for key, value in attrs.items():
        setattr(exc, key, value)
    return exc


class _Response:
    status_code = 429
    headers = {"retry-after": "4", "x-request-id": "r-1"}  # noqa: RUF012


@pytest.mark.parametrize(
    ("exc", "expected", "words"),
    [
        pytest.param(_exc("ReadError", "httpx3"), ProviderConnectionError, "broke", id="read-error"),
        pytest.param(_exc("ConnectError", "httpx3"), ProviderConnectionError, "cannot connect", id="connect"),
        pytest.param(_exc("RemoteProtocolError", "h12"), ProviderConnectionError, "broke", id="protocol"),
        pytest.param(
            _exc("ServerDisconnectedError", "aiohttp9"), ProviderConnectionError, "broke", id="disconnect"
        ),
        pytest.param(ConnectionResetError(104, "reset"), ProviderConnectionError, "broke", id="oserror"),
        pytest.param(_exc("ReadTimeout", "httpx3"), ProviderTimeoutError, "within 7s", id="read-timeout"),
        pytest.param(TimeoutError(), ProviderTimeoutError, "within 7s", id="timeout-error"),
        pytest.param(_exc("PayloadDecodeFailure", "sdk9"), ProviderResponseError, "malformed", id="decode"),
        pytest.param(ValueError("Expecting value"), ProviderResponseError, "malformed", id="value-error"),
        pytest.param(_exc("SomethingNew", "sdk9"), ProviderError, "sdk9.SomethingNew", id="unknown"),
        pytest.param(
            ExceptionGroup("many", [_exc("ReadError", "anyio9")]),
            ProviderConnectionError,
            "broke",
            id="group",
        ),
    ],
)
def test_translation_reads_behaviour_not_classes(
    exc: BaseException, expected: type[ProviderError], words: str
) -> None:
    error = translate(exc, provider="p", model="m", api_base="http://h", timeout_s=7)
    assert type(error) is expected
    assert words in str(error) and (error.provider, error.model) == ("p", "m")


def test_translation_looks_behind_an_sdk_wrapper() -> None:
    """An SDK's "connection error" wrapping a read timeout is a timeout."""
    inner = _exc("ReadTimeout", "httpx3")
    outer = _exc("APIConnectionError", "sdk9")
    outer.__cause__ = inner
    assert type(translate(outer, provider="p", model=None, api_base="x", timeout_s=2)) is ProviderTimeoutError


def test_translation_of_a_status_bearing_exception() -> None:
    exc = _exc("HTTPStatusError", "httpx3", response=_Response())
    error = translate(exc, provider="p", model="m", api_base="x", timeout_s=1)
    assert isinstance(error, RateLimitError) and (error.status_code, error.retry_after) == (429, 4.0)
    exc = _exc("ClientResponseError", "aiohttp9", status=503)
    assert (
        type(translate(exc, provider="p", model="m", api_base="x", timeout_s=1)) is ProviderUnavailableError
    )


def test_the_real_transport_libraries_translate() -> None:
    import aiohttp
    import httpx
    import httpx2

    for exc, expected in [
        (httpx2.ReadError("reset"), ProviderConnectionError),
        (httpx2.ReadTimeout("slow"), ProviderTimeoutError),
        (httpx2.RemoteProtocolError("peer closed"), ProviderConnectionError),
        (httpx.ReadError("reset"), ProviderConnectionError),
        (httpx.PoolTimeout("pool"), ProviderTimeoutError),
        (aiohttp.ServerDisconnectedError(), ProviderConnectionError),
        (aiohttp.ClientPayloadError("cut"), ProviderConnectionError),
        (aiohttp.SocketTimeoutError(), ProviderTimeoutError),
    ]:
        assert type(translate(exc, provider="p", model=None, api_base="x", timeout_s=1)) is expected, exc


# --- item 15: a stream that ends without a finish is not a success ------------------------------

NOT_A_STREAM = {
    "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "not-sse-json": (b'{"id": "x", "choices": []}', "application/json"),
    "invalid-json": (b"{not json at all", "text/event-stream"),
    "empty": (b"", "text/event-stream"),
    "keep-alive-only": (b": keep-alive\n\n: keep-alive\n\n\n\n", "text/event-stream"),
}


@pytest.mark.parametrize("body", list(NOT_A_STREAM))
def test_a_200_that_is_no_stream_is_a_response_error(
    kit: Kit, server: Any, make_client: MakeClient, body: str
) -> None:
    data, content_type = NOT_A_STREAM[body]
    client = make_client()
    server.push(Reply(stream=[data] if data else [], content_type=content_type))
    with pytest.raises(ProviderResponseError) as info:
        stream_text(client)
    assert info.value.provider == "remote" and not info.value.retryable
    assert_no_key(info.value)


@pytest.mark.parametrize("kind", ["vllm", "lmstudio", "llamacpp_server"])
@pytest.mark.parametrize("body", list(NOT_A_STREAM))
def test_openai_compatible_streams_are_checked_too(
    kind: str, body: str, client_for: Callable[..., Orchestrator]
) -> None:
    data, content_type = NOT_A_STREAM[body]
    with openai_wire.OpenAIWireServer() as srv:
        srv.push(Reply(stream=[data] if data else [], content_type=content_type))
        client = client_for(
            f"""\
            project: boundary
            providers:
              local: {{type: {kind}, api_base: "{srv.base_url}"}}
            roles:
              r: {{provider: local, model: m}}
            """
        )
        with pytest.raises(ProviderResponseError, match=r"ended without a finish reason|malformed"):
            client.stream("r", MESSAGES).text()


def test_a_stream_cut_short_after_some_text_is_not_a_success(
    kit: Kit, server: Any, make_client: MakeClient
) -> None:
    """The server closes the stream cleanly half way: the text so far is not the answer, and
    trying again (or elsewhere) makes sense."""
    client = make_client()
    frames = kit.frames(["Sunny ", "and ", "warm."], kit.model)
    server.push(kit.stream(frames[: len(frames) // 2 + 1]))
    deltas: list[str] = []
    with pytest.raises(ProviderConnectionError, match="ended without a finish reason after") as info:
        stream_text(client, deltas)
    assert deltas and "".join(deltas) in "Sunny and warm."
    assert info.value.retryable


# --- item 18: a tool call is not an empty answer (issue 17: it is returned as a ToolCall) -----------


def test_a_tool_call_answer_is_returned_not_hidden(kit: Kit, server: Any, make_client: MakeClient) -> None:
    client = make_client()
    server.push(Reply(body=kit.tool_answer(TOOL, kit.model)))
    response = client.run("r", MESSAGES)
    assert [(c.name, dict(c.arguments)) for c in response.tool_calls] == [(TOOL, {"city": "Paris"})]
    assert response.content == "" and response.tool_calls[0].id


def test_a_streamed_tool_call_is_returned_not_hidden(kit: Kit, server: Any, make_client: MakeClient) -> None:
    client = make_client()
    server.push(kit.stream(kit.tool_frames(TOOL, kit.model)))
    stream = client.stream("r", MESSAGES)
    assert stream.text() == ""
    assert stream.response is not None
    assert [(c.name, dict(c.arguments)) for c in stream.response.tool_calls] == [(TOOL, {"city": "Paris"})]


def test_a_call_to_a_custom_tool_is_refused_with_the_tool_named(
    client_for: Callable[..., Orchestrator],
) -> None:
    """OpenAI's custom (free-text) tools have no function arguments to map: refused, named."""
    body = openai_wire.tool_call_body(TOOL, model="m")
    custom = {"id": "call_2", "type": "custom", "custom": {"name": "grammar_tool", "input": "x"}}
    body["choices"][0]["message"]["tool_calls"].append(custom)
    with openai_wire.OpenAIWireServer() as srv:
        srv.push(Reply(body=body))
        client = client_for(
            f"""\
            project: boundary
            providers:
              local: {{type: vllm, api_base: "{srv.base_url}"}}
            roles:
              r: {{provider: local, model: m}}
            """
        )
        with pytest.raises(
            UnsupportedCapabilityError, match=r"tool\(s\) grammar_tool, which are not function"
        ):
            client.run("r", MESSAGES)


# --- item 19: no key reachable from an error -------------------------------------------------------


def test_an_echoed_key_is_reachable_nowhere(kit: Kit, server: Any, make_client: MakeClient) -> None:
    """The server echoes the key in its message and in a header; the SDK's exception (whose request
    headers hold the key) is replaced by a masked summary."""
    client = make_client()
    for via in ("run", "stream"):
        server.push(kit.error(401, f"invalid key {KEY}", {"x-echo-key": KEY, "x-request-id": "req-7"}))
        with pytest.raises(AuthenticationError) as info:
            if via == "run":
                client.run("r", MESSAGES)
            else:
                stream_text(client)
        err = info.value
        assert_no_key(err)
        assert "**********" in str(err) and err.__context__ is None
        cause = err.__cause__
        assert isinstance(cause, ScrubbedCause) and cause.status_code == 401
        assert "invalid key **********" in f"{cause} {cause.body}"
        assert cause.origin and "Traceback" not in cause.origin
        if kit.kind != "ollama":  # the ollama SDK keeps neither the response nor its headers
            assert cause.headers["x-request-id"] == "req-7" and cause.headers["x-echo-key"] == "**********"
            assert "authorization" not in {k.lower() for k in cause.headers}


def test_no_key_in_a_strategy_error_group(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every candidate fails (one echoes the key, one stalls, one resets): the group holds no key."""
    monkeypatch.setenv(ENV_VAR, KEY)
    with (
        openai_wire.OpenAIWireServer() as one,
        anthropic_wire.AnthropicWireServer() as two,
        ollama_wire.OllamaWireServer() as three,
    ):
        one.push(KITS["openai"].error(401, f"bad key {KEY}", {"x-echo": KEY}))
        two.push(Reply(body=KITS["anthropic"].answer(TEXT, "c"), stall_s=10))
        cut = Reply(body=KITS["ollama"].answer(TEXT, "llama3.1:8b"), reset=True)
        three.push(cut, cut)  # a connection error is retried once
        client = client_for(
            f"""\
            project: boundary
            providers:
              one: {{type: openai, api_base: "{one.base_url}", auth_profile: canary}}
              two: {{type: anthropic, api_base: "{two.url}", auth_profile: canary, timeout_s: 0.3}}
              three: {{type: ollama, api_base: "{three.url}", auth_profile: canary}}
            roles:
              r: {{provider: one, model: m, fallbacks: ["two:c", "three:llama3.1:8b"]}}
            """
        )
        with pytest.raises(ExceptionGroup) as info:
            client.run("r", MESSAGES)
    kinds = [type(e) for e in info.value.exceptions]
    assert kinds == [
        AuthenticationError,
        ProviderTimeoutError,
        ProviderConnectionError,
        ProviderConnectionError,
    ]
    assert_no_key(info.value)


def test_no_key_behind_connection_errors_and_timeouts(kit: Kit, server: Any, make_client: MakeClient) -> None:
    refused = make_client(api_base=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProviderConnectionError) as conn:
        refused.run("r", MESSAGES)
    slow = make_client(timeout_s=0.3)
    server.push(Reply(body=kit.answer(TEXT, kit.model), delay_s=1.0))
    with pytest.raises(ProviderTimeoutError) as timeout:
        slow.run("r", MESSAGES)
    for err in (conn.value, timeout.value):
        assert_no_key(err)
        assert err.__context__ is None


def test_the_walk_finds_a_key_in_request_headers() -> None:
    """The helper itself: a key in an exception's request headers (where the SDKs keep it) is found."""
    import httpx2

    request = httpx2.Request("POST", "http://h/v1", headers={"Authorization": f"Bearer {KEY}"})
    outer = RuntimeError("wrapped")
    outer.__context__ = httpx2.ReadError("reset", request=request)
    assert any(KEY in s for s in reachable_strings(outer))
    cyclic: list[Any] = ["x"]
    cyclic.append(cyclic)
    assert list(reachable_strings(cyclic)) == ["x"]


def test_an_adapter_error_without_the_key_keeps_its_summary(
    kit: Kit, server: Any, make_client: MakeClient
) -> None:
    server.push(kit.error(500, "the backend fell over", {"x-request-id": "req-9"}))
    with pytest.raises(ProviderError) as info:
        make_client().run("r", MESSAGES)
    cause = info.value.__cause__
    assert isinstance(cause, ScrubbedCause) and cause.status_code == 500
    assert "the backend fell over" in f"{cause} {cause.body}"
    assert cause.type_name.split(".")[0] in {"openai", "anthropic", "google", "ollama"}


def test_boundary_wraps_every_adapter() -> None:
    from orchlab.providers.registry import BUILTIN_KINDS, provider_class

    for kind in BUILTIN_KINDS:
        cls = provider_class(kind)
        for name in ("complete", "list_models"):
            assert getattr(getattr(cls, name), "__orchlab_boundary__", False), (kind, name)
