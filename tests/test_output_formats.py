"""``format="raw" | "markdown" | "json"`` on run/arun/complete, and formatters a user adds
(`register_formatter`, or an installed entry point of the group ``orchlab.formatters``)."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import InvalidRequestError, OutputValidationError, PluginError
from orchlab.orchestrator import Orchestrator
from orchlab.output.formats import FORMATTERS, Formatted, markdown, register_formatter, unregister_formatter
from orchlab.providers.openai import JSON_INSTRUCTION
from tests.servers import anthropic_wire, gemini_wire, ollama_wire
from tests.servers.anthropic_wire import AnthropicWireServer
from tests.servers.gemini_wire import GeminiWireServer
from tests.servers.ollama_wire import OllamaWireServer
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

FAKE = """
project: t
providers:
  fake: {type: test}
roles:
  r: {provider: fake, model: m}
  chain: {provider: fake, model: m, fallbacks: ["fake:n"]}
"""
ASK = [{"role": "user", "content": "Go"}]


@pytest.fixture
def fake(client_for: Callable[..., Orchestrator]) -> Orchestrator:
    return client_for(FAKE)


def test_markdown_closes_fences_and_ends_with_one_newline() -> None:
    assert markdown("# Title  \r\n\r\nSome text\t\n\n\n") == "# Title\n\nSome text\n"
    assert markdown("Code:\n```python\nprint(1)") == "Code:\n```python\nprint(1)\n```\n"
    assert markdown("```\na\n```\n~~~\nb") == "```\na\n```\n~~~\nb\n~~~\n"
    assert markdown("```\na\n```") == "```\na\n```\n"


def test_raw_is_the_text_as_generated(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", "  two  spaces\n\n")
    assert fake.run("r", ASK, format="raw").content == "  two  spaces\n\n"
    fake.provider("fake").script("m", "  two  spaces\n\n")
    assert fake.run("r", ASK, format="markdown").content == "  two  spaces\n"


async def test_json_is_the_parsed_value_from_prose_or_fences(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", 'Sure: {"a": [1, 2], "b": "é"} done', "```json\n[1, 2]\n```")
    r = fake.run("r", ASK, format="json")
    assert r.output == {"a": [1, 2], "b": "é"}
    assert r.content == '{"a": [1, 2], "b": "é"}'
    r = await fake.arun("r", ASK, format="json")
    assert r.output == [1, 2]


def test_json_without_json_is_an_output_validation_error(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", "no json here")
    with pytest.raises(OutputValidationError, match="format 'json': the answer holds no JSON value") as info:
        fake.run("r", ASK, format="json")
    assert info.value.raw == "no json here"


def test_an_unknown_format_is_refused_before_anything_is_sent(fake: Orchestrator) -> None:
    with pytest.raises(InvalidRequestError, match="unknown format 'jsn'; did you mean 'json'") as info:
        fake.run("r", ASK, format="jsn")
    assert info.value.parameter == "format"
    with pytest.raises(InvalidRequestError, match="format='json' and output= do not combine"):
        fake.complete("Go", role="r", format="json", output=dict)
    assert fake.provider("fake").calls == []


def test_a_formatter_you_add_works_on_run_and_complete_with_a_strategy(fake: Orchestrator) -> None:
    register_formatter("shout", lambda text: text.upper())
    register_formatter("words", lambda text: Formatted(text, text.split()))
    try:
        fake.provider("fake").script("m", "hello there", "a b c")
        assert fake.run("r", ASK, format="shout").content == "HELLO THERE"
        r = fake.complete("Go", role="chain", format="words")
        assert r.output == ["a", "b", "c"] and r.decision is not None
        assert "shout" in FORMATTERS.known()
    finally:
        unregister_formatter("shout")
        unregister_formatter("words")
    with pytest.raises(PluginError, match="'json' is a built-in format and cannot be replaced"):
        register_formatter("json", str.strip)
    with pytest.raises(PluginError, match="a format name is lower case"):
        register_formatter("Bad Name", str.strip)
    assert orchlab.register_formatter is register_formatter


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A distribution on sys.path declaring ``title = tidy_fmt:title`` in ``orchlab.formatters``."""
    (tmp_path / "tidy_fmt.py").write_text("def title(text):\n    return text.title()\n")
    info = tmp_path / "tidy_fmt-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tidy-fmt\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[orchlab.formatters]\ntitle = tidy_fmt:title\n")
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    FORMATTERS.installed(refresh=True)
    yield tmp_path
    sys.path.remove(str(tmp_path))
    importlib.invalidate_caches()
    FORMATTERS.installed(refresh=True)
    sys.modules.pop("tidy_fmt", None)


def test_an_installed_formatter_is_found_by_its_entry_point(fake: Orchestrator, installed: Path) -> None:
    fake.provider("fake").script("m", "hello there")
    assert fake.run("r", ASK, format="title").content == "Hello There"


# --- format="json" is constrained where the provider can: the request each SDK sends ------------

DATA = {"city": "Paris", "n": 2}
SAY_JSON = [{"role": "user", "content": "Paris and 2 as JSON"}]


