"""`delegate()` (issue 17 item 4): one task with two tools, one of them called twice at once,
completes against each of the four cloud wire formats (OpenAI, Anthropic, Gemini, Ollama)
through their official SDKs, with the same final answer, the same decision trail and the same
trace shape (a CHAT_MODEL span per step, a TOOL span per tool run).

The loopback servers play the scripted agent of tests/servers/tool_agent.py: its final answer is
built from the tool results it received, so the answer proves the round trip."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab.calls import CallRecord
from orchlab.errors import BudgetExceededError, InvalidRequestError, ToolLoopError
from orchlab.orchestrator import Orchestrator
from orchlab.tracking.records import trace_payload
from tests.servers import anthropic_wire, gemini_wire, ollama_wire, openai_wire, tool_agent

TASK = "What is the weather in Paris and Oslo, and the sum of the two temperatures?"
KINDS = {
    "openai": (openai_wire.OpenAIWireServer, "gpt-4.1-mini", lambda s: s.base_url),
    "anthropic": (anthropic_wire.AnthropicWireServer, "claude-loopback-1", lambda s: s.url),
    "gemini": (gemini_wire.GeminiWireServer, "gemini-loopback", lambda s: s.url),
    "ollama": (ollama_wire.OllamaWireServer, "llama3.1:8b", lambda s: s.url),
}


def make_tools() -> tuple[Any, Any, list[str]]:
    """``get_weather`` (its two calls must run at the same time: each waits for the other) and
    ``add``; the list records the threads the calls ran in."""
    meeting = threading.Barrier(2, timeout=10)
    threads: list[str] = []

    @orchlab.tool
    def get_weather(city: str) -> dict[str, object]:
        """The current weather in a city.

        Args:
            city: the city's name
        """
        threads.append(threading.current_thread().name)
        meeting.wait()  # returns only once both calls are running
        return {"city": city, "temp_c": tool_agent.TEMPS[city]}

    @orchlab.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return get_weather, add, threads


class Records:
    """An observer keeping each finished call's record."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def call_finished(self, record: CallRecord) -> None:
        self.records.append(record)


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str) -> Iterator[Any]:
    with KINDS[kind][0]() as srv:
        yield srv


def config(kind: str, server: Any, extra: str = "") -> str:
    _, model, base = KINDS[kind]
    return f"""\
        project: tools
        providers:
          p: {{type: {kind}, api_base: "{base(server)}", auth_profile: t}}
        roles:
          assistant: {{provider: p, model: "{model}"}}
        {extra}"""


