"""Structured output: ``run(role, messages, output=Model)`` -> ``response.output``.

The validate-and-retry loop runs against the scriptable test provider; each provider's native
mechanism is checked on the wire through its official SDK against the loopback servers; the
in-process local model answers through a grammar built from the schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from orchlab.errors import InvalidRequestError, OutputValidationError
from orchlab.orchestrator import Orchestrator
from orchlab.output.structured import output_schema, parse, strict_schema
from orchlab.tools.model import Tool
from orchlab.types import Message, ModelRequest
from tests.servers import anthropic_wire, gemini_wire, ollama_wire
from tests.servers.anthropic_wire import AnthropicWireServer
from tests.servers.gemini_wire import GeminiWireServer
from tests.servers.ollama_wire import OllamaWireServer
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body


class City(BaseModel):
    name: str
    country: str
    population_m: float | None = None


PARIS = {"name": "Paris", "country": "France", "population_m": 2.1}
ASK = [{"role": "user", "content": "The capital of France?"}]

FAKE = """
project: t
providers:
  fake: {type: test, options: {default: {input_price_per_mtok: 1000000, output_price_per_mtok: 1000000}}}
roles:
  r: {provider: fake, model: m}
  chain: {provider: fake, model: bad, fallbacks: ["fake:m"]}
