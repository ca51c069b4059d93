"""``client.embed(role, texts)``: golden requests through each official SDK on the loopback servers,
batching, input-only costs, budgets and usage, roles that know they embed, the local GGUF in
embedding mode, and the EMBEDDING span of its trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import orchlab
from orchlab.calls import CallRecord
from orchlab.errors import BudgetExceededError, InvalidRequestError
from orchlab.orchestrator import Orchestrator
from orchlab.tracking.records import trace_payload
from tests.servers import gemini_wire, ollama_wire
from tests.servers.gemini_wire import GeminiWireServer
from tests.servers.ollama_wire import OllamaWireServer
from tests.servers.openai_wire import OpenAIWireServer, Reply

TEXTS = ["a cat", "a kitten", "a stock market"]


def openai_embeddings(n: int, *, model: str, tokens: int, dim: int = 3, start: int = 0) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse`` with ``n`` rows (row i is ``[start + i, 1, 0, ...]``),
    listed in reverse order to check they are put back by ``index``."""
    rows = [
        {"object": "embedding", "index": i, "embedding": [float(start + i), 1.0] + [0.0] * (dim - 2)}
        for i in range(n)
    ]
    return {
        "object": "list",
        "data": rows[::-1],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def openai_config(server: OpenAIWireServer, extra: str = "") -> str:
    return (
        f"project: t\nproviders:\n  oa: {{type: openai, auth_profile: o, api_base: '{server.base_url}'}}\n"
        "roles:\n"
        "  llm.embedding: {provider: oa, model: text-embedding-3-large}\n"  # kind from the catalog
        "  llm.inference: {provider: oa, model: gpt-4.1-mini}\n" + extra
    )


@pytest.fixture
def openai_client(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> tuple[Orchestrator, OpenAIWireServer]:
    monkeypatch.setenv("ORCH_AUTH_O_API_KEY", "sk-test")
    server = OpenAIWireServer().start()
    yield client_for(openai_config(server)), server  # type: ignore[misc]
    server.stop()


def test_openai_embeddings_request_response_cost_and_usage(openai_client: Any) -> None:
    client, server = openai_client
    server.push(Reply(body=openai_embeddings(3, model="text-embedding-3-large", tokens=7)))
    e = client.embed("llm.embedding", TEXTS)
    rec = server.last
    assert rec.route == "/v1/embeddings"
    assert rec.body == {"model": "text-embedding-3-large", "input": TEXTS, "encoding_format": "float"}
    assert e.vectors.dtype == np.float32 and e.vectors.shape == (3, 3)
    assert e.vectors[:, 0].tolist() == [0.0, 1.0, 2.0]  # in input order, whatever the response's
    assert e.usage.input_tokens == 7 and e.usage.output_tokens == 0
    assert e.cost_usd == pytest.approx(7 * 0.13 / 1e6)  # input-only, genai-prices
    assert (e.provider, e.model, e.role, e.dim, len(e)) == (
        "oa",
        "text-embedding-3-large",
        "llm.embedding",
        3,
        3,
    )
    frame = client.usage(by="role").set_index("role")
    assert frame.loc["llm.embedding", "calls"] == 1
    assert frame.loc["llm.embedding", "input_tokens"] == 7
    assert frame.loc["llm.embedding", "cost_usd"] == pytest.approx(e.cost_usd)


async def test_aembed_batches_to_the_providers_limit(openai_client: Any) -> None:
    client, server = openai_client
    texts = [f"text {i}" for i in range(2050)]
    server.push(
        Reply(body=openai_embeddings(2048, model="text-embedding-3-large", tokens=4096)),
        Reply(body=openai_embeddings(2, model="text-embedding-3-large", tokens=4, start=2048)),
    )
    e = await client.aembed("llm.embedding", texts)
    sent = [r.body["input"] for r in server.requests if r.route == "/v1/embeddings"]
    assert [len(batch) for batch in sent] == [2048, 2]
    assert sent[0] + sent[1] == texts
    assert e.vectors.shape == (2050, 3)
    assert e.vectors[:, 0].tolist() == [float(i) for i in range(2050)]
    assert e.usage.input_tokens == 4100
    assert e.cost_usd == pytest.approx(4100 * 0.13 / 1e6)


def test_run_on_an_embedding_role_and_embed_on_a_chat_role_send_nothing(openai_client: Any) -> None:
    client, server = openai_client
    with pytest.raises(InvalidRequestError, match=r"'llm.embedding' is an embedding role .*client.embed"):
        client.run("llm.embedding", [{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidRequestError, match="is an embedding role"):
        client.stream("llm.embedding", [{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidRequestError, match="is an embedding role"):
        client.complete("hi", role="llm.embedding")
    with pytest.raises(InvalidRequestError, match=r"'llm.inference' is a chat role .*nothing was sent"):
        client.embed("llm.inference", TEXTS)
    with pytest.raises(InvalidRequestError, match="texts is empty"):
        client.embed("llm.embedding", [])
    with pytest.raises(InvalidRequestError, match=r"texts\[1\] must be a string"):
        client.embed("llm.embedding", ["a", 3])
    assert server.requests == []
    assert client.role_kind("llm.embedding") == "embedding" and client.role_kind("llm.inference") == "chat"


def test_kind_in_the_yaml_wins_and_budgets_apply_before_sending(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_O_API_KEY", "sk-test")
    with OpenAIWireServer() as server:
        client = client_for(
            openai_config(server, "  mine: {provider: oa, model: my-embedder, kind: embedding}\n"),
            "models:\n  'oa:my-embedder': {input_price_per_mtok: 10000, output_price_per_mtok: 0, "
            "context_window: 8000}\nbudgets: {per_call_usd: 0.5}\n",
        )
        server.push(Reply(body=openai_embeddings(1, model="my-embedder", tokens=1)))
        e = client.embed("mine", ["one"])  # its ceiling (19 tokens at $0.01) fits $0.50
        assert e.cost_usd == pytest.approx(0.01)  # charged as reported: 1 token
        assert client.budgets.spent_usd() == pytest.approx(0.01)
        with pytest.raises(BudgetExceededError, match="per-call budget"):
            client.embed("mine", ["many words " * 20])  # its ceiling is over $0.50: refused
        assert len(server.requests) == 1


def test_gemini_embed_content(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_G_API_KEY", "g-test")
    with GeminiWireServer() as server:
        client = client_for(
            f"project: t\nproviders:\n  gem: {{type: gemini, auth_profile: g, api_base: '{server.url}'}}\n"
            "roles:\n  emb: {provider: gem, model: gemini-embedding-001}\n"
        )
        server.push(gemini_wire.Reply(body={"embeddings": [{"values": [1.0, 0.0]}, {"values": [0.0, 1.0]}]}))
        e = client.embed("emb", TEXTS[:2])
        rec = server.last
    assert rec.route.endswith("models/gemini-embedding-001:batchEmbedContents")
    assert [r["content"]["parts"] for r in rec.body["requests"]] == [
        [{"text": "a cat"}],
        [{"text": "a kitten"}],
    ]
    assert e.vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert e.cost_usd is None  # the Gemini API reports no usage for embeddings: unknown, not $0
    assert "no token usage" in (e.cost_note or "")


def test_ollama_api_embed(client_for: Callable[..., Orchestrator]) -> None:
    with OllamaWireServer() as server:
        client = client_for(
            f"project: t\nproviders:\n  gpu: {{type: ollama, api_base: '{server.url}'}}\n"
            "roles:\n  emb: {provider: gpu, model: nomic-embed-text}\n"
        )
        server.push(
            ollama_wire.Reply(
                body={
                    "model": "nomic-embed-text",
                    "embeddings": [[0.5, 0.5], [1.0, 0.0]],
                    "prompt_eval_count": 6,
                }
            )
        )
        e = client.embed("emb", TEXTS[:2])
        rec = server.last
    assert rec.route == "/api/embed"
    assert rec.body["model"] == "nomic-embed-text" and rec.body["input"] == TEXTS[:2]
    assert e.vectors.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert e.usage.input_tokens == 6 and e.cost_usd == 0.0  # a local model


def test_the_embedded_defaults_embedding_role_makes_real_vectors_and_an_embedding_span() -> None:
    records: list[CallRecord] = []

    class Recorder:
        def call_finished(self, record: CallRecord) -> None:
            records.append(record)

    with orchlab.get_llm_client() as client:
        client.observers.add(Recorder())
        e = client.embed(
            "llm.embedding", ["The cat sat on the mat.", "A kitten rests on a rug.", "Stock markets fell."]
        )
        with pytest.raises(InvalidRequestError, match="embedding role"):
            client.run("llm.embedding", [{"role": "user", "content": "hi"}])
    assert e.vectors.shape == (3, 640)
    sim = e.similarity()
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]  # the two pets are closer than the market
    assert e.usage.input_tokens > 10 and e.cost_usd == 0.0
    payload = trace_payload(
        records[-1], "tr-" + "0" * 32, link=None, base_tags={}, provider_kinds={}, secrets=[]
    )
    assert [s["type"] for s in payload["spans"]] == ["CHAIN", "EMBEDDING"]
    assert payload["spans"][1]["outputs"]["choices"][0]["message"]["content"] == "3 vectors of dimension 640"
