"""The Gemini adapter, through the official google-genai SDK, against a loopback Gemini API server.

The SDK sends through aiohttp when it is installed and through httpx otherwise; the error-path
tests run on both transports (``transport`` fixture).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchlab.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InvalidRequestError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from orchlab.providers.gemini import GeminiProvider
from tests.servers.gemini_wire import (
    GeminiWireServer,
    gemini_error,
    model_entry,
    response_body,
    sse,
    stream_frames,
    stream_reply,
    usage_metadata,
)
from tests.servers.loopback import Reply, closed_port
from tests.support import model_request

KEY = "AIza-loopback-SECRET-91c2"
MODEL = "gemini-loopback"

MakeProvider = Callable[..., GeminiProvider]


@pytest.fixture
def server() -> Iterator[GeminiWireServer]:
    with GeminiWireServer() as s:
        yield s


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which HTTP library the SDK sends with (it prefers aiohttp when that is importable)."""
    import google.genai._api_client as api_client

    if request.param == "httpx":
        monkeypatch.setattr(api_client, "has_aiohttp", False)
    else:
        assert api_client.has_aiohttp
    return str(request.param)


@pytest.fixture
def make_provider(
    server: GeminiWireServer, provider_for: Callable[..., GeminiProvider], monkeypatch: pytest.MonkeyPatch
) -> MakeProvider:
    """An adapter built from a YAML entry, its key read from ``ORCH_AUTH_GEMINI_MAIN_API_KEY``."""
    monkeypatch.setenv("ORCH_AUTH_GEMINI_MAIN_API_KEY", KEY)

    def make(api_base: str | None = None, timeout_s: float = 5, extra: str = "") -> GeminiProvider:
        entry = f"type: gemini\nauth_profile: gemini_main\napi_base: {api_base or server.url}\n"
        entry += f"timeout_s: {timeout_s}"
        return provider_for(GeminiProvider, "gem", f"{entry}\n{extra.strip()}")

    return make


request = functools.partial(model_request, model=MODEL)


HELLO = request(("user", "hello there"))


# --- the request the SDK sends --------------------------------------------------------------


