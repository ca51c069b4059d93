"""A loopback server that speaks Ollama's REST API (``/api/chat``, ``/api/tags``, ``/api/show``).

``POST /api/chat`` answers with one JSON object, or (``"stream": true``, Ollama's default) with
NDJSON: one object per line, ``"done": false`` while text arrives, then a last ``"done": true``
line with ``done_reason``, ``prompt_eval_count`` and ``eval_count``. ``GET /api/tags`` lists the
installed models, ``POST /api/show`` describes one (``model_info`` with
``<arch>.context_length``). ``GET /`` answers ``Ollama is running``. Errors are
``{"error": "..."}`` with the HTTP status, or an ``{"error": ...}`` line inside a stream.

The default chat reply echoes the last user turn (``"echo: <text>"``); ``prompt_eval_count`` is
the number of words in every message, ``eval_count`` the words of the answer.

Example::

    with OllamaWireServer() as server:
        server.push(ollama_error(404, 'model "llama9" not found, try pulling it first'))
        client = ollama.AsyncClient(host=server.url)
"""

from __future__ import annotations

import json
from typing import Any

from tests.servers import tool_agent
from tests.servers.loopback import LoopbackServer, Reply, word_count

CREATED_AT = "2026-11-22T10:00:00.000000Z"


def ollama_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body={"error": message}, headers=headers or {})


def chat_body(
    text: str, *, model: str, prompt_eval_count: int | None, eval_count: int | None, done_reason: str = "stop"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": text},
        "done_reason": done_reason,
        "done": True,
        "total_duration": 912_000_000,
        "load_duration": 21_000_000,
        "prompt_eval_duration": 80_000_000,
        "eval_duration": 800_000_000,
    }
    if prompt_eval_count is not None:
        body["prompt_eval_count"] = prompt_eval_count
    if eval_count is not None:
        body["eval_count"] = eval_count
    return body


def tool_call_body(name: str, *, model: str) -> dict[str, Any]:
    """A chat answer that calls the tool ``name`` (``message.tool_calls``)."""
    body = chat_body("", model=model, prompt_eval_count=9, eval_count=7)
    body["message"]["tool_calls"] = [{"function": {"name": name, "arguments": {"city": "Paris"}}}]
    return body


