"""The gateway's OpenAI endpoints, called by the official openai SDK (sync and async) and raw
httpx, in front of the loopback OpenAI-wire server."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve_support import KEY, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer

Q = [{"role": "user", "content": "What is 2+2?"}]


def sdk(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key="caller-key", max_retries=0)


def test_chat_completion_through_the_sdk(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    raw = sdk(served).chat.completions.with_raw_response.create(
        model="llm.inference", messages=Q, temperature=0.5, max_tokens=20, seed=7, stop=["\n"]
    )
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == "llm.inference"
    assert r.choices[0].message.content == "echo: What is 2+2?"
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.role == "assistant"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 4, 7)
    assert r.id.startswith("chatcmpl-") and r.system_fingerprint is None
    sent = openai_server.last.body
    assert sent["model"] == "cheap" and sent["temperature"] == 0.5 and sent["seed"] == 7
    assert sent["stop"] == ["\n"] and sent["messages"] == Q
    assert raw.headers["x-orchlab-cost-usd"] == f"{(3 * 1.0 + 4 * 2.0) / 1e6:.8f}"
    assert raw.headers["x-orchlab-decision"] == "single up:cheap"
    assert float(raw.headers["x-orchlab-overhead-ms"]) >= 0
    assert len(raw.headers["x-request-id"]) == 32
    assert (
        openai_server.last.header("authorization") == f"Bearer {KEY}"
    )  # the gateway's key, not the caller's


def test_models_list_roles_aliases_and_logics(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server, "  aliases: {gpt-4o: llm.big}\n"))
    client = sdk(served)
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["gpt-4o", "llm.inference", "llm.big"]
    assert "urn:orchlab:race" in ids and "urn:orchlab:cascade" in ids
    m = client.models.retrieve("gpt-4o")
    assert (m.id, m.owned_by, m.object) == ("gpt-4o", "orchlab", "model")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-6")
    assert info.value.code == "model_not_found" and "gpt-6" in info.value.message


def test_unknown_model_is_a_404_naming_what_is_served(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    with pytest.raises(openai.NotFoundError) as info:
        sdk(served).chat.completions.create(model="gpt-6-astra", messages=Q)
    err = info.value.body
    assert (
        err["code"] == "model_not_found"
        and err["param"] == "model"
        and err["type"] == "invalid_request_error"
    )
    assert "'gpt-6-astra'" in err["message"] and "llm.inference, llm.big" in err["message"]
    assert openai_server.requests == []


def test_alias_and_direct_target(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(
        gateway_yaml(openai_server, "  aliases: {gpt-4o: llm.big}\n  allow_direct_targets: true\n")
    )
    client = sdk(served)
    assert client.chat.completions.create(model="gpt-4o", messages=Q).model == "gpt-4o"
    assert openai_server.last.body["model"] == "big"
    client.chat.completions.create(model="up:some-model", messages=Q)
    assert openai_server.last.body["model"] == "some-model"


def test_direct_targets_are_refused_unless_allowed(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    with pytest.raises(openai.NotFoundError):
        sdk(served).chat.completions.create(model="up:some-model", messages=Q)
    assert openai_server.requests == []


def test_unknown_route_and_method_are_openai_shaped(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    r = httpx.get(f"{served.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no route GET /v1/nothing"
    r = httpx.get(f"{served.base_url}/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