def one_role(name: str, kind: str, api_base: str, model: str, profile: str | None = None) -> str:
    auth = f"auth_profile: {profile}, " if profile else ""
    return (
        f"project: t\nproviders:\n  {name}: {{type: {kind}, {auth}api_base: '{api_base}'}}\n"
        f"roles:\n  r: {{provider: {name}, model: '{model}'}}\n"
    )


def test_openai_json_mode_and_a_system_line_when_no_message_says_json(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_O_API_KEY", "sk-test")
    with OpenAIWireServer() as server:
        client = client_for(one_role("oa", "openai", server.base_url, "gpt-4.1-mini", profile="o"))
        for _ in range(4):
            server.push(
                Reply(
                    body=completion_body(
                        json.dumps(DATA), model="gpt-4.1-mini", prompt_tokens=5, completion_tokens=9
                    )
                )
            )
        r = client.run("r", SAY_JSON, format="json")
        said = server.last.body
        client.run("r", ASK, format="json")
        silent = server.last.body
        client.complete(ASK, role="r", strategy="single", format="json")
        completed = server.last.body
        client.run("r", ASK)
        plain = server.last.body
    assert r.output == DATA
    assert said["response_format"] == {"type": "json_object"}
    assert said["messages"] == SAY_JSON  # it already asks for JSON: nothing added
    # OpenAI refuses JSON mode unless a message says JSON: one system line says it
    assert silent["response_format"] == {"type": "json_object"}
    assert silent["messages"] == [{"role": "system", "content": JSON_INSTRUCTION}, *ASK]
    assert completed["response_format"] == {"type": "json_object"}
    assert "response_format" not in plain and plain["messages"] == ASK


def test_json_mode_reaches_every_candidate_of_a_strategy(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_O_API_KEY", "sk-test")
    with OpenAIWireServer() as server:
        client = client_for(one_role("oa", "openai", server.base_url, "a", profile="o"))
        for model in ("a", "b"):
            server.push(
                Reply(
                    body=completion_body(json.dumps(DATA), model=model, prompt_tokens=5, completion_tokens=9)
                )
            )
        r = client.complete(SAY_JSON, candidates=["oa:a", "oa:b"], strategy="ensemble", format="json")
        bodies = [req.body for req in server.requests]
    assert r.output == DATA
    assert sorted(b["model"] for b in bodies) == ["a", "b"]
    assert [b["response_format"] for b in bodies] == [{"type": "json_object"}] * 2


def test_ollama_json_mode_is_format_json(client_for: Callable[..., Orchestrator]) -> None:
    with OllamaWireServer() as server:
        client = client_for(one_role("gpu", "ollama", server.url, "llama3.2:1b"))
        server.push(
            ollama_wire.Reply(
                body=ollama_wire.chat_body(
                    json.dumps(DATA), model="llama3.2:1b", prompt_eval_count=5, eval_count=9
                )
            )
        )
        r = client.run("r", SAY_JSON, format="json")
        body = server.last.body
    assert r.output == DATA
    assert body["format"] == "json"


def test_gemini_json_mode_is_the_json_mime_type_without_a_schema(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_G_API_KEY", "g-test")
    with GeminiWireServer() as server:
        client = client_for(one_role("gem", "gemini", server.url, "gemini-2.5-flash", profile="g"))
        server.push(
            gemini_wire.Reply(
                body=gemini_wire.response_body(
                    json.dumps(DATA), model="gemini-2.5-flash", usage=gemini_wire.usage_metadata(5, 9)
                )
            )
        )
        r = client.run("r", SAY_JSON, format="json")
        config = server.last.body["generationConfig"]
    assert r.output == DATA
    assert config["responseMimeType"] == "application/json"
    assert "responseSchema" not in config


def test_anthropic_has_no_json_mode_the_json_is_extracted(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-ant-test")
    with AnthropicWireServer() as server:
        client = client_for(one_role("claude", "anthropic", server.url, "claude-loopback-1", profile="a"))
        server.push(
            anthropic_wire.Reply(
                body=anthropic_wire.message_body(
                    f"Here: {json.dumps(DATA)}", model="claude-loopback-1", input_tokens=5, output_tokens=9
                )
            )
        )
        r = client.run("r", SAY_JSON, format="json")
        body = server.last.body
    assert r.output == DATA
    assert body["messages"] == SAY_JSON
    assert not {"tools", "tool_choice", "output_format"} & set(body)


@pytest.mark.slow
def test_the_local_model_answers_parseable_json_through_the_json_grammar() -> None:
    from orchlab.providers.llamacpp import any_json_grammar

    assert "root   ::= object" in any_json_grammar()._grammar
    ask = [{"role": "user", "content": "What color is the sky?"}]
    with orchlab.get_llm_client() as client:
        r = client.run("llm.inference", ask, format="json", params_override={"max_tokens": 48})
        plain = client.run("llm.inference", ask, params_override={"max_tokens": 48})
    assert isinstance(r.output, dict)
    assert json.loads(r.content) == r.output
    assert not plain.content.lstrip().startswith("{")  # unconstrained, the base model writes prose