def tool_calls_body(calls: list[tuple[str, dict[str, Any]]], *, model: str) -> dict[str, Any]:
    """A chat answer calling several tools at once (Ollama's calls carry no ids)."""
    body = chat_body("", model=model, prompt_eval_count=9, eval_count=7)
    body["message"]["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in calls]
    return body


def tool_calls_lines(calls: list[tuple[str, dict[str, Any]]], *, model: str) -> list[bytes]:
    """A streamed answer calling several tools: one line holding every call, then the done line."""
    first = {**tool_calls_body(calls, model=model), "done": False}
    for key in ("done_reason", "prompt_eval_count", "eval_count"):
        first.pop(key, None)
    return [ndjson(first), ndjson(chat_body("", model=model, prompt_eval_count=9, eval_count=7))]


def _agent_reply(body: dict[str, Any], name: str) -> Reply | None:
    """The tool agent's move (tests/servers/tool_agent.py) when the request offers its tools."""
    if not tool_agent.offers_tools([t.get("function", {}).get("name") for t in body.get("tools") or ()]):
        return None
    messages = body.get("messages") or []
    move = tool_agent.next_move([str(m.get("content")) for m in messages if m.get("role") == "tool"])
    if isinstance(move, str):
        pieces = [w + " " for w in move.split()]
        pieces[-1] = pieces[-1].rstrip()
        if body.get("stream", True):
            return stream_reply(stream_lines(pieces, model=name, prompt_eval_count=9, eval_count=len(pieces)))
        return Reply(body=chat_body(move, model=name, prompt_eval_count=9, eval_count=len(pieces)))
    if body.get("stream", True):
        return stream_reply(tool_calls_lines(move, model=name))
    return Reply(body=tool_calls_body(move, model=name))


def ndjson(obj: Any) -> bytes:
    return (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n"


def stream_lines(
    pieces: list[str], *, model: str, prompt_eval_count: int, eval_count: int, done_reason: str = "stop"
) -> list[bytes]:
    lines = [
        ndjson(
            {
                "model": model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
        )
        for piece in pieces
    ]
    lines.append(
        ndjson(
            chat_body(
                "",
                model=model,
                prompt_eval_count=prompt_eval_count,
                eval_count=eval_count,
                done_reason=done_reason,
            )
        )
    )
    return lines


def stream_reply(lines: list[bytes], **kwargs: Any) -> Reply:
    return Reply(stream=lines, content_type="application/x-ndjson", **kwargs)


def tag(name: str, *, size: int, family: str, parameter_size: str, quantization: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-11-01T09:30:00.123456789Z",
        "size": size,
        "digest": "a" * 64,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameter_size,
            "quantization_level": quantization,
        },
    }


def show_body(
    family: str,
    *,
    context_length: int | None,
    parameters: str = "",
    parameter_size: str = "8.0B",
    quantization: str = "Q4_K_M",
) -> dict[str, Any]:
    info: dict[str, Any] = {"general.architecture": family, "general.parameter_count": 8_030_261_248}
    if context_length is not None:
        info[f"{family}.context_length"] = context_length
    return {
        "modelfile": "FROM /models/blob\n",
        "parameters": parameters,
        "template": "{{ .Prompt }}",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameter_size,
            "quantization_level": quantization,
        },
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": "2026-11-01T09:30:00.123456789Z",
    }


def _echo(body: dict[str, Any]) -> tuple[str, int]:
    messages = body.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    last = users[-1]["content"] if users else ""
    return f"echo: {last}", sum(word_count(str(m.get("content", ""))) for m in messages)


class OllamaWireServer(LoopbackServer):
    """``models`` maps each installed model to ``(tags entry, show body)``."""

    def __init__(self, host: str = "127.0.0.1", *, nodelay: bool = False) -> None:
        super().__init__(host, nodelay=nodelay)
        self.models: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
            "llama3.1:8b": (
                tag(
                    "llama3.1:8b",
                    size=4_920_753_328,
                    family="llama",
                    parameter_size="8.0B",
                    quantization="Q4_K_M",
                ),
                show_body("llama", context_length=131072, parameters='stop "<|eot_id|>"'),
            ),
        }

    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        route = path.split("?")[0].rstrip("/")
        if method in ("GET", "HEAD") and route == "":
            return Reply(body=b"Ollama is running", content_type="text/plain; charset=utf-8")
        if method == "GET" and route == "/api/tags":
            return Reply(body={"models": [entry for entry, _ in self.models.values()]})
        if method == "GET" and route == "/api/version":
            return Reply(body={"version": "0.13.0"})
        if method != "POST":
            return Reply(status=404, body=b"404 page not found", content_type="text/plain")
        if not isinstance(body, dict):
            return ollama_error(400, "invalid request body")
        name = body.get("model", "")
        if route == "/api/show":
            if name not in self.models:
                return ollama_error(404, f"model '{name}' not found")
            return Reply(body=self.models[name][1])
        if route != "/api/chat":
            return Reply(status=404, body=b"404 page not found", content_type="text/plain")
        if name not in self.models:
            return ollama_error(404, f'model "{name}" not found, try pulling it first')
        agent = _agent_reply(body, name)
        if agent is not None:
            return agent
        text, prompt = _echo(body)
        if body.get("stream", True):
            pieces = [w + " " for w in text.split()]
            pieces[-1] = pieces[-1].rstrip()
            return stream_reply(
                stream_lines(pieces, model=name, prompt_eval_count=prompt, eval_count=word_count(text))
            )
        return Reply(body=chat_body(text, model=name, prompt_eval_count=prompt, eval_count=word_count(text)))