"""


def one_role(name: str, kind: str, api_base: str, model: str, profile: str | None = None) -> str:
    """A config with one provider entry and the role ``r`` on ``model``."""
    auth = f"auth_profile: {profile}, " if profile else ""
    return (
        f"project: t\nproviders:\n  {name}: {{type: {kind}, {auth}api_base: '{api_base}'}}\n"
        f"roles:\n  r: {{provider: {name}, model: '{model}'}}\n"
    )


@pytest.fixture
def fake(client_for: Callable[..., Orchestrator]) -> Orchestrator:
    return client_for(FAKE)


# --- the schema and the parser ------------------------------------------------------------------


def test_output_must_be_a_pydantic_model_class() -> None:
    for bad in (dict, City(name="a", country="b"), "City"):
        with pytest.raises(InvalidRequestError, match="output= takes a pydantic model class") as info:
            output_schema(bad)
        assert info.value.parameter == "output"


def test_strict_schema_closes_every_object_and_requires_every_field() -> None:
    class Trip(BaseModel):
        cities: list[City]
        note: str = "none"

    schema, strict = strict_schema(output_schema(Trip).schema)
    assert strict is True
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["cities", "note"]
    assert "default" not in schema["properties"]["note"]
    city = schema["$defs"]["City"]
    assert city["additionalProperties"] is False
    assert city["required"] == ["name", "country", "population_m"]

    class Tags(BaseModel):
        counts: dict[str, int]

    _, strict = strict_schema(output_schema(Tags).schema)
    assert strict is False  # an open mapping cannot be strict


def test_parse_finds_the_json_in_prose_and_fences() -> None:
    spec = output_schema(City)
    for text in (
        json.dumps(PARIS),
        "Sure! ```json\n" + json.dumps(PARIS) + "\n```",
        "Here it is: " + json.dumps(PARIS) + " -- hope it helps",
    ):
        value, errors = parse(spec, text)
        assert value == City(**PARIS) and errors == []
    value, errors = parse(spec, 'Here: {"name": 3}')
    assert value is None
    assert [(e["loc"], e["type"]) for e in errors] == [(("name",), "string_type"), (("country",), "missing")]


# --- validate and retry -------------------------------------------------------------------------


def test_a_valid_answer_becomes_the_output_in_one_try(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", json.dumps(PARIS))
    r = fake.run("r", ASK, output=City)
    assert r.output == City(**PARIS)
    assert r.content == json.dumps(PARIS)
    assert [a.outcome for a in r.decision.attempts] == ["ok"]
    # the test provider cannot enforce a schema: it is asked for in a system message
    sent = fake.provider("fake").calls[-1].messages
    assert sent[0].role == "system" and '"required":["name","country"]' in sent[0].content


def test_an_invalid_answer_is_retried_with_the_errors_and_every_try_is_paid(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", 'Here: {"name": 3}', json.dumps(PARIS))
    r = fake.run("r", ASK, output=City)
    assert r.output == City(**PARIS)
    attempts = r.decision.attempts
    assert [(a.stage, a.outcome) for a in attempts] == [("(invalid output)", "rejected"), (None, "ok")]
    assert (
        attempts[0].note == "not a valid City: name: Input should be a valid string; country: Field required"
    )
    # usage and cost of both tries (the test prices are $1 a token)
    assert r.usage == attempts[0].usage + attempts[1].usage
    assert r.cost_usd == pytest.approx(attempts[0].usage.total_tokens + attempts[1].usage.total_tokens)
    retry = fake.provider("fake").calls[-1].messages
    assert retry[-2].role == "assistant" and retry[-2].content == 'Here: {"name": 3}'
    assert retry[-1].content.startswith(
        "That answer is not a valid City: name: Input should be a valid string"
    )
    usage = fake.usage(by="model")
    assert usage[["model", "calls"]].to_dict("records") == [{"model": "m", "calls": 2}]


def test_still_invalid_after_the_retries_raises_with_the_raw_text_and_errors(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", "no idea", "still no idea", '{"name": "Paris"}')
    with pytest.raises(OutputValidationError) as info:
        fake.run("r", ASK, output=City)
    err = info.value
    assert err.raw == '{"name": "Paris"}'
    assert [(e["loc"], e["type"]) for e in err.errors] == [(("country",), "missing")]
    assert err.attempts == 3
    assert "no valid City after 3 answer(s): country: Field required" in str(err)
    assert len(fake.provider("fake").calls) == 3


async def test_arun_and_complete_take_output_too(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", json.dumps(PARIS), "{}", json.dumps(PARIS))
    assert (await fake.arun("r", ASK, output=City)).output == City(**PARIS)
    r = await fake.acomplete("The capital of France?", model="fake:m", output=City)
    assert r.output == City(**PARIS)
    assert [a.outcome for a in r.decision.attempts] == ["rejected", "ok"]


def test_a_fallback_chain_moves_on_from_a_model_that_never_answers_valid(fake: Orchestrator) -> None:
    fake.provider("fake").script("bad", "x", "y", "z")
    fake.provider("fake").script("m", json.dumps(PARIS))
    r = fake.run("chain", ASK, output=City)
    assert r.output == City(**PARIS)
    assert [(a.model, a.outcome) for a in r.decision.attempts] == [
        ("bad", "rejected"),
        ("bad", "rejected"),
        ("bad", "rejected"),
        ("m", "ok"),
    ]
    assert "fake:bad (OutputValidationError)" in r.decision.rationale
    assert r.cost_usd == pytest.approx(sum(a.usage.total_tokens for a in r.decision.attempts))


def test_max_tokens_zero_is_not_retried(fake: Orchestrator) -> None:
    with pytest.raises(OutputValidationError) as info:
        fake.run("r", ASK, {"max_tokens": 0}, output=City)
    assert info.value.attempts == 1
    assert fake.provider("fake").calls == []


# --- each provider's native mechanism, on the wire ----------------------------------------------


def test_openai_sends_a_strict_json_schema(client_for: Callable[..., Orchestrator], monkeypatch) -> None:
    monkeypatch.setenv("ORCH_AUTH_O_API_KEY", "sk-test")
    with OpenAIWireServer() as server:
        client = client_for(one_role("oa", "openai", server.base_url, "gpt-4.1-mini", profile="o"))
        server.push(
            Reply(
                body=completion_body(
                    json.dumps(PARIS), model="gpt-4.1-mini", prompt_tokens=9, completion_tokens=12
                )
            )
        )
        r = client.run("r", ASK, output=City)
        body = server.last.body
    assert r.output == City(**PARIS)
    strict, _ = strict_schema(City.model_json_schema())
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": strict, "strict": True},
    }
    assert body["messages"] == ASK  # the provider enforces the schema: no instruction added


def test_deepseek_gets_json_mode_and_the_schema_in_the_prompt(
    client_for: Callable[..., Orchestrator], monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_D_API_KEY", "sk-test")
    with OpenAIWireServer() as server:
        client = client_for(one_role("ds", "deepseek", server.base_url, "deepseek-chat", profile="d"))
        server.push(
            Reply(
                body=completion_body(
                    json.dumps(PARIS), model="deepseek-chat", prompt_tokens=9, completion_tokens=12
                )
            )
        )
        r = client.run("r", ASK, output=City)
        body = server.last.body
    assert r.output == City(**PARIS)
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system"
    assert json.dumps(City.model_json_schema(), separators=(",", ":")) in body["messages"][0]["content"]


def test_anthropic_forces_a_tool_whose_input_is_the_answer(
    client_for: Callable[..., Orchestrator], monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-ant-test")
    with AnthropicWireServer() as server:
        client = client_for(one_role("claude", "anthropic", server.url, "claude-loopback-1", profile="a"))
        server.push(
            anthropic_wire.Reply(body=anthropic_wire.tool_use_body("City", PARIS, model="claude-loopback-1"))
        )
        r = client.run("r", ASK, output=City)
        body = server.last.body
    assert r.output == City(**PARIS)
    assert json.loads(r.content) == PARIS
    assert body["tools"] == [
        {
            "name": "City",
            "description": "Give the answer as a City.",
            "input_schema": City.model_json_schema(),
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "City"}


def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_anthropic_with_tools_a_real_tool_call_comes_back_unvalidated(
    client_for: Callable[..., Orchestrator], monkeypatch
) -> None:
    """output= and tools= together: the answer tool sits next to the call's tools, the model must
    call one of them (``any``), and a call of a real tool lands in ``tool_calls`` (not taken for
    an invalid answer, not retried)."""
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-ant-test")
    with AnthropicWireServer() as server:
        client = client_for(one_role("claude", "anthropic", server.url, "claude-loopback-1", profile="a"))
        server.push(
            anthropic_wire.Reply(
                body=anthropic_wire.tool_use_body("weather", {"city": "Paris"}, model="claude-loopback-1")
            )
        )
        r = client.run("r", ASK, output=City, tools=[weather])
        body = server.last.body
        sent = len(server.requests)
    assert sent == 1
    assert [(c.name, dict(c.arguments)) for c in r.tool_calls] == [("weather", {"city": "Paris"})]
    assert r.output is None
    assert [t["name"] for t in body["tools"]] == ["weather", "City"]
    assert body["tool_choice"] == {"type": "any"}


def test_anthropic_with_tools_the_answer_tool_gives_the_output(
    client_for: Callable[..., Orchestrator], monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-ant-test")
    with AnthropicWireServer() as server:
        client = client_for(one_role("claude", "anthropic", server.url, "claude-loopback-1", profile="a"))
        server.push(
            anthropic_wire.Reply(
                body=anthropic_wire.tool_uses_body(
                    [("toolu_a", "City", PARIS), ("toolu_b", "weather", {"city": "Paris"})],
                    model="claude-loopback-1",
                )
            ),
            anthropic_wire.Reply(body=anthropic_wire.tool_use_body("City", PARIS, model="claude-loopback-1")),
        )
        both = client.run("r", ASK, output=City, tools=[weather], parallel_tool_calls=False)
        first = server.last.body
        answer = client.run("r", ASK, output=City, tools=[weather], tool_choice="none")
        second = server.last.body
    assert [c.name for c in both.tool_calls] == ["weather"]  # the answer tool is no tool call
    assert json.loads(both.content) == PARIS
    assert first["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert answer.output == City(**PARIS)
    assert answer.tool_calls == ()
    assert second["tool_choice"] == {"type": "tool", "name": "City"}


def test_anthropic_streams_the_answer_tool_as_content(
    client_for: Callable[..., Orchestrator], monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-ant-test")
    spec = output_schema(City)
    with AnthropicWireServer() as server:
        client = client_for(one_role("claude", "anthropic", server.url, "claude-loopback-1", profile="a"))
        server.push(
            anthropic_wire.stream_reply(
                anthropic_wire.tool_uses_events(
                    [("toolu_a", "City", PARIS), ("toolu_b", "weather", {"city": "Paris"})],
                    model="claude-loopback-1",
                )
            )
        )
        request = ModelRequest(
            "claude-loopback-1",
            (Message("user", "The capital of France?"),),
            tools=(Tool("weather", "The weather in a city."),),
            output=spec,
        )

        async def last() -> Any:
            async for chunk in client.provider("claude").stream(request):
                if chunk.response is not None:
                    return chunk.response

        r = asyncio.run(last())
    assert json.loads(r.content) == PARIS
    assert [c.name for c in r.tool_calls] == ["weather"]


def test_anthropic_refuses_a_tool_named_like_the_output_model(
    client_for: Callable[..., Orchestrator], monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-ant-test")

    def City(name: str) -> str:  # the clash is the point
        """A tool named like the output model."""
        return name

    with AnthropicWireServer() as server:
        client = client_for(one_role("claude", "anthropic", server.url, "claude-loopback-1", profile="a"))
        with pytest.raises(InvalidRequestError, match="named 'City' like the output model"):
            client.run("r", ASK, output=globals()["City"], tools=[City])
        assert server.requests == []


def test_gemini_sends_a_response_schema(client_for: Callable[..., Orchestrator], monkeypatch) -> None:
    monkeypatch.setenv("ORCH_AUTH_G_API_KEY", "g-test")
    with GeminiWireServer() as server:
        client = client_for(one_role("gem", "gemini", server.url, "gemini-2.5-flash", profile="g"))
        server.push(
            gemini_wire.Reply(
                body=gemini_wire.response_body(
                    json.dumps(PARIS), model="gemini-2.5-flash", usage=gemini_wire.usage_metadata(9, 12)
                )
            )
        )
        r = client.run("r", ASK, output=City)
        body = server.last.body
    assert r.output == City(**PARIS)
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema["type"] == "OBJECT"
    assert schema["required"] == ["name", "country"]
    assert {k: v["type"] for k, v in schema["properties"].items()} == {
        "name": "STRING",
        "country": "STRING",
        "population_m": "NUMBER",
    }


def test_ollama_sends_the_schema_as_format(client_for: Callable[..., Orchestrator]) -> None:
    with OllamaWireServer() as server:
        client = client_for(one_role("gpu", "ollama", server.url, "llama3.2:1b"))
        server.push(
            ollama_wire.Reply(
                body=ollama_wire.chat_body(
                    json.dumps(PARIS), model="llama3.2:1b", prompt_eval_count=9, eval_count=12
                )
            )
        )
        r = client.run("r", ASK, output=City)
        body = server.last.body
    assert r.output == City(**PARIS)
    assert body["format"] == City.model_json_schema()


# --- the in-process local model: a grammar from the schema -------------------------------------


class Reply3(BaseModel):
    answer: str = Field(max_length=24)
    sure: bool


def test_the_local_model_answers_valid_json_through_a_grammar() -> None:
    import orchlab

    with orchlab.get_llm_client() as client:
        r = client.run(
            "llm.inference", [{"role": "user", "content": "What color is the sky?"}], output=Reply3
        )
        plain = client.run("llm.inference", [{"role": "user", "content": "What color is the sky?"}])
    assert isinstance(r.output, Reply3)
    assert r.output == Reply3.model_validate_json(r.content)
    assert [a.outcome for a in r.decision.attempts] == ["ok"]  # valid at the first try
    assert not plain.content.lstrip().startswith("{")  # unconstrained, the base model writes prose


def test_the_grammar_keeps_control_characters_out_of_json_strings() -> None:
    from orchlab.providers.llamacpp import json_grammar

    grammar = json_grammar(output_schema(Reply3))._grammar
    # llama-cpp-python's converter allows a raw line break inside a string (invalid JSON)
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |' in grammar
    assert 'char ::= [^"\\\\] |' not in grammar


# --- %%llm --output ------------------------------------------------------------------------------


@pytest.fixture
def notebook(write_config: Callable[..., Path]) -> Iterator[tuple[Any, Any]]:
    from IPython.core.interactiveshell import InteractiveShell

    from orchlab.notebook import NotebookSession, set_session

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "orchlab")
    session = NotebookSession(write_config(FAKE))
    session.live_mode = "off"
    set_session(session)
    yield shell, session
    set_session(None)
    session.close()


def test_the_cell_magic_validates_into_a_model_of_the_notebook(notebook: tuple[Any, Any]) -> None:
    from IPython.utils.capture import capture_output

    shell, session = notebook
    shell.user_ns["City"] = City
    session.client_for(None).provider("fake").script("m", "{}", json.dumps(PARIS))
    with capture_output():
        shell.run_cell_magic("llm", "-r r -o ans --output City", "The capital of France?")
    assert shell.user_ns["ans"].output == City(**PARIS)
    assert [a.outcome for a in shell.user_ns["ans"].decision.attempts] == ["rejected", "ok"]


def test_the_cell_magic_names_a_missing_output_model(notebook: tuple[Any, Any]) -> None:
    from IPython.core.error import UsageError

    shell, _ = notebook
    shell.user_ns.pop("Nowhere", None)
    with pytest.raises(UsageError, match="--output Nowhere: no 'Nowhere' in the notebook"):
        shell.run_cell_magic("llm", "-r r --output Nowhere", "The capital of France?")
    with pytest.raises(UsageError, match="--output validates one answer"):
        shell.run_cell_magic("llm", "--compare fake:m,fake:n --output City", "The capital of France?")


def test_the_cell_magic_refuses_output_with_tools(notebook: tuple[Any, Any]) -> None:
    from IPython.core.error import UsageError

    shell, _ = notebook
    shell.user_ns["City"] = City
    with pytest.raises(UsageError, match="--output validates one answer and --tools runs a tool loop"):
        shell.run_cell_magic("llm", "-r r --output City --tools weather", "The capital of France?")
