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


def test_streaming_with_usage_through_the_sdk(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    chunks = list(
        sdk(served).chat.completions.create(
            model="llm.inference", messages=Q, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: What is 2+2? "  # the upstream's words, each with its space
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 3
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and openai_server.last.body["stream"] is True


def test_streaming_wire_format_ends_with_done(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    body = {"model": "llm.inference", "messages": Q, "stream": True}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in r.iter_lines() if line]
    assert frames[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in frames)
    assert '"usage"' not in "".join(frames)  # no usage unless asked


def test_sdk_stream_helper_and_async_client(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    with sdk(served).chat.completions.stream(model="llm.inference", messages=Q) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: What is 2+2? "

    async def call() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=served.base_url, api_key="k", max_retries=0)
        r = await client.chat.completions.create(model="llm.big", messages=Q)
        parts = []
        async for c in await client.chat.completions.create(model="llm.big", messages=Q, stream=True):
            parts.append(c.choices[0].delta.content or "" if c.choices else "")
        await client.close()
        return r.choices[0].message.content or "", "".join(parts)

    import asyncio

    assert asyncio.run(call()) == ("echo: What is 2+2?", "echo: What is 2+2? ")


def test_max_tokens_zero_is_an_empty_completion_of_length(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    r = sdk(served).chat.completions.create(model="llm.inference", messages=Q, max_tokens=0)
    assert r.choices[0].message.content == "" and r.choices[0].finish_reason == "length"
    assert r.usage.total_tokens == 0 and openai_server.requests == []
    r = sdk(served).chat.completions.create(model="llm.inference", messages=Q, max_completion_tokens=0)
    assert r.choices[0].finish_reason == "length"
    chunks = list(
        sdk(served).chat.completions.create(model="llm.inference", messages=Q, max_tokens=0, stream=True)
    )
    assert [c.choices[0].finish_reason for c in chunks] == [None, "length"]
    assert openai_server.requests == []


def test_unsupported_parameters_are_refused_naming_them(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    client = sdk(served)
    for kwargs, param in [
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"n": 2}, "n"),
        ({"extra_body": {"made_up": 1}}, "made_up"),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
    ]:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**{"model": "llm.inference", "messages": Q, **kwargs})
        assert info.value.body["param"] == param, kwargs
        assert param.split("[")[0].split(".")[-1] in info.value.body["message"]
    assert openai_server.requests == []


def test_drop_params_drops_what_the_gateway_cannot_honour(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server, "  drop_params: true\n"))
    r = sdk(served).chat.completions.create(
        model="llm.inference",
        messages=[{"role": "developer", "content": "be brief", "name": "ops"}, *Q],
        frequency_penalty=0.5,
        modalities=["text", "audio"],
        store=True,
        user="alice",
        metadata={"team": "ds"},
        stream_options=None,
        extra_body={"made_up": 1},
    )
    assert r.choices[0].message.content == "echo: What is 2+2?"
    sent = openai_server.last.body
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, *Q]
    assert not {"frequency_penalty", "modalities", "store", "made_up", "user", "metadata"} & set(sent)


def test_response_format_and_logprobs_are_forwarded(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    sdk(served).chat.completions.create(
        model="llm.inference",
        messages=Q,
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
    )
    sent = openai_server.last.body
    assert sent["response_format"] == {"type": "json_object"} and sent["logprobs"] is True
    assert sent["top_logprobs"] == 2
