"""A loopback server that speaks Anthropic's Messages API wire format.

``POST /v1/messages`` answers with a Message JSON body, or (``"stream": true``) with the SSE
events Anthropic sends: ``message_start``, ``content_block_start``, ``ping``,
``content_block_delta``, ``content_block_stop``, ``message_delta``, ``message_stop``. Errors use
Anthropic's body (``{"type": "error", "error": {"type": ..., "message": ...}}``), in an HTTP
reply or as an ``error`` event inside a stream. ``GET /v1/models`` lists models.

The default reply echoes the last user turn (``"echo: <text>"``); usage counts words: input is
every word of ``system`` and ``messages``, output the words of the answer.

Example::

    with AnthropicWireServer() as server:
        server.push(anthropic_error(529, "overloaded_error", "Overloaded"))
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="k")
"""

from __future__ import annotations

import json
from typing import Any

from tests.servers import tool_agent
from tests.servers.loopback import LoopbackServer, Reply, word_count

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_loopback"}


def anthropic_error(
    status: int, type_: str | None = None, message: str = "error", *, headers: dict[str, str] | None = None
) -> Reply:
    """An HTTP error reply with Anthropic's error body."""
    kind = type_ or ERROR_TYPES.get(status, "api_error")
    return Reply(
        status=status,
        body=error_body(kind, message),
        headers={"request-id": "req_loopback", **(headers or {})},
    )


def message_body(
    text: str,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    stop_reason: str = "end_turn",
    cache_read: int | None = None,
    cache_write: int | None = None,
    thinking_tokens: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "service_tier": "standard",
    }
    if thinking_tokens is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    return {
        "id": "msg_loopback",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def sse(event: str, data: Any) -> bytes:
    """One SSE frame as Anthropic writes it (``event:`` line, ``data:`` line, blank line)."""
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def stream_events(
    pieces: list[str],
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    stop_reason: str = "end_turn",
    cache_read: int = 0,
    cache_write: int = 0,
) -> list[bytes]:
    """The event sequence of one streamed text answer (with a ``ping``, as the API sends)."""
    start = message_body(
        "",
        model=model,
        input_tokens=input_tokens,
        output_tokens=1,
        cache_read=cache_read,
        cache_write=cache_write,
    )
    start["content"], start["stop_reason"] = [], None
    frames = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        sse("ping", {"type": "ping"}),
    ]
    frames += [
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
        )
        for piece in pieces
    ]
    frames += [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return frames


def tool_use_body(name: str, tool_input: dict[str, Any] | None = None, *, model: str) -> dict[str, Any]:
    """A Message whose answer is a ``tool_use`` block (``stop_reason: tool_use``)."""
    body = message_body("", model=model, input_tokens=9, output_tokens=7, stop_reason="tool_use")
    body["content"] = [
        {"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input or {"city": "Paris"}}
    ]
    return body


def tool_use_events(name: str, *, model: str) -> list[bytes]:
    """The events of a streamed ``tool_use`` answer (its input arrives as ``input_json_delta``)."""
    start = message_body("", model=model, input_tokens=9, output_tokens=1)
    start["content"], start["stop_reason"] = [], None
    block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}
    return [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def tool_uses_body(
    calls: list[tuple[str, str, dict[str, Any]]], *, model: str, text: str = ""
) -> dict[str, Any]:
    """A Message calling several tools at once: ``calls`` are ``(id, name, input)``."""
    body = message_body(text, model=model, input_tokens=9, output_tokens=7, stop_reason="tool_use")
    blocks = [{"type": "text", "text": text, "citations": None}] if text else []
    body["content"] = blocks + [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
    return body


def tool_uses_events(calls: list[tuple[str, str, dict[str, Any]]], *, model: str) -> list[bytes]:
    """The events of a streamed answer calling several tools: one ``tool_use`` block each, its
    input in two ``input_json_delta`` pieces."""
    start = message_body("", model=model, input_tokens=9, output_tokens=1)
    start["content"], start["stop_reason"] = [], None
    frames = [sse("message_start", {"type": "message_start", "message": start})]
    for index, (call_id, name, tool_input) in enumerate(calls):
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        text = json.dumps(tool_input)
        cut = len(text) // 2
        frames.append(
            sse(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        for piece in (text[:cut], text[cut:]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            frames.append(
                sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    frames += [
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return frames


def _agent_reply(body: dict[str, Any]) -> Reply | None:
    """The tool agent's move (tests/servers/tool_agent.py) when the request offers its tools."""
    if not tool_agent.offers_tools([t.get("name") for t in body.get("tools") or ()]):
        return None
    messages = body.get("messages") or []
    results = []
    for m in messages:
        for block in m.get("content") if isinstance(m.get("content"), list) else ():
            if block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(b.get("text", "") for b in content)
                results.append(str(content))
    move = tool_agent.next_move(results)
    model = body.get("model", "unknown")
    step = sum(1 for m in messages if m.get("role") == "assistant")
    if isinstance(move, str):
        pieces = [w + " " for w in move.split()]
        pieces[-1] = pieces[-1].rstrip()
        if body.get("stream"):
            return stream_reply(stream_events(pieces, model=model, input_tokens=9, output_tokens=len(pieces)))
        return Reply(body=message_body(move, model=model, input_tokens=9, output_tokens=len(pieces)))
    calls = [(f"toolu_{step}_{i}", name, args) for i, (name, args) in enumerate(move)]
    if body.get("stream"):
        return stream_reply(tool_uses_events(calls, model=model))
    return Reply(body=tool_uses_body(calls, model=model))


def stream_reply(frames: list[bytes], **kwargs: Any) -> Reply:
    return Reply(stream=frames, content_type="text/event-stream", **kwargs)


def models_body(*models: tuple[str, str, int | None]) -> dict[str, Any]:
    data = [
        {
            "type": "model",
            "id": mid,
            "display_name": name,
            "created_at": "2026-01-15T00:00:00Z",
            "lifecycle": "active",
            "max_input_tokens": window,
            "max_tokens": 64000,
        }
        for mid, name, window in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _echo(body: dict[str, Any]) -> tuple[str, int]:
    messages = body.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    last = users[-1]["content"] if users else ""
    system = body.get("system") or ""
    words = word_count(system if isinstance(system, str) else json.dumps(system))
    words += sum(word_count(str(m.get("content", ""))) for m in messages)
    return f"echo: {last}", words


class AnthropicWireServer(LoopbackServer):
    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        route = path.split("?")[0].rstrip("/")
        if method == "GET" and route == "/v1/models":
            return Reply(body=models_body(("claude-loopback-1", "Claude Loopback", 200000)))
        if method != "POST" or route != "/v1/messages":
            return anthropic_error(404, "not_found_error", f"no route {method} {route}")
        if not isinstance(body, dict):
            return anthropic_error(400, "invalid_request_error", "expected a JSON body")
        agent = _agent_reply(body)
        if agent is not None:
            return agent
        text, input_tokens = _echo(body)
        model = body.get("model", "unknown")
        output_tokens = word_count(text)
        if body.get("stream"):
            pieces = [w + " " for w in text.split()]
            pieces[-1] = pieces[-1].rstrip()
            return stream_reply(
                stream_events(pieces, model=model, input_tokens=input_tokens, output_tokens=output_tokens)
            )
        return Reply(
            body=message_body(text, model=model, input_tokens=input_tokens, output_tokens=output_tokens)
        )
