"""``POST /v1/embeddings`` through the official openai SDK (``client.embeddings.create``, whose
default asks for base64) against the gateway, an OpenAI-wire upstream behind it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply
from tests.test_embeddings import openai_embeddings

EMBED_ROLE = "  llm.embedding: {provider: up, model: text-embedding-3-large}\n"


def embedding_yaml(server: OpenAIWireServer, gateway: str = "") -> str:
    yaml = gateway_yaml(server, gateway)
    return yaml.replace("roles:\n", "roles:\n" + EMBED_ROLE, 1)


def sdk(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key="caller-key", max_retries=0)


def test_embeddings_through_the_sdk_base64_and_float(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(embedding_yaml(openai_server, "  aliases: {text-embedding-3-large: llm.embedding}\n"))
    openai_server.push(Reply(body=openai_embeddings(2, model="text-embedding-3-large", tokens=5, start=3)))
    raw = sdk(served).embeddings.with_raw_response.create(
        model="text-embedding-3-large", input=["a cat", "a kitten"]
    )
    r = raw.parse()
    assert [d.embedding for d in r.data] == [[3.0, 1.0, 0.0], [4.0, 1.0, 0.0]]
    assert [d.index for d in r.data] == [0, 1] and r.model == "text-embedding-3-large"
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (5, 5)
    assert openai_server.last.body["input"] == ["a cat", "a kitten"]
    assert openai_server.last.body["model"] == "text-embedding-3-large"
    assert raw.headers["x-orchlab-cost-usd"] == f"{5 * 0.13 / 1e6:.8f}"
    assert raw.headers["x-orchlab-decision"] == "embedding up:text-embedding-3-large"
    # the SDK asked for base64 (its default) and decoded it; float is plain JSON numbers
    openai_server.push(Reply(body=openai_embeddings(1, model="text-embedding-3-large", tokens=2)))
    plain = httpx.post(
        f"{served.base_url}/embeddings",
        json={"model": "llm.embedding", "input": "a cat", "encoding_format": "float"},
    ).json()
    assert plain["data"] == [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0, 0.0]}]
    assert plain["usage"] == {"prompt_tokens": 2, "total_tokens": 2} and plain["object"] == "list"
    assert openai_server.last.body["input"] == ["a cat"]


def test_dimensions_refused_or_dropped_and_bad_inputs(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(embedding_yaml(openai_server))
    client = sdk(served)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="llm.embedding", input="x", dimensions=2)
    assert info.value.body["param"] == "dimensions" and "drop_params" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="llm.embedding", input=[[1, 2, 3]])
    assert info.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="llm.embedding", input=["ok", ""])
    assert info.value.body["param"] == "input[1]"
    with pytest.raises(openai.BadRequestError) as info:  # a chat role: the library's own error
        client.embeddings.create(model="llm.inference", input="x")
    assert "not an embedding role" in info.value.message
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="ada-9", input="x")
    assert info.value.code == "model_not_found"
    assert openai_server.requests == []

    dropping = serve(embedding_yaml(openai_server, "  drop_params: true\n"))
    openai_server.push(Reply(body=openai_embeddings(1, model="text-embedding-3-large", tokens=1)))
    r = sdk(dropping).embeddings.create(model="llm.embedding", input="x", dimensions=2)
    assert r.data[0].embedding == [0.0, 1.0, 0.0]
    assert "dimensions" not in openai_server.last.body