async def test_complete_maps_roles_system_and_generation_config(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    server.push(Reply(body=response_body("Rome.", model="gemini-loopback-001", usage=usage_metadata(17, 2))))
    provider = make_provider()
    req = request(
        ("system", "You are terse."),
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("assistant", "Anything else?"),
        ("system", "Answer in English."),
        ("user", "And of Italy?"),
        temperature=0.2,
        top_p=0.8,
        max_tokens=64,
        stop=["END"],
        seed=7,
        extra={"top_k": 20, "response_mime_type": "text/plain"},
    )

    response = await provider.complete(req)

    sent = server.last
    assert (sent.method, sent.route) == ("POST", f"/v1/models/{MODEL}:generateContent")
    assert sent.header("x-goog-api-key") == KEY
    assert KEY not in sent.path
    assert sent.body["contents"] == [
        {"role": "user", "parts": [{"text": "Capital of France?"}]},
        {"role": "model", "parts": [{"text": "Paris."}, {"text": "Anything else?"}]},
        {"role": "user", "parts": [{"text": "And of Italy?"}]},
    ]
    assert sent.body["systemInstruction"]["parts"] == [
        {"text": "You are terse."},
        {"text": "Answer in English."},
    ]
    assert sent.body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.8,
        "topK": 20,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "seed": 7,
        "responseMimeType": "text/plain",
    }
    assert response.content == "Rome."
    assert (response.provider, response.model, response.finish_reason) == (
        "gem",
        "gemini-loopback-001",
        "STOP",
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (17, 2)


async def test_api_version_option_changes_the_path(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    await make_provider(extra="    options: {api_version: v1beta}").complete(HELLO)
    assert server.last.route == f"/v1beta/models/{MODEL}:generateContent"
    assert "systemInstruction" not in server.last.body and "generationConfig" not in server.last.body


async def test_unknown_extra_key_is_refused_before_sending(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    with pytest.raises(InvalidRequestError, match="did you mean top_k"):
        await make_provider().complete(request(("user", "hi"), extra={"topk": 3}))
    with pytest.raises(InvalidRequestError, match="at least one user message"):
        await make_provider().complete(request(("system", "only this")))
    assert server.requests == []


# --- the response -------------------------------------------------------------------------------


async def test_usage_counts_cached_and_thinking_tokens(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    body = response_body(
        "",
        model=MODEL,
        usage=usage_metadata(1200, 40, cached=1000, thoughts=300),
        parts=[{"text": "weighing options", "thought": True}, {"text": "42"}],
    )
    server.push(Reply(body=body))
    response = await make_provider().complete(HELLO)
    assert response.content == "42"
    usage = response.usage
    assert (usage.input_tokens, usage.cache_read_tokens) == (1200, 1000)
    assert (usage.output_tokens, usage.reasoning_tokens) == (340, 300)


async def test_logprobs_are_requested_and_returned(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    body = response_body("Yes", model=MODEL, usage=usage_metadata(3, 1))
    body["candidates"][0]["logprobsResult"] = {
        "chosenCandidates": [{"token": "Yes", "logProbability": -0.25}],
        "topCandidates": [],
    }
    server.push(Reply(body=body))
    response = await make_provider().complete(request(("user", "ok?"), logprobs=True))
    assert server.last.body["generationConfig"] == {"responseLogprobs": True}
    assert response.logprobs == [-0.25]


async def test_a_blocked_prompt_is_an_empty_answer_that_says_why(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    server.push(
        Reply(
            body={
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": usage_metadata(9),
                "modelVersion": MODEL,
            }
        )
    )
    response = await make_provider().complete(HELLO)
    assert (response.content, response.finish_reason) == ("", "blocked:SAFETY")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 0)


# --- streaming ------------------------------------------------------------------------------------


async def test_stream_yields_deltas_and_final_usage(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    server.push(
        stream_reply(
            stream_frames(["Bon", "jour", "!"], model=MODEL, prompt=11, candidates=3, cached=4, thoughts=5)
        )
    )
    chunks = [
        c async for c in make_provider().stream(request(("system", "French."), ("user", "hi"), max_tokens=9))
    ]
    assert [c.delta for c in chunks[:-1]] == ["Bon", "jour", "!"]
    final = chunks[-1].response
    assert final is not None and final.content == "Bonjour!" and final.finish_reason == "STOP"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3 + 5)
    assert (final.usage.cache_read_tokens, final.usage.reasoning_tokens) == (4, 5)
    sent = server.last
    assert sent.route == f"/v1/models/{MODEL}:streamGenerateContent"
    assert sent.query == {"alt": ["sse"]}
    assert sent.header("x-goog-api-key") == KEY
    assert sent.body["generationConfig"] == {"maxOutputTokens": 9}


async def test_stream_default_echo(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    chunks = [c async for c in make_provider().stream(request(("user", "one two three")))]
    final = chunks[-1].response
    assert final is not None and final.content == "echo: one two three"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


async def test_error_frame_mid_stream(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    frames = stream_frames(["partial"], model=MODEL, prompt=2, candidates=1)
    frames.append(
        sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    )
    server.push(stream_reply(frames))
    deltas: list[str] = []
    with pytest.raises(ProviderUnavailableError, match="overloaded") as info:
        async for chunk in make_provider().stream(HELLO):
            deltas.append(chunk.delta)
    assert deltas == ["partial"] and info.value.status_code == 503


async def test_garbage_frame_is_a_response_error(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    server.push(stream_reply([sse(b"{not json")]))
    with pytest.raises(ProviderResponseError, match="malformed response"):
        [c async for c in make_provider().stream(HELLO)]


# --- errors ---------------------------------------------------------------------------------------


async def test_invalid_key_is_an_authentication_error(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    # Google answers a bad key with 400 INVALID_ARGUMENT + ErrorInfo reason API_KEY_INVALID.
    server.push(
        gemini_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            reason="API_KEY_INVALID",
        )
    )
    with pytest.raises(AuthenticationError, match="API key not valid") as info:
        await make_provider().complete(HELLO)
    assert info.value.status_code == 400
    assert KEY not in str(info.value) and KEY not in repr(info.value)


async def test_401_is_an_authentication_error(server: GeminiWireServer, make_provider: MakeProvider) -> None:
    server.push(gemini_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."))
    with pytest.raises(AuthenticationError, match="UNAUTHENTICATED") as info:
        await make_provider().complete(HELLO)
    assert KEY not in str(info.value) and KEY not in str(info.value.__cause__)


async def test_429_retry_after_from_header_or_retry_info(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    provider = make_provider()
    server.push(gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", headers={"retry-after": "4"}))
    with pytest.raises(RateLimitError) as info:
        await provider.complete(HELLO)
    assert info.value.retry_after == 4.0 and info.value.retryable

    server.push(gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="12.5s"))
    with pytest.raises(RateLimitError) as info:
        await provider.complete(HELLO)
    assert info.value.retry_after == 12.5


@pytest.mark.parametrize(("code", "status"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
async def test_5xx_is_unavailable(
    server: GeminiWireServer, make_provider: MakeProvider, code: int, status: str
) -> None:
    server.push(gemini_error(code, status, "try again later"))
    with pytest.raises(ProviderUnavailableError) as info:
        await make_provider().complete(HELLO)
    assert info.value.status_code == code and info.value.retryable and info.value.model == MODEL


async def test_html_502_from_a_proxy_is_unavailable(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    server.push(Reply(status=502, body=b"<html>Bad Gateway</html>", content_type="text/html"))
    with pytest.raises(ProviderUnavailableError) as info:
        await make_provider().complete(HELLO)
    assert info.value.status_code == 502


async def test_input_too_long_is_a_context_length_error(
    server: GeminiWireServer, make_provider: MakeProvider
) -> None:
    server.push(
        gemini_error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        )
    )
    with pytest.raises(ContextLengthExceededError):
        await make_provider().complete(HELLO)


@pytest.mark.parametrize("body", [b"not json at all", {"unexpected": True}])
async def test_malformed_body_is_a_response_error(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str, body: Any
) -> None:
    server.push(Reply(body=body))
    with pytest.raises(ProviderResponseError):
        await make_provider().complete(HELLO)


async def test_timeout_from_settings_and_from_params(
    server: GeminiWireServer, make_provider: MakeProvider, transport: str
) -> None:
    late = response_body("late", model=MODEL, usage=usage_metadata(1, 1))
    server.push(Reply(body=late, delay_s=1.0))
    with pytest.raises(ProviderTimeoutError, match=r"0\.2s") as info:
        await make_provider(timeout_s=0.2).complete(HELLO)
    assert info.value.retryable

    server.push(Reply(body=late, delay_s=1.0))
    with pytest.raises(ProviderTimeoutError, match=r"0\.15s"):
        await make_provider().complete(request(("user", "hi"), timeout_s=0.15))


async def test_connection_refused(make_provider: MakeProvider, transport: str) -> None:
    provider = make_provider(api_base=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProviderConnectionError, match="cannot connect") as info:
        await provider.complete(HELLO)
    assert info.value.retryable and KEY not in str(info.value)
    assert await provider.is_available() is False


# --- discovery ------------------------------------------------------------------------------------


async def test_list_models_and_is_available(server: GeminiWireServer, make_provider: MakeProvider) -> None:
    server.push(
        Reply(
            body={
                "models": [
                    model_entry("gemini-a", "Gemini A", 1048576, 65536),
                    model_entry("gemini-b", "Gemini B", 32768, 8192),
                ]
            }
        )
    )
    provider = make_provider()
    models = await provider.list_models()
    assert [(m.id, m.provider, m.context_window) for m in models] == [
        ("gemini-a", "gem", 1048576),
        ("gemini-b", "gem", 32768),
    ]
    assert models[1].details["max_output_tokens"] == 8192
    assert models[0].details["display_name"] == "Gemini A"
    assert (server.last.method, server.last.route) == ("GET", "/v1/models")
    assert server.last.header("x-goog-api-key") == KEY
    assert await provider.is_available() is True

    server.push(gemini_error(403, "PERMISSION_DENIED", "denied"))
    assert await provider.is_available() is False
