"""A loopback server that speaks the Gemini API wire format (``generativelanguage.googleapis.com``).

``POST /{version}/models/{model}:generateContent`` answers with a GenerateContentResponse;
``:streamGenerateContent?alt=sse`` with ``data: {...}`` SSE frames, each a partial response, the
last with ``finishReason`` and the full ``usageMetadata``. ``GET /{version}/models`` lists models.
Errors use Google's body: ``{"error": {"code", "message", "status", "details"}}``.

The default reply echoes the last user turn (``"echo: <text>"``); usage counts words: the prompt
is every word of ``systemInstruction`` and ``contents``, the candidates the words of the answer.

Example::

    with GeminiWireServer() as server:
        server.push(gemini_error(429, "RESOURCE_EXHAUSTED", "quota", retry_delay="30s"))
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=server.url))
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.servers import tool_agent
from tests.servers.loopback import LoopbackServer, Reply, word_count

_ROUTE = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^:/]+):(?P<method>\w+)$")


def gemini_error(
    code: int,
    status: str,
    message: str,
    *,
    reason: str | None = None,
    retry_delay: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An HTTP error reply with Google's error body (``ErrorInfo``/``RetryInfo`` details optional)."""
    details: list[dict[str, Any]] = []
    if reason:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        )
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return Reply(status=code, body={"error": error}, headers=headers or {})


def usage_metadata(
    prompt: int, candidates: int | None = None, *, cached: int | None = None, thoughts: int | None = None
) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    if cached is not None:
        usage["cachedContentTokenCount"] = cached
    if thoughts is not None:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0)
    return usage


def response_body(
    text: str,
    *,
    model: str,
    usage: dict[str, Any] | None,
    finish_reason: str | None = "STOP",
    parts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": parts if parts is not None else [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish_reason:
        candidate["finishReason"] = finish_reason
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "resp-loopback"}
    if usage is not None:
        body["usageMetadata"] = usage
    return body


def function_call_body(name: str, args: dict[str, Any] | None = None, *, model: str) -> dict[str, Any]:
    """A response whose candidate calls the function ``name`` (a ``functionCall`` part)."""
    part = {"functionCall": {"name": name, "args": args or {"city": "Paris"}}}
    return response_body("", model=model, usage=usage_metadata(9, 7), parts=[part])


def function_calls_body(calls: list[tuple[str, dict[str, Any]]], *, model: str) -> dict[str, Any]:
    """A response calling several functions at once (one ``functionCall`` part each, no ids)."""
    parts = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
    return response_body("", model=model, usage=usage_metadata(9, 7), parts=parts)


def function_call_frames(calls: list[tuple[str, dict[str, Any]]], *, model: str) -> list[bytes]:
    """A streamed answer calling several functions: one frame per call (Gemini streams each call
    whole), the last with the finish reason and usage."""
    frames = []
    for i, (name, args) in enumerate(calls):
        last = i == len(calls) - 1
        part = {"functionCall": {"name": name, "args": args}}
        frames.append(
            sse(
                response_body(
                    "",
                    model=model,
                    usage=usage_metadata(9, 7) if last else usage_metadata(9),
                    finish_reason="STOP" if last else None,
                    parts=[part],
                )
            )
        )
    return frames


def _agent_reply(body: dict[str, Any], model: str, stream: bool) -> Reply | None:
    """The tool agent's move (tests/servers/tool_agent.py) when the request offers its tools."""
    names = [d.get("name") for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
    if not tool_agent.offers_tools(names):
        return None
    results = [
        str(part["functionResponse"].get("response", {}).get("output"))
        for content in body.get("contents") or ()
        for part in content.get("parts") or ()
        if "functionResponse" in part
    ]
    move = tool_agent.next_move(results)
    if isinstance(move, str):
        pieces = [w + " " for w in move.split()]
        pieces[-1] = pieces[-1].rstrip()
        if stream:
            return stream_reply(stream_frames(pieces, model=model, prompt=9, candidates=len(pieces)))
        return Reply(body=response_body(move, model=model, usage=usage_metadata(9, len(pieces))))
    if stream:
        return stream_reply(function_call_frames(move, model=model))
    return Reply(body=function_calls_body(move, model=model))


def sse(data: Any) -> bytes:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return b"data: " + payload + b"\r\n\r\n"


def stream_frames(
    pieces: list[str],
    *,
    model: str,
    prompt: int,
    candidates: int,
    finish_reason: str = "STOP",
    cached: int | None = None,
    thoughts: int | None = None,
) -> list[bytes]:
    """One SSE frame per piece; every frame carries usage so far, the last the finish reason."""
    frames = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        usage = (
            usage_metadata(prompt, candidates, cached=cached, thoughts=thoughts)
            if last
            else usage_metadata(prompt)
        )
        frames.append(
            sse(response_body(piece, model=model, usage=usage, finish_reason=finish_reason if last else None))
        )
    return frames


def stream_reply(frames: list[bytes], **kwargs: Any) -> Reply:
    return Reply(stream=frames, content_type="text/event-stream", **kwargs)


def model_entry(name: str, display: str, input_limit: int, output_limit: int = 65536) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": display,
        "description": f"{display} (loopback)",
        "inputTokenLimit": input_limit,
        "outputTokenLimit": output_limit,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
    }


def _echo(body: dict[str, Any]) -> tuple[str, int]:
    def words(content: dict[str, Any] | None) -> int:
        return sum(word_count(p.get("text", "")) for p in (content or {}).get("parts", []))

    contents = body.get("contents") or []
    users = [c for c in contents if c.get("role") == "user"]
    last = " ".join(p.get("text", "") for p in users[-1]["parts"]) if users else ""
    prompt = words(body.get("systemInstruction")) + sum(words(c) for c in contents)
    return f"echo: {last}", prompt


class GeminiWireServer(LoopbackServer):
    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        route = path.split("?")[0].rstrip("/")
        if method == "GET" and re.fullmatch(r"/[^/]+/models", route):
            return Reply(body={"models": [model_entry("gemini-loopback", "Gemini Loopback", 1048576)]})
        found = _ROUTE.match(route)
        if method != "POST" or found is None:
            return gemini_error(404, "NOT_FOUND", f"no route {method} {route}")
        if not isinstance(body, dict):
            return gemini_error(400, "INVALID_ARGUMENT", "expected a JSON body")
        model = found["model"]
        agent = _agent_reply(body, model, found["method"] == "streamGenerateContent")
        if agent is not None:
            return agent
        text, prompt = _echo(body)
        candidates = word_count(text)
        if found["method"] == "streamGenerateContent":
            pieces = [w + " " for w in text.split()]
            pieces[-1] = pieces[-1].rstrip()
            return stream_reply(stream_frames(pieces, model=model, prompt=prompt, candidates=candidates))
        if found["method"] == "generateContent":
            return Reply(body=response_body(text, model=model, usage=usage_metadata(prompt, candidates)))
        return gemini_error(404, "NOT_FOUND", f"unknown method {found['method']}")
