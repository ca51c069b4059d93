"""``POST /chat``'s ``format``: the library's ``format=`` (`orchlab.output.formats`), so markdown is
normalised as ``run(..., format="markdown")`` normalises it and json is asked of the provider; an
answer that is not JSON is a 200 with the answer as it came and ``format_error``."""

from __future__ import annotations

import httpx
import pytest

from orchlab.output.formats import markdown
from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

RAW_MARKDOWN = "# Title  \r\nSome text\t\n\n```python\nx = 1   \n"


def _push(server: OpenAIWireServer, content: str) -> None:
    server.push(Reply(body=completion_body(content, model="cheap", prompt_tokens=3, completion_tokens=5)))


def test_markdown_is_normalised_as_the_library_normalises_it(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    _push(openai_server, RAW_MARKDOWN)
    r = httpx.post(f"{served.url}/chat", json={"prompt": "md", "role": "llm.inference"})  # the default
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "# Title\nSome text\n\n```python\nx = 1\n```\n" == markdown(RAW_MARKDOWN)
    assert (body["format"], body["format_error"]) == ("markdown", None)
    assert "response_format" not in openai_server.last.body  # only json is constrained
    _push(openai_server, RAW_MARKDOWN)
    r = httpx.post(f"{served.url}/chat", json={"prompt": "md", "role": "llm.inference", "format": "raw"})
    assert r.json()["answer"] == RAW_MARKDOWN  # raw: as generated


def test_json_is_constrained_at_the_provider_and_parsed(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    _push(openai_server, '{"city": "Paris", "n": [1, 2]}')
    r = httpx.post(
        f"{served.url}/chat", json={"prompt": "a city as JSON", "role": "llm.inference", "format": "json"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == {"city": "Paris", "n": [1, 2]} and r.json()["format_error"] is None
    sent = openai_server.last.body
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][-1] == {"role": "user", "content": "a city as JSON"}


def test_an_answer_that_is_not_json_is_a_200_with_the_raw_answer_and_format_error(
    serve, openai_server: OpenAIWireServer
) -> None:
    served = serve(gateway_yaml(openai_server))
    _push(openai_server, "Sorry, no JSON today.")
    r = httpx.post(f"{served.url}/chat", json={"prompt": "json?", "role": "llm.inference", "format": "json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "Sorry, no JSON today."
    assert body["format_error"] == (
        "up:cheap: format 'json': the answer holds no JSON value; the answer: 'Sorry, no JSON today.'"
    )
    # the call was made and paid for: its usage and cost are reported as for any answer
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
    assert body["cost_usd"] == pytest.approx((3 * 1.0 + 5 * 2.0) / 1e6)
    assert r.headers["x-orchlab-cost-usd"] == f"{(3 * 1.0 + 5 * 2.0) / 1e6:.8f}"
    assert openai_server.last.body["response_format"] == {"type": "json_object"}


def test_a_thread_keeps_the_answer_it_was_given(serve, openai_server: OpenAIWireServer, tmp_path) -> None:
    served = serve(gateway_yaml(openai_server, extra=f"store: {{url: 'sqlite:///{tmp_path / 's.db'}'}}\n"))
    _push(openai_server, "not json")
    first = httpx.post(
        f"{served.url}/chat",
        json={"prompt": "q1", "role": "llm.inference", "format": "json", "thread_id": "t"},
    ).json()
    assert (first["answer"], first["thread_id"] is not None) == ("not json", True)
    _push(openai_server, RAW_MARKDOWN)
    second = httpx.post(
        f"{served.url}/chat",
        json={"prompt": "q2", "role": "llm.inference", "thread_id": "t", "context_depth": 10},
    ).json()
    assert second["answer"] == markdown(RAW_MARKDOWN)
    assert openai_server.last.body["messages"] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "not json"},
        {"role": "user", "content": "q2"},
    ]


@pytest.mark.slow
def test_the_local_model_is_held_to_json_by_its_grammar(gguf_path) -> None:
    from orchlab.serve import create_app
    from tests.serve_support import Served

    served = Served(create_app()).start()  # the embedded default: the in-process llama.cpp model
    try:
        prompt = 'Q: What is 2+2? Answer as JSON {"answer": n}.\nA:'
        r = httpx.post(
            f"{served.url}/chat",
            json={"prompt": prompt, "role": "llm.preprocess", "format": "json"},
            timeout=120,
        )
    finally:
        served.stop()
    assert r.status_code == 200, r.text
    assert (r.json()["answer"], r.json()["format_error"]) == ({"answer": "2+2"}, None)
