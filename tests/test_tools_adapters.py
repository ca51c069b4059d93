"""Tools on every adapter (issue 17 item 1), through each official SDK against its loopback wire
server: the exact request sent for tools, tool_choice, tool calls and tool results, and the
`ToolCall`s parsed from JSON and streamed answers (two parallel calls to one function)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab.errors import UnsupportedCapabilityError
from orchlab.orchestrator import Orchestrator
from orchlab.tools.model import ToolCall
from tests.servers import anthropic_wire, gemini_wire, ollama_wire, openai_wire
from tests.servers.loopback import LoopbackServer

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "the city"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = orchlab.Tool("get_weather", "The weather in a city.", SCHEMA)
ADD = orchlab.Tool("add", "Add two integers.", {"type": "object", "properties": {"a": {}, "b": {}}})
# a conversation in which the model called get_weather twice at once and both results came back
HISTORY: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "call_p",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_o",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_p", "content": '{"temp_c": 21}'},
    {"role": "tool", "tool_call_id": "call_o", "content": "station offline", "is_error": True},
]
ASK = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
KINDS = {
    "openai": (openai_wire.OpenAIWireServer, "gpt-4.1-mini", lambda s: s.base_url),
    "anthropic": (anthropic_wire.AnthropicWireServer, "claude-loopback-1", lambda s: s.url),
    "gemini": (gemini_wire.GeminiWireServer, "gemini-loopback", lambda s: s.url),
    "ollama": (ollama_wire.OllamaWireServer, "llama3.1:8b", lambda s: s.url),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str) -> Iterator[Any]:
    with KINDS[kind][0]() as srv:
        yield srv


@pytest.fixture
def client(
    kind: str, server: Any, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> Orchestrator:
    monkeypatch.setenv("ORCH_AUTH_T_API_KEY", "k-tools-0123456789")
    _, model, base = KINDS[kind]
    return client_for(
        f"""\
        project: tools
        providers:
          p: {{type: {kind}, api_base: "{base(server)}", auth_profile: t}}
        roles:
          r: {{provider: p, model: "{model}"}}
        """
    )


def sent(server: LoopbackServer) -> dict[str, Any]:
    body = server.requests[-1].body
    assert isinstance(body, dict)
    return body


# --- what each SDK sends ----------------------------------------------------------------------

GOLDEN_OPENAI = {
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": SCHEMA,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": HISTORY[2]["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_p", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "call_o", "content": "station offline"},
    ],
}
GOLDEN_ANTHROPIC = {
    "tools": [{"name": "get_weather", "description": "The weather in a city.", "input_schema": SCHEMA}],
    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    "system": "Be brief.",
    "messages": [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_p", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_o", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_p", "content": '{"temp_c": 21}'},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_o",
                    "content": "station offline",
                    "is_error": True,
                },
            ],
        },
    ],
}
GOLDEN_GEMINI = {
    "tools": [
        {
            "functionDeclarations": [
                # the SDK sends this field's name as it is spelt in Python (the API reads both)
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters_json_schema": SCHEMA,
                }
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris and Oslo?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": '{"temp_c": 21}'}}},
                {"functionResponse": {"name": "get_weather", "response": {"error": "station offline"}}},
            ],
        },
    ],
}
GOLDEN_OLLAMA = {
    # the ollama SDK validates tools with its own model, which has no additionalProperties
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": {k: v for k, v in SCHEMA.items() if k != "additionalProperties"},
            },
        }
    ],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            ],
        },
        {"role": "tool", "content": '{"temp_c": 21}', "tool_name": "get_weather"},
        {"role": "tool", "content": "station offline", "tool_name": "get_weather"},
    ],
}
GOLDEN = {
    "openai": GOLDEN_OPENAI,
    "anthropic": GOLDEN_ANTHROPIC,
    "gemini": GOLDEN_GEMINI,
    "ollama": GOLDEN_OLLAMA,
}


def _normalise(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request's tool-related parts, as the golden files hold them."""
    keys = {
        "openai": ("tools", "tool_choice", "parallel_tool_calls", "messages"),
        "anthropic": ("tools", "tool_choice", "system", "messages"),
        "gemini": ("tools", "toolConfig", "systemInstruction", "contents"),
        "ollama": ("tools", "messages"),
    }[kind]
    out = {k: body.get(k) for k in keys}
    if kind == "ollama":
        out["messages"] = [
            {k: v for k, v in m.items() if k not in ("images", "thinking")} for m in out["messages"]
        ]
    return out