@pytest.fixture
def client(
    kind: str, server: Any, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> Orchestrator:
    monkeypatch.setenv("ORCH_AUTH_T_API_KEY", "k-delegate-0123456789")
    return client_for(config(kind, server))


def shape(record: CallRecord) -> list[tuple[str, str, str]]:
    """The trace's spans as (type, name without the target, status)."""
    payload = trace_payload(record, "tr-0", link=None, base_tags={}, provider_kinds={}, secrets=())
    return [(s["type"], s["name"].split(" p:")[0], s["status"]) for s in payload["spans"]]


@pytest.mark.parametrize("via", ["sync", "async"])
def test_one_task_two_tools_the_same_on_every_wire_format(
    kind: str, server: Any, client: Orchestrator, via: str
) -> None:
    get_weather, add, threads = make_tools()
    seen = Records()
    client.observers.add(seen)
    if via == "sync":
        response = client.delegate(TASK, role="assistant", tools=[get_weather, add])
    else:
        response = asyncio.run(client.adelegate(TASK, role="assistant", tools=[get_weather, add]))

    assert response.content == tool_agent.FINAL
    assert response.tool_calls == ()
    decision = response.decision
    assert decision is not None and decision.strategy == "delegate"
    assert [a.stage for a in decision.attempts] == ["step 1 / single", "step 2 / single", "step 3 / single"]
    assert [a.outcome for a in decision.attempts] == ["ok", "ok", "ok"]
    assert [(r.step, r.call.name, dict(r.call.arguments), r.result.content) for r in decision.tools] == [
        (1, "get_weather", {"city": "Paris"}, '{"city": "Paris", "temp_c": 21}'),
        (1, "get_weather", {"city": "Oslo"}, '{"city": "Oslo", "temp_c": 14}'),
        (2, "add", {"a": 21, "b": 14}, "35"),
    ]
    assert len(set(threads)) == 2  # the two weather calls ran at once, in two threads
    ids = [r.call.id for r in decision.tools]
    assert len(set(ids)) == 3 and "get_weather" not in ids
    assert decision.rationale.startswith("3 steps, 3 tool runs (get_weather x2, add); last step:")
    # usage and cost summed over every step
    assert response.usage.input_tokens == sum(a.usage.input_tokens for a in decision.attempts)
    assert response.usage.output_tokens == sum(a.usage.output_tokens for a in decision.attempts) > 0
    explained = decision.explain()
    assert 'tool  step 1  get_weather({"city": "Paris"})  ok' in explained
    # one trace: the loop, a model span per step, a TOOL span per tool run
    assert len(seen.records) == 1
    assert shape(seen.records[0]) == [
        ("CHAIN", "assistant", "OK"),
        ("CHAT_MODEL", "step 1 / single", "OK"),
        ("CHAT_MODEL", "step 2 / single", "OK"),
        ("CHAT_MODEL", "step 3 / single", "OK"),
        ("TOOL", "tool get_weather", "OK"),
        ("TOOL", "tool get_weather", "OK"),
        ("TOOL", "tool add", "OK"),
    ]
    payload = trace_payload(seen.records[0], "tr-0", link=None, base_tags={}, provider_kinds={}, secrets=())
    step1 = payload["spans"][1]["outputs"]["choices"][0]["message"]
    assert [c["function"]["name"] for c in step1["tool_calls"]] == ["get_weather", "get_weather"]
    tool = payload["spans"][4]
    assert tool["inputs"] == {"city": "Paris"} and tool["attributes"]["orchlab.tool.step"] == 1


def test_a_bad_argument_goes_back_to_the_model_as_an_error(
    kind: str, server: Any, client: Orchestrator
) -> None:
    """A tool that fails and arguments that do not validate go back to the model as error results
    (the loop goes on); here the scripted agent keeps asking for ``add`` without Oslo's
    temperature, so the loop ends at ``max_steps``."""

    @orchlab.tool
    def get_weather(city: str) -> dict[str, object]:
        """The weather."""
        if city == "Oslo":
            raise ConnectionError("station offline")
        return {"city": city, "temp_c": 21}

    @orchlab.tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    with pytest.raises(ToolLoopError) as info:
        client.delegate(TASK, role="assistant", tools=[get_weather, add], max_steps=3)
    runs = info.value.response.decision.tools  # type: ignore[union-attr]
    assert [(r.call.name, r.result.is_error) for r in runs] == [
        ("get_weather", False),
        ("get_weather", True),
        ("add", True),  # b is null: Oslo's temperature never came back
    ]
    assert runs[1].result.content == "get_weather failed: ConnectionError: station offline"
    assert "b: Input should be a valid integer" in runs[2].result.content


def test_max_steps_stops_the_loop_with_the_last_answer_and_its_cost(
    kind: str, server: Any, client: Orchestrator
) -> None:
    get_weather, add, _ = make_tools()
    seen = Records()
    client.observers.add(seen)
    with pytest.raises(ToolLoopError) as info:
        client.delegate(TASK, role="assistant", tools=[get_weather, add], max_steps=2)
    err = info.value
    assert err.steps == 2 and "max_steps=2" in str(err) and "(add)" in str(err)
    last = err.response
    assert isinstance(last, orchlab.LLMResponse)
    assert [c.name for c in last.tool_calls] == ["add"]
    assert last.decision is not None and len(last.decision.attempts) == 2
    assert len(last.decision.tools) == 2
    assert len(seen.records) == 1 and seen.records[0].error is err


def test_delegate_refuses_what_it_cannot_run_before_sending(
    kind: str, server: Any, client: Orchestrator
) -> None:
    with pytest.raises(InvalidRequestError, match="delegate\\(\\) needs tools"):
        client.delegate(TASK, role="assistant")
    with pytest.raises(InvalidRequestError, match="get_weather has no function"):
        client.delegate(TASK, role="assistant", tools=[orchlab.Tool("get_weather")])
    with pytest.raises(InvalidRequestError, match="max_steps must be a positive integer"):
        client.delegate(TASK, role="assistant", tools=[make_tools()[1]], max_steps=0)
    assert server.requests == []


def test_a_fallback_moves_past_a_model_without_tools(
    client_for: Callable[..., Orchestrator], openai_server: Any, gguf_path: Path
) -> None:
    """The local base model cannot take tools: it fails before generating, the chain moves on, and
    every step says so in the trail."""
    get_weather, add, _ = make_tools()
    client = client_for(
        f"""\
        project: tools
        providers:
          local: {{type: llamacpp}}
          remote: {{type: vllm, api_base: "{openai_server.base_url}"}}
        roles:
          assistant:
            strategy: fallback
            candidates: ["local:gemma-3-270m", "remote:m"]
        """
    )
    response = client.delegate(TASK, role="assistant", tools=[get_weather, add])
    assert response.content == tool_agent.FINAL
    trail = [(a.stage, a.provider, a.outcome, a.error_type) for a in response.decision.attempts]  # type: ignore[union-attr]
    assert trail == [
        (f"step {n} / fallback {i}", p, o, e)
        for n in (1, 2, 3)
        for i, p, o, e in ((1, "local", "error", "UnsupportedCapabilityError"), (2, "remote", "ok", None))
    ]


def test_a_budget_stops_the_loop_before_the_step_that_would_overrun(
    client_for: Callable[..., Orchestrator], openai_server: Any
) -> None:
    get_weather, add, _ = make_tools()
    client = client_for(
        f"""\
        project: tools
        providers:
          remote: {{type: vllm, api_base: "{openai_server.base_url}"}}
        models:
          "remote:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000, context_window: 4000}}
        roles:
          assistant: {{provider: remote, model: m, params: {{max_tokens: 20}}}}
        budgets: {{per_call_usd: 0.7}}
        """
    )
    seen = Records()
    client.observers.add(seen)
    # at $0.001 a token, step 1's worst case (620 prompt tokens at most, the tool schemas included,
    # + 20) is $0.64 and fits; with its $0.016 spent, step 2's worst case ($0.81) would overrun
    with pytest.raises(BudgetExceededError) as info:
        client.delegate(TASK, role="assistant", tools=[get_weather, add])
    assert str(info.value).startswith("per-call budget $0.7: $0.016 spent")  # the whole loop is one call
    assert len(openai_server.requests) == 1  # step 2 was refused before sending
    record = seen.records[-1]
    assert record.error is info.value
    assert [r.call.name for r in record.context.tool_runs] == ["get_weather", "get_weather"]
    assert [a.outcome for a in record.context.attempts] == ["ok", "error"]
