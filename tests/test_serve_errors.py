"""Every upstream fault and refused call reaches the caller as OpenAI's error body with its status;
no key, stack trace or path in it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve_support import KEY, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply, stream_chunks

Q = [{"role": "user", "content": "What is 2+2?"}]


def post(served, **body) -> httpx.Response:
    body = {"model": "llm.inference", "messages": Q, **body}
    return httpx.post(f"{served.base_url}/chat/completions", json=body)


@pytest.mark.parametrize(
    ("reply", "status", "code", "extra"),
    [
        (Reply.error(429, "slow down", headers={"retry-after": "7"}), 429, "rate_limit_exceeded", "7"),
        (Reply.error(401, f"bad key {KEY}"), 502, "upstream_auth", None),
        (Reply.error(500, "boom"), 503, "upstream_unavailable", None),
        (Reply(body=b"{not json", content_type="application/json"), 502, "upstream_error", None),
        (
            Reply.error(
                400, "This model's maximum context length is 10 tokens", code="context_length_exceeded"
            ),
            413,
            "context_length_exceeded",
            None,
        ),
    ],
)
def test_upstream_faults_map_to_statuses(
    serve, openai_server: OpenAIWireServer, reply, status, code, extra
) -> None:
    served = serve(gateway_yaml(openai_server))
    openai_server.push(reply)
    r = post(served)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    assert r.headers.get("retry-after") == extra
    assert KEY not in r.text and "Traceback" not in r.text and "/tmp" not in r.text
    assert r.headers["x-request-id"]
    assert post(served).status_code == 200  # and it keeps serving


def test_upstream_timeout_is_504(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server).replace("max_retries: 0", "max_retries: 0, timeout_s: 0.3"))
    openai_server.push(Reply(delay_s=2.0))
    r = post(served)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_sdk_raises_its_own_error_types(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    client = openai.OpenAI(base_url=served.base_url, api_key="k", max_retries=0)
    openai_server.push(Reply.error(429, "slow down", headers={"retry-after": "2"}))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="llm.inference", messages=Q)
    assert info.value.response.headers["retry-after"] == "2" and "slow down" in info.value.message


def test_budget_and_context_window_are_refused_before_sending(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server, extra="budgets: {per_call_usd: 0.000001}"))
    r = post(served, max_tokens=1000)
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    assert "retry-after" not in r.headers
    r = post(served, model="llm.tiny", messages=[{"role": "user", "content": "word " * 200}])
    assert r.status_code == 413 and r.json()["error"]["code"] == "context_length_exceeded"
    assert openai_server.requests == []


def test_error_after_the_stream_started_is_an_sse_error_frame(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    chunks = stream_chunks(["4", " is"], model="cheap", prompt_tokens=3)[:3]
    openai_server.push(Reply(stream_chunks=chunks, reset=True))  # the upstream dies mid-stream
    body = {"model": "llm.inference", "messages": Q, "stream": True}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body) as r:
        assert r.status_code == 200
        frames = [line for line in r.iter_lines() if line]
    assert frames[-1].startswith('data: {"error"') and "[DONE]" not in frames[-1]
    assert '"content":"4"' in "".join(frames)


def test_error_before_the_first_token_is_a_plain_error(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    openai_server.push(Reply.error(429, "slow down", headers={"retry-after": "3"}))
    client = openai.OpenAI(base_url=served.base_url, api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        list(client.chat.completions.create(model="llm.inference", messages=Q, stream=True))


def test_an_upstream_fault_names_the_provider_not_its_url(serve, openai_server: OpenAIWireServer) -> None:
    """The upstream's address (a configured api_base, an internal host and port) stays inside."""
    from tests.serve_support import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1"
    yaml = gateway_yaml(openai_server).replace(openai_server.base_url, closed)
    served = serve(yaml.replace("max_retries: 0", "max_retries: 0, timeout_s: 2"))
    r = post(served)
    assert r.status_code == 503, r.text
    message = r.json()["error"]["message"]
    assert closed not in message and "127.0.0.1" not in message
    assert "provider 'up'" in message