def test_the_request_carries_tools_choice_calls_and_results(
    kind: str, server: Any, client: Orchestrator
) -> None:
    choice = "auto" if kind == "ollama" else "get_weather"  # Ollama has no tool_choice
    client.run("r", HISTORY, tools=[WEATHER], tool_choice=choice, parallel_tool_calls=False)
    assert _normalise(kind, sent(server)) == GOLDEN[kind]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"openai": "auto", "anthropic": {"type": "auto"}, "gemini": "AUTO"}),
        ("none", {"openai": "none", "anthropic": {"type": "none"}, "gemini": "NONE"}),
        ("required", {"openai": "required", "anthropic": {"type": "any"}, "gemini": "ANY"}),
    ],
)
def test_tool_choice_maps_to_each_wire_format(
    kind: str, server: Any, client: Orchestrator, choice: str, expected: dict[str, Any]
) -> None:
    if kind == "ollama":
        if choice == "required":
            with pytest.raises(UnsupportedCapabilityError, match="Ollama's chat API has no tool_choice"):
                client.run("r", ASK, tools=[WEATHER], tool_choice=choice)
            assert server.requests == []  # refused before anything was sent
        else:
            client.run("r", ASK, tools=[WEATHER], tool_choice=choice)
            assert bool(sent(server).get("tools")) == (choice == "auto")  # the SDK sends "tools": []
        return
    client.run("r", ASK, tools=[WEATHER], tool_choice=choice)
    body = sent(server)
    got = {
        "openai": lambda: body["tool_choice"],
        "anthropic": lambda: body["tool_choice"],
        "gemini": lambda: body["toolConfig"]["functionCallingConfig"]["mode"],
    }[kind]()
    assert got == expected[kind]


# --- what is parsed ------------------------------------------------------------------------------


