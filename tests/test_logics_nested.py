"""A logic's candidate may itself be a logic: YAML ``{strategy: ..., candidates: [...]}``."""

from __future__ import annotations

from typing import Any

import pytest

from orchlab.errors import ConfigError, InvalidRequestError
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body


def reply(text: str, **kw: Any) -> Reply:
    return Reply(body=completion_body(text, model="m", prompt_tokens=7, completion_tokens=1), **kw)


def config(one: str, two: str, options: str = "") -> str:
    return f"""
project: t
tracking: {{enabled: false}}
providers:
  near: {{type: vllm, api_base: "{one}"}}
  far: {{type: vllm, api_base: "{two}"}}
roles:
  staged:
    provider: near
    model: big
    strategy: cascade
    cascade: {{scorer: regex, pattern: "^4$", threshold: 0.5}}
    candidates:
      - {{strategy: parallel, candidates: ["near:small", "far:small"]{options}}}
"""


def test_a_cascade_whose_first_stage_is_a_race(client_for: Any, openai_server: OpenAIWireServer) -> None:
    with OpenAIWireServer() as far:
        client = client_for(config(openai_server.base_url, far.base_url))
        # the role's own model is stage 1 here: it answers badly, then the race stage answers "4"
        openai_server.push(reply("five"), reply("4"))
        far.push(reply("4", delay_s=1.0))
        r = client.run("staged", [{"role": "user", "content": "What is 2+2?"}])
    assert r.content == "4" and r.provider == "near" and r.decision.winner == "near:m"
    trail = [(a.stage, f"{a.provider}:{a.model}", a.outcome) for a in r.decision.attempts]
    assert trail == [
        ("cascade 1", "near:big", "rejected"),
        ("cascade 2 / race 1", "near:small", "ok"),
        ("cascade 2 / race 2", "far:small", "cancelled"),
    ]
    assert "stage 2 parallel(near:small, far:small) accepted" in r.decision.rationale
    assert [q.body["model"] for q in openai_server.requests] == ["big", "small"]


def test_a_nested_logic_checks_its_own_params(client_for: Any, openai_server: OpenAIWireServer) -> None:
    url = openai_server.base_url
    client = client_for(config(url, url, ", options: {treshold: 0.5}"))
    with pytest.raises(InvalidRequestError, match="logic 'parallel' has no param 'treshold'"):
        client.run("staged", [{"role": "user", "content": "hi"}])


def test_a_nested_logic_names_only_known_providers(client_for: Any) -> None:
    with pytest.raises(ConfigError, match=r"roles.staged.candidates: provider 'far' is not defined"):
        client_for(
            config("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1").replace(
                "  far: {type", "  faraway: {type"
            )
        )


def test_a_cascade_whose_first_stage_is_a_race_from_yaml(
    client_for: Any, openai_server: OpenAIWireServer
) -> None:
    # three servers, so no reply is taken by the wrong request when the race's slow member is
    # cancelled before its request is even sent (a loaded machine)
    with OpenAIWireServer() as slow, OpenAIWireServer() as far:
        client = client_for(
            f"""
project: t
tracking: {{enabled: false}}
providers:
  near: {{type: vllm, api_base: "{openai_server.base_url}"}}
  slow: {{type: vllm, api_base: "{slow.base_url}"}}
  far: {{type: vllm, api_base: "{far.base_url}"}}
roles:
  staged:
    strategy: cascade
    cascade: {{scorer: regex, pattern: "^4$", threshold: 0.5}}
    candidates:
      - {{strategy: parallel, candidates: ["near:small", "slow:small"]}}
      - "far:big"
"""
        )
        # no provider:/model: on the role: the race is stage 1; it answers badly, then far:big answers
        openai_server.push(reply("five"))
        slow.push(reply("six", delay_s=1.0))
        far.push(reply("4"))
        r = client.run("staged", [{"role": "user", "content": "What is 2+2?"}])
    assert r.content == "4" and r.provider == "far"
    trail = [(a.stage, f"{a.provider}:{a.model}", a.outcome) for a in r.decision.attempts]
    assert trail == [
        ("cascade 1 / race 1", "near:small", "rejected"),  # the race's winner, rejected by the cascade
        ("cascade 1 / race 2", "slow:small", "cancelled"),
        ("cascade 2", "far:big", "ok"),
    ]
    assert r.decision.rationale.startswith(
        "stage 1 parallel(near:small, slow:small): regex '^4$' score 0.000"
    )
    assert [q.body["model"] for q in openai_server.requests] == ["small"]
    assert [q.body["model"] for q in far.requests] == ["big"]


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("{strategy: cascade}", "the role needs provider: and model:, or strategy: with candidates:"),
        ('{candidates: ["a:m"]}', "the role needs provider: and model:, or strategy: with candidates:"),
        ('{provider: a, strategy: parallel, candidates: ["a:m"]}', "the role gives provider but no model"),
    ],
)
def test_a_role_without_its_own_model_needs_a_strategy_and_candidates(
    client_for: Any, role: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        client_for(
            "project: t\nproviders:\n  a: {type: vllm, api_base: 'http://127.0.0.1:9'}\n"
            f"roles:\n  r: {role}\n"
        )
    assert message in str(info.value) and "roles.r" in str(info.value)
