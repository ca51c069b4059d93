"""One YAML binding roles to Anthropic, Gemini and Ollama, run end to end against their loopback
servers: ``run``, ``arun``, and ``stream`` (sync and async), with content and token usage checked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import orchlab
from orchlab.orchestrator import Orchestrator
from tests.servers.anthropic_wire import AnthropicWireServer
from tests.servers.gemini_wire import GeminiWireServer
from tests.servers.loopback import LoopbackServer
from tests.servers.ollama_wire import OllamaWireServer

ANTHROPIC_KEY = "sk-ant-e2e-SECRET-0001"
GEMINI_KEY = "AIza-e2e-SECRET-0002"

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "name three colors"},
]
# The loopback servers echo the last user turn and count words: 2 (system) + 3 (user) in,
# "echo: name three colors" (4 words) out.
ANSWER = "echo: name three colors"
TOKENS_IN, TOKENS_OUT = 5, 4


@dataclass
class Servers:
    anthropic: AnthropicWireServer
    gemini: GeminiWireServer
    ollama: OllamaWireServer

    def of(self, role: str) -> LoopbackServer:
        return {"llm.writer": self.anthropic, "llm.reviewer": self.gemini, "llm.local": self.ollama}[role]


ROLES = {
    # role: (provider entry, model)
    "llm.writer": ("anthropic", "claude-loopback-1"),
    "llm.reviewer": ("gemini", "gemini-loopback"),
    "llm.local": ("gpu1", "llama3.1:8b"),
}


@pytest.fixture
def servers() -> Iterator[Servers]:
    with AnthropicWireServer() as a, GeminiWireServer() as g, OllamaWireServer() as o:
        yield Servers(a, g, o)


@pytest.fixture
def config_path(
    servers: Servers, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("ORCH_AUTH_ANTHROPIC_API_KEY", ANTHROPIC_KEY)  # profile = the entry's name
    monkeypatch.setenv("ORCH_AUTH_GOOGLE_AI_API_KEY", GEMINI_KEY)
    # These tests are about the adapters; MLflow tracking (seconds per fresh store) has its own tests.
    monkeypatch.setenv("ORCH_TRACKING", "0")
    return write_config(
        f"""
        project: native
        providers:
          anthropic:
            api_base: {servers.anthropic.url}
          gemini:
            auth_profile: google_ai
            api_base: {servers.gemini.url}
            options: {{api_version: v1beta}}
          gpu1:
            type: ollama
            api_base: {servers.ollama.url}
            options: {{num_ctx: 8192, keep_alive: 10m}}
        roles:
          llm.writer:
            provider: anthropic
            model: claude-loopback-1
            params: {{max_tokens: 200, temperature: 0.5}}
          llm.reviewer:
            provider: gemini
            model: gemini-loopback
            params: {{temperature: 0, max_tokens: 100}}
          llm.local:
            provider: gpu1
            model: "llama3.1:8b"
            params: {{max_tokens: 64, seed: 1}}
        """
    )


@pytest.fixture
def client(config_path: Path) -> Iterator[Orchestrator]:
    client = orchlab.get_llm_client(config_path)
    yield client
    client.close()


def check_wire(servers: Servers, role: str, *, stream: bool) -> None:
    """What the SDK put on the wire for ``role``: the provider's own shape of the same call."""
    sent = servers.of(role).last
    if role == "llm.writer":
        assert sent.route == "/v1/messages"
        assert sent.header("authorization") == f"Bearer {ANTHROPIC_KEY}"
        assert sent.body["system"] == "Be brief."
        assert sent.body["messages"] == [{"role": "user", "content": "name three colors"}]
        assert (sent.body["max_tokens"], sent.body["temperature"]) == (200, 0.5)
        assert sent.body.get("stream", False) is stream
    elif role == "llm.reviewer":
        method = "streamGenerateContent" if stream else "generateContent"
        assert sent.route == f"/v1beta/models/gemini-loopback:{method}"
        assert sent.header("x-goog-api-key") == GEMINI_KEY
        assert sent.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
        assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "name three colors"}]}]
        assert sent.body["generationConfig"] == {"temperature": 0, "maxOutputTokens": 100}
    else:
        assert sent.route == "/api/chat"
        assert sent.body["messages"] == MESSAGES
        assert sent.body["options"] == {"num_ctx": 8192, "num_predict": 64, "seed": 1}
        assert (sent.body["keep_alive"], sent.body["stream"]) == ("10m", stream)


