"""Threads over HTTP (issue 15 item 4): ``POST /chat`` with ``thread_id``/``context_depth``,
``x-orchlab-thread-id`` on ``/v1/chat/completions``, ``POST /feedback`` and ``GET /threads/{id}``,
against the loopback OpenAI server, the store a SQLite file of the test's own."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer


def threads_yaml(server: OpenAIWireServer, tmp_path: Path) -> str:
    return gateway_yaml(server, extra=f"store: {{url: 'sqlite:///{tmp_path / 'threads.db'}'}}\n")


def test_chat_thread_injects_the_last_messages_and_stores_the_exchange(
    serve, openai_server: OpenAIWireServer, tmp_path: Path
) -> None:
    served = serve(threads_yaml(openai_server, tmp_path))
    chat = f"{served.url}/chat"
    first = httpx.post(chat, json={"role": "llm.inference", "prompt": "one", "thread_id": "review"}).json()
    assert first["answer"].strip() == "echo: one" and first["message_id"]
    thread_id = first["thread_id"]
    httpx.post(chat, json={"role": "llm.inference", "prompt": "two", "thread_id": thread_id})
    r = httpx.post(
        chat, json={"role": "llm.inference", "prompt": "three", "thread_id": thread_id, "context_depth": 3}
    )
    assert r.status_code == 200, r.text
    assert openai_server.last.body["messages"] == [  # markdown, /chat's default: the answer given
        {"role": "assistant", "content": "echo: one\n"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two\n"},
        {"role": "user", "content": "three"},
    ]
    got = httpx.get(f"{served.url}/threads/{thread_id}").json()
    assert got["name"] == "review" and got["head_id"] == r.json()["message_id"]
    assert [(m["role"], m["content"]) for m in got["messages"]] == [
        ("user", "one"),
        ("assistant", "echo: one\n"),
        ("user", "two"),
        ("assistant", "echo: two\n"),
        ("user", "three"),
        ("assistant", "echo: three\n"),
    ]
    assert got["messages"][1]["target"] == "up:cheap" and got["messages"][1]["usage"]["input_tokens"] == 1

    fb = httpx.post(
        f"{served.url}/feedback", json={"message_id": first["message_id"], "value": 4, "comment": "ok"}
    )
    assert fb.status_code == 200, fb.text
    assert (fb.json()["kind"], fb.json()["value"], fb.json()["comment"]) == ("stars", 4, "ok")


def test_completions_thread_header_stores_and_injects_only_when_asked(
    serve, openai_server: OpenAIWireServer, tmp_path: Path
) -> None:
    served = serve(threads_yaml(openai_server, tmp_path))
    sdk = openai.OpenAI(base_url=served.base_url, api_key="k", max_retries=0)
    q = [{"role": "user", "content": "hello"}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="llm.inference", messages=q, extra_headers={"x-orchlab-thread-id": "api"}
    )
    message_id = raw.headers["x-orchlab-message-id"]
    assert openai_server.last.body["messages"] == q  # stored, not injected
    sdk.chat.completions.create(
        model="llm.inference",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "again"}],
        extra_headers={"x-orchlab-thread-id": "api", "x-orchlab-context-depth": "2"},
    )
    # the system prompt first, then the thread's history, then the new message; only that is stored
    assert [(m["role"], m["content"]) for m in openai_server.last.body["messages"]] == [
        ("system", "be brief"),
        ("user", "hello"),
        ("assistant", "echo: hello"),
        ("user", "again"),
    ]
    thread = httpx.get(f"{served.url}/threads/api").json()  # by name too
    assert thread["messages"][1]["id"] == message_id and len(thread["messages"]) == 4
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant", "user", "assistant"]


def test_unknown_thread_and_message_are_404s(serve, openai_server: OpenAIWireServer, tmp_path: Path) -> None:
    served = serve(threads_yaml(openai_server, tmp_path))
    missing = "01JAAAAAAAAAAAAAAAAAAAAAAA"
    r = httpx.get(f"{served.url}/threads/{missing}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "thread_not_found"
    r = httpx.post(f"{served.url}/chat", json={"role": "llm.inference", "prompt": "x", "thread_id": missing})
    assert r.status_code == 404 and missing in r.json()["error"]["message"]
    r = httpx.post(f"{served.url}/feedback", json={"message_id": missing, "value": "up"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "message_not_found"
    r = httpx.post(f"{served.url}/chat", json={"role": "llm.inference", "prompt": "x", "context_depth": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "context_depth"
    assert openai_server.requests == []


def test_a_streamed_answer_is_stored_at_its_end_and_its_id_rides_in_the_last_chunk(
    serve, openai_server: OpenAIWireServer, tmp_path: Path
) -> None:
    served = serve(threads_yaml(openai_server, tmp_path))
    sdk = openai.OpenAI(base_url=served.base_url, api_key="k", max_retries=0)
    chunks = list(
        sdk.chat.completions.create(
            model="llm.inference",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            extra_headers={"x-orchlab-thread-id": "live"},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    message_id = last.model_extra["orchlab"]["message_id"]
    assert [c.model_extra.get("orchlab") for c in chunks if c is not last] == [None] * (len(chunks) - 1)
    thread = httpx.get(f"{served.url}/threads/live").json()
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [("user", "hello"), ("assistant", text)]
    assert thread["messages"][1]["id"] == message_id == thread["head_id"]
    # the next streamed turn continues the thread, with its history when asked
    again = sdk.chat.completions.create(
        model="llm.inference",
        messages=[{"role": "user", "content": "again"}],
        stream=True,
        extra_headers={"x-orchlab-thread-id": "live", "x-orchlab-context-depth": "2"},
    )
    ids = [c.model_extra["orchlab"]["message_id"] for c in again if c.model_extra.get("orchlab")]
    assert [m["content"] for m in openai_server.last.body["messages"]] == ["hello", text, "again"]
    assert httpx.get(f"{served.url}/threads/live").json()["head_id"] == ids[0]
