"""`delegate()` with every logic (issue 17 item 4): a step whose answer calls tools is neither
scored as an empty answer (cascade, race) nor voted as an abstention (vote); a chain returns a
draft that calls tools; a judge sees the calls as text; fuse does not aggregate tool calls.

Every model is the scripted tool agent of tests/servers/tool_agent.py on the loopback OpenAI-wire
server (``agent``); a second server (``other``) plays scripted replies: a dissenting voter, a
slow racer, a judge or an aggregator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchlab.orchestrator import Orchestrator
from orchlab.types import LLMResponse
from tests.servers import tool_agent
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body, tool_calls_body
from tests.test_tools_delegate import TASK, make_tools


@pytest.fixture
def other() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer() as server:
        yield server


def client(make: Callable[..., Orchestrator], agent: Any, other: Any, roles: str) -> Orchestrator:
    """``roles``: the ``roles:`` lines, indented by two spaces (and any top-level keys after)."""
    head = f"""\
project: tools
providers:
  agent: {{type: vllm, api_base: "{agent.base_url}"}}
  other: {{type: vllm, api_base: "{other.base_url}"}}
roles:
"""
    return make(head + roles)


def run(orch: Orchestrator, role: str | None = "assistant") -> LLMResponse:
    get_weather, add, _ = make_tools()
    return orch.delegate(TASK, role=role, tools=[get_weather, add])


def trail(response: LLMResponse) -> list[tuple[str, str, str]]:
    assert response.decision is not None
    return [(a.stage or "", f"{a.provider}:{a.model}", a.outcome) for a in response.decision.attempts]


def tools_ran(response: LLMResponse) -> list[tuple[int, str]]:
    assert response.decision is not None
    return [(r.step, r.call.name) for r in response.decision.tools]


RAN = [(1, "get_weather"), (1, "get_weather"), (2, "add")]


def test_cascade_accepts_a_stage_asking_for_tools_unscored(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    """Steps 1 and 2: the cheap stage's tool calls are accepted (no log-probs, yet not escalated);
    step 3: its text answer has no log-probs, so the cascade escalates as usual."""
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: cascade, candidates: ['agent:cheap', 'agent:dear']}",
    )
    response = run(orch)
    assert response.content == tool_agent.FINAL
    assert tools_ran(response) == RAN
    assert trail(response) == [
        ("step 1 / cascade 1", "agent:cheap", "ok"),
        ("step 2 / cascade 1", "agent:cheap", "ok"),
        ("step 3 / cascade 1", "agent:cheap", "rejected"),
        ("step 3 / cascade 2", "agent:dear", "ok"),
    ]
    assert response.decision is not None
    assert "3 steps" in response.decision.rationale
    assert "stage 2 agent:dear is the last stage" in response.decision.rationale


def test_race_takes_the_first_answer_asking_for_tools(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    """The slow racer (a second agent, 1 s late) is cancelled at every step."""
    other.push(*(Reply(delay_s=1.0) for _ in range(3)))
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: parallel, candidates: ['agent:a', 'other:b']}",
    )
    response = run(orch)
    assert response.content == tool_agent.FINAL
    assert tools_ran(response) == RAN
    assert trail(response) == [
        (f"step {n} / race {i}", target, outcome)
        for n in (1, 2, 3)
        for i, target, outcome in ((1, "agent:a", "ok"), (2, "other:b", "cancelled"))
    ]
    assert response.decision is not None
    assert "last step: agent:a gave the first good answer" in response.decision.rationale


def test_vote_groups_tool_answers_by_their_calls(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    """Two agents against a dissenter: at step 1 it calls for Paris only, at step 2 it answers in
    text instead of calling ``add``, at step 3 it agrees (up to case and punctuation)."""
    other.push(
        Reply(body=tool_calls_body([("c1", "get_weather", '{"city": "Paris"}')], model="c")),
        Reply(body=completion_body("I do not know.", model="c", prompt_tokens=9, completion_tokens=4)),
        Reply(
            body=completion_body(tool_agent.FINAL.upper(), model="c", prompt_tokens=9, completion_tokens=9)
        ),
    )
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: ensemble, ensemble: {mode: vote}, "
        "candidates: ['agent:a', 'agent:b', 'other:c']}",
    )
    response = run(orch)
    assert response.content == tool_agent.FINAL
    assert tools_ran(response) == RAN  # the winners' calls ran, not the dissenter's
    assert trail(response) == [
        (f"step {n} / vote {i}", target, outcome)
        for n, dissent in ((1, "rejected"), (2, "rejected"), (3, "ok"))
        for i, target, outcome in ((1, "agent:a", "ok"), (2, "agent:b", "ok"), (3, "other:c", dissent))
    ]
    attempts = response.decision.attempts  # type: ignore[union-attr]
    assert [a.note for a in attempts[:3]] == [None, None, "outvoted (1/3)"]
    assert response.decision.rationale.endswith(
        "last step: vote: 3/3 answers agree on 'paris is 21 c and oslo 14 c; together 35'"
    )  # type: ignore[union-attr]


def test_a_vote_over_calls_ignores_their_order_and_names_them(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    """The dissenter asks for the same two calls in the other order, with other ids: it agrees."""
    other.push(
        Reply(
            body=tool_calls_body(
                [("x", "get_weather", '{"city": "Oslo"}'), ("y", "get_weather", '{"city":"Paris"}')],
                model="c",
            )
        )
    )
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: ensemble, ensemble: {mode: vote}, candidates: ['other:c', 'agent:a']}",
    )
    response = run(orch)
    assert response.content == tool_agent.FINAL
    step1 = response.decision.attempts[:2]  # type: ignore[union-attr]
    assert [(a.stage, a.outcome, a.confidence) for a in step1] == [
        ("step 1 / vote 1", "ok", 1.0),
        ("step 1 / vote 2", "ok", 1.0),
    ]
    # the winning group's first member (other:c, ids x and y) is the one whose calls ran
    assert [(r.call.id, r.call.arguments["city"]) for r in response.decision.tools[:2]] == [  # type: ignore[union-attr]
        ("x", "Oslo"),
        ("y", "Paris"),
    ]
    assert "step 1 / vote" not in response.decision.rationale  # type: ignore[union-attr]


def test_chain_returns_a_draft_that_calls_tools_and_refines_the_text_answer(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: ensemble, ensemble: {mode: chain}, candidates: ['agent:a', 'agent:b']}",
    )
    response = run(orch)
    assert response.content == tool_agent.FINAL
    assert tools_ran(response) == RAN
    assert trail(response) == [
        ("step 1 / chain 1 draft", "agent:a", "ok"),
        ("step 2 / chain 1 draft", "agent:a", "ok"),
        ("step 3 / chain 1 draft", "agent:a", "ok"),
        ("step 3 / chain 2 refine", "agent:b", "ok"),
    ]
    refine = openai_server.requests[-1].body
    assert refine["model"] == "b" and refine["tool_choice"] == "none"
    assert [t["function"]["name"] for t in refine["tools"]] == ["get_weather", "add"]
    assert (
        refine["messages"][-1]["role"] == "user"
        and "improved final answer" in refine["messages"][-1]["content"]
    )
    assert len(openai_server.requests) == 4


def test_judge_sees_the_calls_as_text_and_is_not_offered_tools(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    verdicts = ["2", "2", "1"]
    other.push(
        *(Reply(body=completion_body(v, model="j", prompt_tokens=9, completion_tokens=1)) for v in verdicts)
    )
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: ensemble, ensemble: {mode: judge, judge: 'other:j'}, "
        "candidates: ['agent:a', 'agent:b']}",
    )
    response = run(orch)
    assert response.content == tool_agent.FINAL
    assert tools_ran(response) == RAN
    assert trail(response) == [
        row
        for n, picked in ((1, 2), (2, 2), (3, 1))
        for row in (
            (f"step {n} / answer 1", "agent:a", "ok" if picked == 1 else "rejected"),
            (f"step {n} / answer 2", "agent:b", "ok" if picked == 2 else "rejected"),
            (f"step {n} / judge", "other:j", "ok"),
        )
    ]
    asked = [r.body for r in other.requests]
    assert all("tools" not in body for body in asked)
    shown = asked[0]["messages"][0]["content"]
    assert (
        'Answer 2:\n(calls the tools: get_weather({"city": "Oslo"}), get_weather({"city": "Paris"}))' in shown
    )
    assert 'Answer 1:\n(calls the tools: add({"a": 21, "b": 14}))' in asked[1]["messages"][0]["content"]


def test_fuse_does_not_aggregate_tool_calls(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    """Steps 1 and 2 are decided by the vote; the aggregator is asked once, for the text answers."""
    fused = "Fused: Paris 21 C, Oslo 14 C, 35 in all."
    other.push(Reply(body=completion_body(fused, model="g", prompt_tokens=9, completion_tokens=8)))
    orch = client(
        client_for,
        openai_server,
        other,
        "  assistant: {strategy: ensemble, ensemble: {mode: fuse, aggregator: 'other:g'}, "
        "candidates: ['agent:a', 'agent:b']}",
    )
    response = run(orch)
    assert response.content == fused
    assert tools_ran(response) == RAN
    assert [s for s, _, _ in trail(response)] == [
        "step 1 / propose 1",
        "step 1 / propose 2",
        "step 2 / propose 1",
        "step 2 / propose 2",
        "step 3 / propose 1",
        "step 3 / propose 2",
        "step 3 / aggregate",
    ]
    assert len(other.requests) == 1 and "tools" not in other.requests[0].body
    assert json.dumps(tool_agent.FINAL)[1:-1] in other.requests[0].body["messages"][0]["content"]


def test_auto_routes_every_step_to_the_role_s_logic(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    orch = client(
        client_for,
        openai_server,
        other,
        "  front: {provider: agent, model: front}\n"
        "  tooler: {strategy: cascade, candidates: ['agent:cheap', 'agent:dear']}\n"
        "routing: {default: front, routes: {general: tooler}}",
    )
    response = run(orch, role=None)
    assert response.content == tool_agent.FINAL
    assert tools_ran(response) == RAN
    assert [(s, t) for s, t, _ in trail(response)] == [
        ("step 1 / cascade 1", "agent:cheap"),
        ("step 2 / cascade 1", "agent:cheap"),
        ("step 3 / cascade 1", "agent:cheap"),
        ("step 3 / cascade 2", "agent:dear"),
    ]
    assert response.decision is not None
    assert "last step: task general (rules" in response.decision.rationale
    assert "-> role 'tooler' (cascade)" in response.decision.rationale


def test_on_tool_hears_of_each_run_before_the_next_step_is_sent(
    client_for: Callable[..., Orchestrator], openai_server: Any, other: Any
) -> None:
    orch = client(client_for, openai_server, other, "  assistant: {provider: agent, model: m}")
    heard: list[tuple[int, str, int]] = []
    get_weather, add, _ = make_tools()
    response = orch.delegate(
        TASK,
        role="assistant",
        tools=[get_weather, add],
        on_tool=lambda run: heard.append((run.step, run.call.name, len(openai_server.requests))),
    )
    assert response.content == tool_agent.FINAL
    assert heard == [(1, "get_weather", 1), (1, "get_weather", 1), (2, "add", 2)]
