"""A loopback HTTP server that speaks OpenAI's chat-completions wire format (for tests and benchmarks).

Replies are scripted (`push`) or, by default, a deterministic echo completion whose usage counts
words. Every request is recorded (method, path, headers, JSON body) so tests can assert exactly
what the SDK sent. The HTTP machinery is `tests.servers.loopback.LoopbackServer`'s.

Example::

    with OpenAIWireServer() as server:
        server.push(Reply.error(429, "slow down", headers={"retry-after": "2"}))
        client = openai.OpenAI(base_url=server.base_url, api_key="k")
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from tests.servers import loopback, tool_agent
from tests.servers.loopback import LoopbackServer, Recorded

__all__ = [
    "OpenAIWireServer",
    "Recorded",
    "Reply",
    "completion_body",
    "sse_frames",
    "stream_chunks",
    "tool_call_body",
    "tool_call_chunks",
    "tool_calls_body",
    "tool_calls_chunks",
]


@dataclass
class Reply(loopback.Reply):
    """A scripted reply. ``body=None`` (and no ``stream_chunks``) keeps the default echo, so a
    reply can script only a delay, a status or headers around it."""

    stream_chunks: list[Any] | None = None
    """For SSE: each item is a JSON-able chunk (or raw ``bytes``); ``[DONE]`` is appended."""

    @staticmethod
    def error(
        status: int,
        message: str,
        *,
        type_: str = "error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return Reply(status=status, body=body, headers=headers or {})


def completion_body(
    content: str,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
    logprobs: list[float] | None = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "finish_reason": finish_reason,
        "logprobs": None,
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {"token": f"t{i}", "logprob": lp, "bytes": None, "top_logprobs": []}
                for i, lp in enumerate(logprobs)
            ],
            "refusal": None,
        }
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_chunks(
    pieces: list[str], *, model: str, prompt_tokens: int, completion_tokens: int | None = None
) -> list[dict[str, Any]]:
    """SSE chunks as OpenAI sends them with ``stream_options.include_usage``."""
    base = {"id": "chatcmpl-loopback", "object": "chat.completion.chunk", "created": 0, "model": model}
    chunks: list[dict[str, Any]] = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
    ]
    for piece in pieces:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out_tokens = len(pieces) if completion_tokens is None else completion_tokens
    chunks.append(
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": out_tokens,
                "total_tokens": prompt_tokens + out_tokens,
            },
        }
    )
    return chunks


def tool_call_body(name: str, arguments: str = '{"city": "Paris"}', *, model: str) -> dict[str, Any]:
    """A completion whose answer is a call to the function ``name`` (``finish_reason: tool_calls``)."""
    body = completion_body("", model=model, prompt_tokens=9, completion_tokens=7, finish_reason="tool_calls")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
    return body


def tool_call_chunks(name: str, arguments: str = '{"city": "Paris"}', *, model: str) -> list[dict[str, Any]]:
    """The SSE chunks of a streamed call to ``name``: the name in the first delta, then the arguments."""
    base = {"id": "chatcmpl-loopback", "object": "chat.completion.chunk", "created": 0, "model": model}

    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}
    half = len(arguments) // 2
    return [
        delta({"role": "assistant", "content": None, "tool_calls": [call]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        delta({}, "tool_calls"),
    ]


def tool_calls_body(
    calls: list[tuple[str, str, str]], *, model: str, content: str | None = None
) -> dict[str, Any]:
    """A completion calling several functions at once: ``calls`` are ``(id, name, arguments text)``."""
    body = completion_body("", model=model, prompt_tokens=9, completion_tokens=7, finish_reason="tool_calls")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ],
    }
    return body


def tool_calls_chunks(calls: list[tuple[str, str, str]], *, model: str) -> list[dict[str, Any]]:
    """A streamed answer calling several functions: each call's first delta (id, name), then its
    arguments in two pieces, the calls' pieces interleaved (as OpenAI does with parallel calls);
    usage last."""
    base = {"id": "chatcmpl-loopback", "object": "chat.completion.chunk", "created": 0, "model": model}

    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    chunks = [delta({"role": "assistant", "content": None})]
    for i, (cid, name, _) in enumerate(calls):
        first = {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
        chunks.append(delta({"tool_calls": [first]}))
    for half in (0, 1):
        for i, (_, _, args) in enumerate(calls):
            cut = len(args) // 2
            piece = args[:cut] if half == 0 else args[cut:]
            chunks.append(delta({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    chunks.append(delta({}, "tool_calls"))
    chunks.append(
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}}
    )
    return chunks


def _agent_reply(body: dict[str, Any]) -> Reply | None:
    """The tool agent's move (tests/servers/tool_agent.py) when the request offers its tools."""
    names = [t.get("function", {}).get("name") for t in body.get("tools") or ()]
    if not tool_agent.offers_tools(names):
        return None
    messages = body.get("messages") or []
    results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
    move = tool_agent.next_move(results)
    model = body.get("model", "unknown")
    step = sum(1 for m in messages if m.get("role") == "assistant")
    if isinstance(move, str):
        pieces = [w + " " for w in move.split()]
        pieces[-1] = pieces[-1].rstrip()
        if body.get("stream"):
            return Reply(stream_chunks=stream_chunks(pieces, model=model, prompt_tokens=9))
        return Reply(body=completion_body(move, model=model, prompt_tokens=9, completion_tokens=len(pieces)))
    calls = [(f"call_{step}_{i}", name, json.dumps(args)) for i, (name, args) in enumerate(move)]
    if body.get("stream"):
        return Reply(stream_chunks=tool_calls_chunks(calls, model=model))
    return Reply(body=tool_calls_body(calls, model=model))


