"""Tools through the gateway (issue 17 item 5): the official openai SDK plays a tool-using agent
against ``/v1/chat/completions`` (plain and streamed), with an OpenAI-wire and an Anthropic-wire
upstream. The loopback servers script the agent of tests/servers/tool_agent.py: its final answer
is built from the tool results it received, so it proves the round trip in both directions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.serve_support import serve_fixture  # noqa: F401
from tests.servers import anthropic_wire, openai_wire, tool_agent

TASK = "What is the weather in Paris and Oslo, and the sum of the two temperatures?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The temperature in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "a + b",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]
KINDS = {
    "openai": (openai_wire.OpenAIWireServer, "gpt-4.1-mini", lambda s: s.base_url),
    "anthropic": (anthropic_wire.AnthropicWireServer, "claude-loopback-1", lambda s: s.url),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def upstream(kind: str) -> Iterator[Any]:
    with KINDS[kind][0]() as srv:
        yield srv


def config(kind: str, server: Any) -> str:
    _, model, base = KINDS[kind]
    return f"""
project: gw-tools
tracking: {{enabled: false}}
providers:
  up: {{type: {kind}, api_base: "{base(server)}", auth_profile: up, max_retries: 0}}
roles:
  assistant: {{provider: up, model: "{model}"}}
"""


def run_tool(name: str, arguments: str) -> str:
    args = json.loads(arguments)
    if name == "get_weather":
        return json.dumps({"city": args["city"], "temp_c": tool_agent.TEMPS[args["city"]]})
    return json.dumps(args["a"] + args["b"])


def streamed(sdk: openai.OpenAI, messages: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """One streamed completion, its deltas joined as OpenAI's own docs do (tool calls by index)."""
    text, calls, finish = "", {}, None
    for chunk in sdk.chat.completions.create(model="assistant", messages=messages, tools=TOOLS, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            text += choice.delta.content or ""
            for d in choice.delta.tool_calls or ():
                call = calls.setdefault(
                    d.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                call["id"] = d.id or call["id"]
                call["function"]["name"] += d.function.name or ""
                call["function"]["arguments"] += d.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, finish


def agent(sdk: openai.OpenAI, *, stream: bool) -> tuple[str, list[tuple[str | None, list[str]]]]:
    """Run the agent loop; the final text and each step's (finish_reason, called tool names)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    steps = []
    for _ in range(4):
        if stream:
            message, finish = streamed(sdk, messages)
        else:
            choice = sdk.chat.completions.create(model="assistant", messages=messages, tools=TOOLS).choices[0]
            message, finish = choice.message.model_dump(exclude_none=True), choice.finish_reason
        calls = message.get("tool_calls") or []
        steps.append((finish, [c["function"]["name"] for c in calls]))
        if not calls:
            return str(message["content"]), steps
        messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
        for c in calls:
            content = run_tool(c["function"]["name"], c["function"]["arguments"])
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": content})
    raise AssertionError(f"no final answer after {steps}")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_tool_agent_runs_through_the_gateway_on_either_wire(serve, kind, upstream, stream: bool) -> None:
    served = serve(config(kind, upstream))
    sdk = openai.OpenAI(base_url=served.base_url, api_key="caller-key", max_retries=0)
    final, steps = agent(sdk, stream=stream)
    assert final == tool_agent.FINAL
    assert steps == [
        ("tool_calls", ["get_weather", "get_weather"]),
        ("tool_calls", ["add"]),
        ("stop", []),
    ]
    last = upstream.last.body
    if kind == "openai":  # the tool results went back in the upstream's own shape
        assert [m["role"] for m in last["messages"]] == [
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "tool",
        ]
        assert last["messages"][-1]["content"] == "35"
    else:
        results = [
            b["content"]
            for m in last["messages"]
            for b in m["content"]
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        assert [json.loads(r if isinstance(r, str) else r[0]["text"]) for r in results] == [
            {"city": "Paris", "temp_c": 21},
            {"city": "Oslo", "temp_c": 14},
            35,
        ]
        assert [t["name"] for t in last["tools"]] == ["get_weather", "add"]


def test_tool_choice_and_parallel_tool_calls_reach_the_upstream(serve) -> None:
    with openai_wire.OpenAIWireServer() as up:
        served = serve(config("openai", up))
        sdk = openai.OpenAI(base_url=served.base_url, api_key="caller-key", max_retries=0)
        sdk.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "2+3?"}],
            tools=TOOLS[1:],
            tool_choice={"type": "function", "function": {"name": "add"}},
            parallel_tool_calls=False,
        )
        sent = up.last.body
    assert [t["function"]["name"] for t in sent["tools"]] == ["add"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert sent["parallel_tool_calls"] is False


def test_a_tool_result_for_no_call_is_a_400_naming_it(serve) -> None:
    with openai_wire.OpenAIWireServer() as up:
        served = serve(config("openai", up))
        sdk = openai.OpenAI(base_url=served.base_url, api_key="caller-key", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            sdk.chat.completions.create(
                model="assistant",
                messages=[
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "tool_call_id": "call_x", "content": "1"},
                ],
            )
        assert up.requests == []
    assert "messages[1].tool_call_id is 'call_x'" in info.value.message
    assert info.value.body["param"] == "messages[1].tool_call_id"
