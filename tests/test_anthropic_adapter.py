"""The Anthropic adapter, through the official SDK, against a loopback Messages API server."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchlab.errors import (
    AuthenticationError,
    ConfigValidationError,
    ContextLengthExceededError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ScrubbedCause,
    UnsupportedCapabilityError,
)
from orchlab.providers.anthropic import AnthropicProvider
from tests.secret_walk import reachable_strings
from tests.servers.anthropic_wire import (
    AnthropicWireServer,
    anthropic_error,
    error_body,
    message_body,
    models_body,
    sse,
    stream_events,
    stream_reply,
)
from tests.servers.loopback import Reply, closed_port
from tests.support import model_request

KEY = "sk-ant-loopback-SECRET-7f3a"
MODEL = "claude-loopback-1"

MakeProvider = Callable[..., AnthropicProvider]


@pytest.fixture
def server() -> Iterator[AnthropicWireServer]:
    with AnthropicWireServer() as s:
        yield s


@pytest.fixture
def make_provider(
    server: AnthropicWireServer,
    provider_for: Callable[..., AnthropicProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> MakeProvider:
    """An adapter built from a YAML entry, its key read from ``ORCH_AUTH_CLAUDE_MAIN_API_KEY``."""
    monkeypatch.setenv("ORCH_AUTH_CLAUDE_MAIN_API_KEY", KEY)

    def make(api_base: str | None = None, timeout_s: float = 5, extra: str = "") -> AnthropicProvider:
        entry = f"type: anthropic\nauth_profile: claude_main\napi_base: {api_base or server.url}\n"
        entry += f"timeout_s: {timeout_s}"
        return provider_for(AnthropicProvider, "claude", f"{entry}\n{extra.strip()}")

    return make


request = functools.partial(model_request, model=MODEL)


HELLO = request(("user", "hello there"))


# --- the request the SDK sends --------------------------------------------------------------


async def test_complete_lifts_system_merges_turns_and_sends_params(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(Reply(body=message_body("Paris.", model=MODEL, input_tokens=21, output_tokens=2)))
    provider = make_provider()
    req = request(
        ("system", "You are terse."),
        ("user", "Capital of France?"),
        ("user", "One word."),
        ("assistant", "Paris."),
        ("system", "Answer in English."),
        ("user", "And of Italy?"),
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop=["\n\n", "END"],
        extra={"metadata": {"user_id": "u-1"}},
    )

    response = await provider.complete(req)

    sent = server.last
    assert (sent.method, sent.route) == ("POST", "/v1/messages")
    assert sent.body == {
        "model": MODEL,
        "max_tokens": 50,
        "system": "You are terse.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Capital of France?\n\nOne word."},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
        ],
        "stop_sequences": ["\n\n", "END"],
        "temperature": 0.3,
        "top_p": 0.9,
        "metadata": {"user_id": "u-1"},
    }
    assert sent.header("authorization") == f"Bearer {KEY}"
    assert sent.header("anthropic-version")
    assert response.content == "Paris."
    assert (response.provider, response.model, response.finish_reason) == ("claude", MODEL, "end_turn")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (21, 2)


async def test_max_tokens_is_always_sent(server: AnthropicWireServer, make_provider: MakeProvider) -> None:
    await make_provider().complete(HELLO)
    assert server.last.body["max_tokens"] == 1024
    assert "system" not in server.last.body and "temperature" not in server.last.body

    provider = make_provider(extra="    options: {default_max_tokens: 300}")
    await provider.complete(HELLO)
    assert server.last.body["max_tokens"] == 300


def test_unknown_option_is_a_config_error(make_provider: MakeProvider) -> None:
    with pytest.raises(ConfigValidationError, match=r"providers\.claude\.options\.max_tokenz"):
        make_provider(extra="    options: {max_tokenz: 5}")


async def test_assistant_first_is_refused_before_sending(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    with pytest.raises(InvalidRequestError, match="starts with a user turn"):
        await provider.complete(request(("system", "s"), ("assistant", "Hi!"), ("user", "hello")))
    with pytest.raises(InvalidRequestError, match="at least one user message"):
        await provider.complete(request(("system", "only a system prompt")))
    assert server.requests == []


async def test_a_last_assistant_turn_is_sent_as_a_prefill(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(Reply(body=message_body("B)", model=MODEL, input_tokens=9, output_tokens=2)))
    response = await make_provider().complete(
        request(("user", "Sun in Greek? (A) Sol (B) Helios"), ("assistant", "The answer is ("))
    )
    assert server.last.body["messages"][-1] == {"role": "assistant", "content": "The answer is ("}
    assert response.content == "B)"


async def test_logprobs_are_refused_not_faked(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    with pytest.raises(UnsupportedCapabilityError, match="no log-probabilities"):
        await make_provider().complete(request(("user", "hi"), logprobs=True))
    assert server.requests == []


# --- the response -------------------------------------------------------------------------------


async def test_usage_counts_cached_tokens(server: AnthropicWireServer, make_provider: MakeProvider) -> None:
    server.push(
        Reply(
            body=message_body(
                "ok",
                model=MODEL,
                input_tokens=10,
                output_tokens=40,
                cache_read=1000,
                cache_write=200,
                thinking_tokens=30,
            )
        )
    )
    response = await make_provider().complete(HELLO)
    usage = response.usage
    assert usage.input_tokens == 10 + 1000 + 200
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (1000, 200)
    assert (usage.output_tokens, usage.reasoning_tokens) == (40, 30)


async def test_text_of_every_text_block_is_joined(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    body = message_body("", model=MODEL, input_tokens=3, output_tokens=5)
    body["content"] = [
        {"type": "thinking", "thinking": "let me see", "signature": "sig"},
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world."},
    ]
    server.push(Reply(body=body))
    assert (await make_provider().complete(HELLO)).content == "Hello, world."


# --- streaming ------------------------------------------------------------------------------------


async def test_stream_yields_text_deltas_and_usage_from_start_and_delta(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(
        stream_reply(
            stream_events(
                ["Bon", "jour", "!"],
                model=MODEL,
                input_tokens=12,
                output_tokens=3,
                cache_read=100,
                cache_write=7,
            )
        )
    )
    chunks = [
        c async for c in make_provider().stream(request(("system", "French."), ("user", "hi"), temperature=0))
    ]

    assert [c.delta for c in chunks[:-1]] == ["Bon", "jour", "!"]
    final = chunks[-1].response
    assert final is not None and final.content == "Bonjour!"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12 + 100 + 7, 3)
    assert (final.usage.cache_read_tokens, final.usage.cache_write_tokens) == (100, 7)
    assert final.finish_reason == "end_turn"
    sent = server.last.body
    assert sent["stream"] is True and sent["system"] == "French." and sent["temperature"] == 0


async def test_stream_default_echo_counts_words(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    chunks = [c async for c in make_provider().stream(request(("user", "one two three")))]
    final = chunks[-1].response
    assert final is not None and final.content == "echo: one two three"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


async def test_overloaded_error_event_mid_stream(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    frames = stream_events(["partial"], model=MODEL, input_tokens=4, output_tokens=1)[:4]
    frames.append(sse("error", error_body("overloaded_error", "Overloaded")))
    server.push(stream_reply(frames))
    deltas: list[str] = []
    with pytest.raises(ProviderUnavailableError) as info:
        async for chunk in make_provider().stream(HELLO):
            deltas.append(chunk.delta)
    assert deltas == ["partial"]
    assert info.value.status_code == 529 and info.value.retryable
    assert "overloaded_error" in str(info.value) and "Overloaded" in str(info.value)


async def test_garbage_in_the_stream_is_a_response_error(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(stream_reply([sse("message_start", b"{not json")]))
    with pytest.raises(ProviderResponseError, match="malformed response"):
        [c async for c in make_provider().stream(HELLO)]


# --- errors ---------------------------------------------------------------------------------------


async def test_401_is_an_authentication_error_without_the_key(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(anthropic_error(401, message="invalid x-api-key"))
    with pytest.raises(AuthenticationError) as info:
        await make_provider().complete(HELLO)
    assert info.value.status_code == 401 and not info.value.retryable
    assert "invalid x-api-key" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in str(info.value.__cause__)


async def test_a_key_the_server_echoes_back_is_masked_and_not_reachable(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(anthropic_error(401, message=f"invalid x-api-key: {KEY}"))
    with pytest.raises(AuthenticationError) as info:
        await make_provider().complete(HELLO)
    assert "invalid x-api-key: **********" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    # the SDK's exception carries the key: a masked summary stands in for it
    assert not [s for s in reachable_strings(info.value) if KEY in s]
    assert isinstance(info.value.__cause__, ScrubbedCause) and info.value.__context__ is None
    assert info.value.__cause__.type_name == "anthropic.AuthenticationError"


async def test_429_carries_retry_after(server: AnthropicWireServer, make_provider: MakeProvider) -> None:
    server.push(
        anthropic_error(
            429, message="Number of request tokens has exceeded your rate limit", headers={"retry-after": "7"}
        )
    )
    with pytest.raises(RateLimitError) as info:
        await make_provider().complete(HELLO)
    assert info.value.retry_after == 7.0 and info.value.retryable and info.value.status_code == 429


@pytest.mark.parametrize(("status", "kind"), [(500, "api_error"), (529, "overloaded_error")])
async def test_5xx_and_529_are_unavailable(
    server: AnthropicWireServer, make_provider: MakeProvider, status: int, kind: str
) -> None:
    server.push(anthropic_error(status, kind, "try again later"))
    with pytest.raises(ProviderUnavailableError) as info:
        await make_provider().complete(HELLO)
    assert info.value.status_code == status and info.value.retryable
    assert info.value.model == MODEL and info.value.provider == "claude"


async def test_sdk_retries_follow_max_retries(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(anthropic_error(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "10"}))
    provider = make_provider(extra="    max_retries: 1")
    response = await provider.complete(HELLO)
    assert response.content == "echo: hello there"
    assert len(server.requests) == 2


async def test_prompt_too_long_is_a_context_length_error(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(
        anthropic_error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
    )
    with pytest.raises(ContextLengthExceededError, match="prompt is too long"):
        await make_provider().complete(HELLO)


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", {"unexpected": True}, [1, 2]])
async def test_malformed_body_is_a_response_error(
    server: AnthropicWireServer, make_provider: MakeProvider, body: Any
) -> None:
    server.push(Reply(body=body))
    with pytest.raises(ProviderResponseError):
        await make_provider().complete(HELLO)


async def test_timeout_from_settings_and_from_params(
    server: AnthropicWireServer, make_provider: MakeProvider
) -> None:
    server.push(Reply(body=message_body("late", model=MODEL, input_tokens=1, output_tokens=1), delay_s=1.0))
    provider = make_provider(timeout_s=0.2)
    with pytest.raises(ProviderTimeoutError, match=r"0\.2s") as info:
        await provider.complete(HELLO)
    assert info.value.retryable

    server.push(Reply(body=message_body("late", model=MODEL, input_tokens=1, output_tokens=1), delay_s=1.0))
    with pytest.raises(ProviderTimeoutError, match=r"0\.15s"):
        await make_provider().complete(request(("user", "hi"), timeout_s=0.15))


async def test_connection_refused(make_provider: MakeProvider) -> None:
    provider = make_provider(api_base=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProviderConnectionError, match="cannot connect") as info:
        await provider.complete(HELLO)
    assert info.value.retryable
    assert await provider.is_available() is False


# --- discovery ------------------------------------------------------------------------------------


async def test_list_models_and_is_available(server: AnthropicWireServer, make_provider: MakeProvider) -> None:
    server.push(Reply(body=models_body(("claude-a", "Claude A", 200000), ("claude-b", "Claude B", 1000000))))
    provider = make_provider()
    models = await provider.list_models()
    assert [(m.id, m.provider, m.context_window) for m in models] == [
        ("claude-a", "claude", 200000),
        ("claude-b", "claude", 1000000),
    ]
    assert models[0].details["display_name"] == "Claude A"
    assert (server.last.method, server.last.route) == ("GET", "/v1/models")
    assert server.last.header("authorization") == f"Bearer {KEY}"
    assert await provider.is_available() is True

    server.push(anthropic_error(401, message="bad key"))
    assert await provider.is_available() is False