def _echo(body: dict[str, Any]) -> tuple[str, int, int]:
    messages = body.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    content = f"echo: {last}"
    return content, prompt_tokens, len(content.split())


def sse_frames(chunks: list[Any]) -> list[bytes]:
    """SSE frames of ``chunks`` (JSON-able or raw ``bytes``), with the closing ``[DONE]``."""
    frames = [c if isinstance(c, bytes) else json.dumps(c).encode() for c in [*chunks, b"[DONE]"]]
    return [b"data: " + f + b"\n\n" for f in frames]


class OpenAIWireServer(LoopbackServer):
    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> OpenAIWireServer:
        super().start()
        return self

    def __enter__(self) -> OpenAIWireServer:
        return self.start()

    def reply_for(self, scripted: loopback.Reply | None, method: str, path: str, body: Any) -> loopback.Reply:
        reply = scripted if scripted is not None else self.default_reply(method, path, body)
        if isinstance(reply, Reply) and reply.body is None and reply.stream_chunks is None:
            # a scripted delay, status or headers around the default echo
            default = self.default_reply(method, path, body)
            reply = replace(reply, body=default.body, stream_chunks=default.stream_chunks)
        if isinstance(reply, Reply) and reply.stream_chunks is not None:
            return replace(reply, stream=sse_frames(reply.stream_chunks), content_type="text/event-stream")
        return reply

    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        if path.rstrip("/").endswith("/models"):
            return Reply(
                body={
                    "object": "list",
                    "data": [
                        {"id": "loopback-model", "object": "model", "created": 0, "owned_by": "orchlab-tests"}
                    ],
                }
            )
        if not isinstance(body, dict):
            return Reply.error(400, "expected a JSON body")
        agent = _agent_reply(body)
        if agent is not None:
            return agent
        content, prompt_tokens, completion_tokens = _echo(body)
        model = body.get("model", "unknown")
        if body.get("stream"):
            pieces = [w + " " for w in content.split()]
            return Reply(stream_chunks=stream_chunks(pieces, model=model, prompt_tokens=prompt_tokens))
        return Reply(
            body=completion_body(
                content, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        )
