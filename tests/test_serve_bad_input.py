"""Hostile and broken requests: each gets its OpenAI-shaped 4xx in bounded time, the gateway keeps
serving (a good request succeeds after each), and no key shows up in an answer or a log line."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest

from tests.serve_support import KEY, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer

Q = [{"role": "user", "content": "What is 2+2?"}]
GOOD = b'{"model": "llm.inference", "messages": [{"role": "user", "content": "hi"}]}'
LIMITS = "  max_body_bytes: 4096\n  read_timeout_s: 0.5\n"


@pytest.fixture(name="gw")
def gw_fixture(serve, openai_server: OpenAIWireServer, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    served = serve(gateway_yaml(openai_server, LIMITS))
    yield served
    assert not [r for r in caplog.records if KEY in r.getMessage() or KEY in str(r.exc_info)]


def send(served, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{served.base_url}/chat/completions",
        content=content,
        headers={"content-type": "application/json", **headers},
    )


def still_serving(served) -> None:
    r = send(served, GOOD)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hi"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b'{"model": "llm.inference", "messages": [', None, "not valid JSON"),
        (b"", None, "no body"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"model": "llm.inference"}', "messages", "missing required parameter 'messages'"),
        (b'{"messages": []}', "model", "missing"),
        (b'{"model": "llm.inference", "messages": []}', "messages", "at least 1"),
        (b'{"model": "llm.inference", "messages": "hi"}', "messages", "valid list"),
        (
            b'{"model": "llm.inference", "messages": [{"role": "user", "content": 5}]}',
            "messages[0].content",
            "",
        ),
        (
            b'{"model": "llm.inference", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
            "wizard",
        ),
        (
            b'{"model": "llm.inference", "messages": [{"role": "tool", "content": "x"}]}',
            "messages[0].tool_call_id",
            "tool result without a tool_call_id",
        ),
        (
            b'{"model": "llm.inference", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}',
            "max_tokens",
            "valid integer",
        ),
        (
            b'{"model": "llm.inference", "messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            "temperature",
            "less than or equal to 2",
        ),
        (
            b'{"model": "llm.inference", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            "temperature",
            "finite",
        ),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model", "valid string"),
        (
            b'{"model": "llm.inference", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages[0].content",
            "lone surrogate",
        ),
        (
            b'{"model": "llm.inference", "messages": [{"role": "user", "content": "caf\xe9"}]}',
            None,
            "not valid UTF-8",
        ),
        (b"[" * 3000, None, "nested too deeply"),
    ],
)
def test_bad_bodies_get_a_400_naming_the_problem(gw, openai_server, body, param, words) -> None:
    r = send(gw, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]
    assert openai_server.requests == []
    still_serving(gw)


def test_a_body_over_the_limit_is_a_413_from_its_content_length(gw) -> None:
    started = time.monotonic()
    r = send(gw, b"x" * 10_000_000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "4,096 bytes" in r.json()["error"]["message"] and time.monotonic() - started < 5
    still_serving(gw)


def test_a_chunked_body_over_the_limit_is_a_413_while_reading(gw) -> None:
    def pieces():
        for _ in range(100):
            yield b"x" * 1000

    r = httpx.post(f"{gw.base_url}/chat/completions", content=pieces())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413
    still_serving(gw)


def test_half_a_body_then_silence_is_a_408_within_the_read_timeout(gw) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n" + GOOD[:30]
        )
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = s.recv(4096)
            if not data:
                break
            answer += data
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"request_timeout"' in answer and 0.4 < took < 4.5  # the socket gives up at 5 s
    still_serving(gw)


def test_unknown_role_in_messages_and_wrong_method_keep_serving(gw) -> None:
    r = send(gw, b'{"model": "llm.inference", "messages": [{"role": "root", "content": "x"}]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"
    r = httpx.put(f"{gw.base_url}/chat/completions", content=GOOD)
    assert r.status_code == 405
    still_serving(gw)