def _two_calls(kind: str, model: str, stream: bool) -> Any:
    calls = [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    if kind == "openai":
        ids = [(f"call_{'ab'[i]}", n, json.dumps(a)) for i, (n, a) in enumerate(calls)]
        return (
            openai_wire.Reply(stream_chunks=openai_wire.tool_calls_chunks(ids, model=model))
            if stream
            else openai_wire.Reply(body=openai_wire.tool_calls_body(ids, model=model))
        )
    if kind == "anthropic":
        ids3 = [(f"toolu_{i}", n, a) for i, (n, a) in enumerate(calls)]
        return (
            anthropic_wire.stream_reply(anthropic_wire.tool_uses_events(ids3, model=model))
            if stream
            else anthropic_wire.Reply(body=anthropic_wire.tool_uses_body(ids3, model=model))
        )
    if kind == "gemini":
        return (
            gemini_wire.stream_reply(gemini_wire.function_call_frames(calls, model=model))
            if stream
            else gemini_wire.Reply(body=gemini_wire.function_calls_body(calls, model=model))
        )
    return (
        ollama_wire.stream_reply(ollama_wire.tool_calls_lines(calls, model=model))
        if stream
        else ollama_wire.Reply(body=ollama_wire.tool_calls_body(calls, model=model))
    )


@pytest.mark.parametrize("via", ["run", "stream"])
def test_parallel_calls_to_one_function_are_parsed(
    kind: str, server: Any, client: Orchestrator, via: str
) -> None:
    model = KINDS[kind][1]
    server.push(_two_calls(kind, model, via == "stream"))
    if via == "run":
        response = client.run("r", ASK, tools=[WEATHER])
    else:
        stream = client.stream("r", ASK, tools=[WEATHER])
        assert stream.text() == ""
        assert stream.response is not None
        response = stream.response
    calls = response.tool_calls
    assert [(c.name, dict(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert json.loads(calls[0].raw_arguments) == {"city": "Paris"}
    ids = [c.id for c in calls]
    assert len(set(ids)) == 2 and "get_weather" not in ids
    if kind == "openai":
        assert ids == ["call_a", "call_b"]
    elif kind == "anthropic":
        assert ids == ["toolu_0", "toolu_1"]
    else:  # Gemini and Ollama give no ids: minted
        assert all(i.startswith("call_") and len(i) == 31 for i in ids)
    assert response.content == "" and response.usage.output_tokens == 7


@pytest.mark.parametrize("via", ["for", "async for"])
def test_a_stream_s_events_deliver_its_tool_calls(
    kind: str, server: Any, client: Orchestrator, via: str
) -> None:
    """``stream.events()`` yields the calls a streamed answer makes (a plain ``for`` over the stream
    still yields text only); ``stream.tool_calls`` holds them once it has ended."""
    model = KINDS[kind][1]
    server.push(_two_calls(kind, model, True))
    stream = client.stream("r", ASK, tools=[WEATHER])
    assert stream.tool_calls == ()
    if via == "for":
        events = list(stream.events())
    else:

        async def collect() -> list[object]:
            return [event async for event in stream.events()]

        events = asyncio.run(collect())
    assert [(e.name, dict(e.arguments)) for e in events if isinstance(e, ToolCall)] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert len(events) == 2
    assert stream.tool_calls == tuple(events) and stream.response is not None
    assert stream.response.tool_calls == stream.tool_calls


def test_events_give_the_text_then_the_calls_and_a_plain_loop_the_text_only(
    client_for: Callable[..., Orchestrator], openai_server: Any
) -> None:
    calls = [("call_a", "get_weather", '{"city": "Paris"}')]
    chunks = openai_wire.tool_calls_chunks(calls, model="m")
    text = [
        {**chunks[0], "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
        for t in ("Let me ", "check.")
    ]
    client = client_for(
        f"""\
        project: tools
        providers:
          remote: {{type: vllm, api_base: "{openai_server.base_url}"}}
        roles:
          r: {{provider: remote, model: m}}
        """
    )
    openai_server.push(*(openai_wire.Reply(stream_chunks=[chunks[0], *text, *chunks[1:]]) for _ in range(2)))
    events = list(client.stream("r", ASK, tools=[WEATHER]).events())
    assert events[:2] == ["Let me ", "check."]
    assert [(c.id, c.name, c.raw_arguments) for c in events[2:]] == [
        ("call_a", "get_weather", '{"city": "Paris"}')
    ]  # type: ignore[union-attr]
    plain = client.stream("r", ASK, tools=[WEATHER])
    assert list(plain) == ["Let me ", "check."]
    assert [c.id for c in plain.tool_calls] == ["call_a"]


def test_a_call_answered_in_a_conversation_continues_it(kind: str, server: Any, client: Orchestrator) -> None:
    """A parsed call goes back as it came (the model's id, the arguments), then its result."""
    model = KINDS[kind][1]
    server.push(_two_calls(kind, model, False))
    first = client.run("r", ASK, tools=[WEATHER])
    history = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [c.to_openai() for c in first.tool_calls]},
        *[{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in first.tool_calls],
    ]
    answer = client.run("r", history, tools=[WEATHER])
    assert answer.tool_calls == () and answer.content.startswith("echo")
    assert isinstance(first.tool_calls[0], ToolCall)


# --- llama.cpp in-process: refused, never faked ----------------------------------------------------


def test_the_local_base_model_refuses_tools_naming_itself(
    client_for: Callable[..., Orchestrator], gguf_path: Path
) -> None:
    client = client_for(
        """\
        project: t
        providers: {local: {type: llamacpp}}
        roles: {r: {provider: local, model: gemma-3-270m}}
        """
    )
    with pytest.raises(UnsupportedCapabilityError) as info:
        client.run("r", ASK, tools=[WEATHER])
    err = info.value
    assert (err.provider, err.model) == ("local", "gemma-3-270m")
    assert "gemma-3-270m runs in-process through llama.cpp with the chat format" in str(err)
    assert "does not fake tool calls" in str(err)
    with pytest.raises(UnsupportedCapabilityError):
        client.run("r", HISTORY)  # a conversation with tool turns cannot be rendered either
    assert client.run("r", ASK, {"max_tokens": 4}).tool_calls == ()
