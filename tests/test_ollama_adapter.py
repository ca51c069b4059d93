"""The Ollama adapter, through the official ollama SDK, against a loopback Ollama server."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    ContextWindowError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from orchlab.orchestrator import Orchestrator
from orchlab.providers.ollama import OllamaProvider
from tests.secret_walk import reachable_strings
from tests.servers.loopback import Reply, closed_port
from tests.servers.ollama_wire import (
    OllamaWireServer,
    chat_body,
    ndjson,
    ollama_error,
    show_body,
    stream_lines,
    stream_reply,
    tag,
)
from tests.support import model_request

MODEL = "llama3.1:8b"

MakeProvider = Callable[..., OllamaProvider]


@pytest.fixture
def server() -> Iterator[OllamaWireServer]:
    with OllamaWireServer() as s:
        yield s


@pytest.fixture
def make_provider(server: OllamaWireServer, provider_for: Callable[..., OllamaProvider]) -> MakeProvider:
    def make(
        api_base: str | None = None, timeout_s: float = 5, extra: str = "", name: str = "gpu1"
    ) -> OllamaProvider:
        entry = f"type: ollama\napi_base: {api_base or server.url}\ntimeout_s: {timeout_s}"
        return provider_for(OllamaProvider, name, f"{entry}\n{extra.strip()}")

    return make


request = functools.partial(model_request, model=MODEL)


HELLO = request(("user", "hello there"))


# --- the request the SDK sends --------------------------------------------------------------


async def test_complete_sends_roles_options_and_keep_alive(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    server.push(Reply(body=chat_body("Rome.", model=MODEL, prompt_eval_count=26, eval_count=3)))
    provider = make_provider(extra="    options: {num_ctx: 16384, keep_alive: 30m}")
    req = request(
        ("system", "You are terse."),
        ("user", "Capital of Italy?"),
        temperature=0.1,
        max_tokens=32,
        top_p=0.5,
        stop=["\n"],
        seed=42,
        extra={"top_k": 10, "format": "json", "think": False},
    )

    response = await provider.complete(req)

    sent = server.last
    assert (sent.method, sent.route) == ("POST", "/api/chat")
    assert sent.body["model"] == MODEL and sent.body["stream"] is False
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of Italy?"},
    ]
    assert sent.body["options"] == {
        "num_ctx": 16384,
        "temperature": 0.1,
        "num_predict": 32,
        "top_p": 0.5,
        "stop": ["\n"],
        "seed": 42,
        "top_k": 10,
    }
    assert (sent.body["keep_alive"], sent.body["format"], sent.body["think"]) == ("30m", "json", False)
    assert sent.header("authorization") is None
    assert response.content == "Rome."
    assert (response.provider, response.model, response.finish_reason) == ("gpu1", MODEL, "stop")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (26, 3)


async def test_plain_request_sends_no_options(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    response = await make_provider().complete(HELLO)
    assert "options" not in server.last.body and "keep_alive" not in server.last.body
    assert response.content == "echo: hello there"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 3)


async def test_a_key_is_sent_as_bearer_when_configured(
    server: OllamaWireServer, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OLLAMA_PROXY_API_KEY", "ollama-proxy-SECRET")
    await make_provider(extra="    auth_profile: ollama_proxy").complete(HELLO)
    assert server.last.header("authorization") == "Bearer ollama-proxy-SECRET"


async def test_logprobs(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    body = chat_body("Yes", model=MODEL, prompt_eval_count=2, eval_count=1)
    body["logprobs"] = [{"token": "Yes", "logprob": -0.5, "top_logprobs": []}]
    server.push(Reply(body=body))
    response = await make_provider().complete(request(("user", "ok?"), logprobs=True))
    assert server.last.body["logprobs"] is True
    assert response.logprobs == [-0.5]


# --- streaming ------------------------------------------------------------------------------------


async def test_stream_ndjson_deltas_and_final_counts(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    server.push(
        stream_reply(stream_lines(["Bon", "jour", "!"], model=MODEL, prompt_eval_count=14, eval_count=3))
    )
    chunks = [c async for c in make_provider().stream(request(("user", "hi"), max_tokens=8))]
    assert [c.delta for c in chunks[:-1]] == ["Bon", "jour", "!"]
    final = chunks[-1].response
    assert final is not None and final.content == "Bonjour!" and final.finish_reason == "stop"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (14, 3)
    assert server.last.body["stream"] is True and server.last.body["options"] == {"num_predict": 8}


async def test_stream_default_echo(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    chunks = [c async for c in make_provider().stream(request(("user", "one two three")))]
    final = chunks[-1].response
    assert final is not None and final.content == "echo: one two three"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


async def test_error_line_mid_stream(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    lines = stream_lines(["partial"], model=MODEL, prompt_eval_count=1, eval_count=1)[:1]
    lines.append(ndjson({"error": "an error was encountered while running the model: CUDA error"}))
    server.push(stream_reply(lines))
    deltas: list[str] = []
    with pytest.raises(ProviderUnavailableError, match="CUDA error"):
        async for chunk in make_provider().stream(HELLO):
            deltas.append(chunk.delta)
    assert deltas == ["partial"]


async def test_stream_cut_before_done_is_an_error(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    """No final ``done`` line: cut short after some text (retryable), or nothing readable."""
    lines = stream_lines(["partial"], model=MODEL, prompt_eval_count=1, eval_count=1)[:1]
    server.push(stream_reply(lines))
    with pytest.raises(ProviderConnectionError, match="without a finish reason after 7 characters") as info:
        [c async for c in make_provider().stream(HELLO)]
    assert info.value.retryable
    server.push(stream_reply([]))
    with pytest.raises(ProviderResponseError, match="without any text"):
        [c async for c in make_provider().stream(HELLO)]


async def test_garbage_line_is_a_response_error(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    server.push(stream_reply([ndjson(b"{not json")]))
    with pytest.raises(ProviderResponseError, match="malformed response"):
        [c async for c in make_provider().stream(HELLO)]


# --- errors ---------------------------------------------------------------------------------------


async def test_unknown_model_says_how_to_pull_it(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    with pytest.raises(ProviderError, match="ollama pull qwen9:1b") as info:
        await make_provider().complete(request(("user", "hi"), model="qwen9:1b"))
    assert info.value.status_code == 404 and not info.value.retryable


async def test_401_from_an_authenticating_proxy(
    server: OllamaWireServer, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OLLAMA_PROXY_API_KEY", "ollama-proxy-SECRET")
    server.push(ollama_error(401, "unauthorized: Bearer ollama-proxy-SECRET"))  # a proxy echoing it
    with pytest.raises(AuthenticationError) as info:
        await make_provider(extra="    auth_profile: ollama_proxy").complete(HELLO)
    assert info.value.status_code == 401
    assert "unauthorized: Bearer **********" in str(info.value)
    assert not [s for s in reachable_strings(info.value) if "ollama-proxy-SECRET" in s]


async def test_429_carries_retry_after(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    provider = make_provider()
    server.push(ollama_error(429, "server busy, please try again", headers={"retry-after": "3"}))
    with pytest.raises(RateLimitError) as info:
        await provider.complete(HELLO)
    assert info.value.retry_after == 3.0 and info.value.retryable

    server.push(ollama_error(429, "server busy, please try again"))
    with pytest.raises(RateLimitError) as info:
        await provider.complete(HELLO)
    assert info.value.retry_after is None


async def test_429_on_a_stream_carries_retry_after(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    server.push(ollama_error(429, "server busy", headers={"retry-after": "2"}))
    with pytest.raises(RateLimitError) as info:
        [c async for c in make_provider().stream(HELLO)]
    assert info.value.retry_after == 2.0


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_unavailable(server: OllamaWireServer, make_provider: MakeProvider, status: int) -> None:
    server.push(ollama_error(status, "llama runner process has terminated: signal: killed"))
    with pytest.raises(ProviderUnavailableError, match="llama runner") as info:
        await make_provider().complete(HELLO)
    assert info.value.status_code == status and info.value.retryable


async def test_context_overflow(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    server.push(ollama_error(400, "the input length exceeds the context length"))
    with pytest.raises(ContextLengthExceededError):
        await make_provider().complete(HELLO)


@pytest.mark.parametrize("body", [b"not json", {"model": MODEL, "done": True}, [1, 2]])
async def test_malformed_body_is_a_response_error(
    server: OllamaWireServer, make_provider: MakeProvider, body: Any
) -> None:
    server.push(Reply(body=body))
    with pytest.raises(ProviderResponseError):
        await make_provider().complete(HELLO)


async def test_timeout_from_settings_and_from_params(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    late = chat_body("late", model=MODEL, prompt_eval_count=1, eval_count=1)
    server.push(Reply(body=late, delay_s=1.0))
    with pytest.raises(ProviderTimeoutError, match=r"0\.2s") as info:
        await make_provider(timeout_s=0.2).complete(HELLO)
    assert info.value.retryable

    server.push(Reply(body=late, delay_s=1.0))
    with pytest.raises(ProviderTimeoutError, match=r"0\.15s"):
        await make_provider().complete(request(("user", "hi"), timeout_s=0.15))

    # In a stream, timeout_s bounds the wait for each line.
    lines = stream_lines(["a", "b"], model=MODEL, prompt_eval_count=1, eval_count=2)
    server.push(stream_reply(lines, chunk_delay_s=1.0))
    deltas: list[str] = []
    with pytest.raises(ProviderTimeoutError, match=r"0\.3s"):
        async for chunk in make_provider().stream(request(("user", "hi"), timeout_s=0.3)):
            deltas.append(chunk.delta)
    assert deltas == ["a"]


async def test_connection_refused(make_provider: MakeProvider) -> None:
    provider = make_provider(api_base=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProviderConnectionError, match="ollama serve") as info:
        await provider.complete(HELLO)
    assert info.value.retryable
    with pytest.raises(ProviderConnectionError):
        [c async for c in provider.stream(HELLO)]
    assert await provider.is_available() is False
    with pytest.raises(ProviderConnectionError):
        await provider.list_models()


# --- discovery and several hosts ------------------------------------------------------------------


async def test_list_models_reports_size_family_quantization_and_context(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    server.models["qwen3:0.6b"] = (
        tag("qwen3:0.6b", size=522_653_767, family="qwen3", parameter_size="751.63M", quantization="Q4_K_M"),
        show_body("qwen3", context_length=40960, parameters="num_ctx 8192\ntemperature 0.6"),
    )
    server.models["mystery:latest"] = (
        tag("mystery:latest", size=1000, family="unknown", parameter_size="1B", quantization="F16"),
        show_body("unknown", context_length=None),
    )
    models = {m.id: m for m in await make_provider().list_models()}

    assert set(models) == {"llama3.1:8b", "qwen3:0.6b", "mystery:latest"}
    llama, qwen = models["llama3.1:8b"], models["qwen3:0.6b"]
    assert (llama.provider, llama.family, llama.size_bytes, llama.context_window) == (
        "gpu1",
        "llama",
        4_920_753_328,
        131072,
    )
    assert llama.details["parameter_size"] == "8.0B" and llama.details["quantization_level"] == "Q4_K_M"
    assert "num_ctx" not in llama.details
    assert (qwen.family, qwen.context_window, qwen.details["num_ctx"]) == ("qwen3", 40960, 8192)
    assert models["mystery:latest"].context_window is None
    shows = sorted(r.body["model"] for r in server.requests if r.route == "/api/show")
    assert shows == ["llama3.1:8b", "mystery:latest", "qwen3:0.6b"]


async def test_a_failing_show_leaves_the_model_listed(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    server.push(Reply(status=500, body={"error": "boom"}, match="/api/show"))
    models = await make_provider().list_models()
    assert [(m.id, m.context_window, m.family) for m in models] == [("llama3.1:8b", None, "llama")]


async def test_discover_context_off_skips_show(server: OllamaWireServer, make_provider: MakeProvider) -> None:
    models = await make_provider(extra="    options: {discover_context: false}").list_models()
    assert [(m.id, m.context_window, m.size_bytes) for m in models] == [("llama3.1:8b", None, 4_920_753_328)]
    assert [r.route for r in server.requests] == ["/api/tags"]


async def test_is_available_only_when_the_server_answers(
    server: OllamaWireServer, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    assert await provider.is_available() is True
    assert [r.route for r in server.requests] == ["/api/tags"]
    server.push(Reply(status=502, body=b"bad gateway", content_type="text/plain"))
    assert await provider.is_available() is False


async def test_several_hosts_are_several_entries(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_TRACKING", "0")  # about routing to hosts, not about MLflow
    with OllamaWireServer() as gpu1, OllamaWireServer() as gpu2:
        gpu2.models = {
            "qwen3:32b": (
                tag(
                    "qwen3:32b",
                    size=20_000_000_000,
                    family="qwen3",
                    parameter_size="32B",
                    quantization="Q4_K_M",
                ),
                show_body("qwen3", context_length=40960),
            )
        }
        path = write_config(
            f"""
            project: t
            providers:
              gpu1: {{type: ollama, api_base: "{gpu1.url}"}}
              gpu2: {{type: ollama, api_base: "{gpu2.url}", options: {{num_ctx: 32768}}}}
            roles:
              llm.small: {{provider: gpu1, model: "llama3.1:8b"}}
              llm.big: {{provider: gpu2, model: "qwen3:32b"}}
            """
        )
        client = orchlab.get_llm_client(path)
        try:
            small = await client.arun("llm.small", [{"role": "user", "content": "ping"}])
            big = await client.arun("llm.big", [{"role": "user", "content": "pong"}])
        finally:
            await client.aclose()
        assert (small.provider, small.content, big.provider, big.content) == (
            "gpu1",
            "echo: ping",
            "gpu2",
            "echo: pong",
        )
        assert [r.body["model"] for r in gpu1.requests] == ["llama3.1:8b"]
        assert [r.body["model"] for r in gpu2.requests] == ["qwen3:32b"]
        assert gpu2.last.body["options"] == {"num_ctx": 32768}


# --- the context window ---------------------------------------------------------------------------


def test_num_ctx_is_the_window_the_preflight_checks(
    server: OllamaWireServer, client_for: Callable[..., Orchestrator]
) -> None:
    client = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          gpu1: {{type: ollama, api_base: "{server.url}", options: {{num_ctx: 64}}}}
          laptop: {{type: ollama, api_base: "{server.url}"}}
        roles:
          r: {{provider: gpu1, model: "{MODEL}", params: {{max_tokens: 16}}}}
        """
    )
    assert client.provider("gpu1").context_window() == 64
    assert client.provider("laptop").context_window() is None  # each model's own window
    info = client.catalog.get_model_info(f"gpu1:{MODEL}")
    assert info.context_window == 64 and "provider" in info.sources

    # ~100 estimated prompt tokens + 16 > 64: refused before anything is sent
    with pytest.raises(ContextWindowError, match="context window of 64 tokens") as exc:
        client.run("r", [{"role": "user", "content": "word " * 80}])
    assert exc.value.context_window == 64 and exc.value.provider == "gpu1"
    assert server.requests == []
    # a prompt that fits goes through
    server.push(Reply(body=chat_body("ok", model=MODEL, prompt_eval_count=3, eval_count=1)))
    assert client.run("r", [{"role": "user", "content": "hi"}]).content == "ok"
    assert [r.route for r in server.requests] == ["/api/chat"]