def check_response(response: orchlab.LLMResponse | None, role: str) -> None:
    assert response is not None
    provider, model = ROLES[role]
    assert response.content == ANSWER
    assert (response.provider, response.role) == (provider, role)
    assert response.model.startswith(model)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (TOKENS_IN, TOKENS_OUT)


@pytest.mark.parametrize("role", list(ROLES))
def test_run(client: Orchestrator, servers: Servers, role: str) -> None:
    response = client.run(role, MESSAGES)
    check_response(response, role)
    check_wire(servers, role, stream=False)


@pytest.mark.parametrize("role", list(ROLES))
async def test_arun(client: Orchestrator, servers: Servers, role: str) -> None:
    response = await client.arun(role, MESSAGES)
    check_response(response, role)
    check_wire(servers, role, stream=False)


@pytest.mark.parametrize("role", list(ROLES))
def test_stream_sync(client: Orchestrator, servers: Servers, role: str) -> None:
    stream = client.stream(role, MESSAGES)
    deltas = list(stream)
    assert len(deltas) == 4 and "".join(deltas) == ANSWER
    check_response(stream.response, role)
    check_wire(servers, role, stream=True)


@pytest.mark.parametrize("role", list(ROLES))
async def test_stream_async(client: Orchestrator, servers: Servers, role: str) -> None:
    stream = client.stream(role, MESSAGES)
    deltas = [d async for d in stream]
    assert len(deltas) == 4 and "".join(deltas) == ANSWER
    check_response(stream.response, role)
    check_wire(servers, role, stream=True)


async def test_all_three_concurrently_from_one_client(config_path: Path, servers: Servers) -> None:
    client = orchlab.get_llm_client(config_path)
    try:
        responses = await asyncio.gather(*(client.arun(role, MESSAGES) for role in ROLES))
    finally:
        await client.aclose()
    for role, response in zip(ROLES, responses, strict=True):
        check_response(response, role)
    assert [len(s.requests) for s in (servers.anthropic, servers.gemini, servers.ollama)] == [1, 1, 1]


def test_discovery_through_the_client(client: Orchestrator) -> None:
    found = {name: client.provider(name).list_models_sync() for name in ("anthropic", "gemini", "gpu1")}
    assert [m.id for m in found["anthropic"]] == ["claude-loopback-1"]
    assert [(m.id, m.context_window) for m in found["gemini"]] == [("gemini-loopback", 1048576)]
    assert [(m.id, m.context_window, m.family) for m in found["gpu1"]] == [("llama3.1:8b", 131072, "llama")]
    assert all(client.provider(name).is_available_sync() for name in found)


def test_building_the_adapters_imports_no_sdk(config_path: Path) -> None:
    """``import orchlab`` and building the three adapters load no provider SDK (they load on first call)."""
    code = (
        "import json, sys, orchlab\n"
        f"client = orchlab.get_llm_client({str(config_path)!r})\n"
        "names = [type(client.provider(n)).__name__ for n in ('anthropic', 'gemini', 'gpu1')]\n"
        "sdks = ('anthropic', 'google.genai', 'ollama', 'httpx2', 'aiohttp')\n"
        "sdks = [m for m in sdks if m in sys.modules]\n"
        "print(json.dumps([names, sdks]))\n"
    )
    env = {
        "ORCH_AUTH_ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ORCH_AUTH_GOOGLE_AI_API_KEY": GEMINI_KEY,
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    names, sdks = json.loads(out.stdout)
    assert names == ["AnthropicProvider", "GeminiProvider", "OllamaProvider"]
    assert sdks == []


@pytest.mark.parametrize("role", list(ROLES))
def test_a_stream_left_early_does_not_break_the_next_call(
    client: Orchestrator, servers: Servers, role: str
) -> None:
    for delta in client.stream(role, MESSAGES):
        assert delta.strip() == "echo:"
        break
    check_response(client.run(role, MESSAGES), role)
    assert len(servers.of(role).requests) == 2
