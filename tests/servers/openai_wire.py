"""A loopback HTTP server that speaks OpenAI's chat-completions wire format (for tests and benchmarks).

Replies are scripted (`push`) or, by default, a deterministic echo completion whose usage counts
words. Every request is recorded (method, path, headers, JSON body) so tests can assert exactly
what the SDK sent.

Example::

    with OpenAIWireServer() as server:
        server.push(Reply.error(429, "slow down", headers={"retry-after": "2"}))
        client = openai.OpenAI(base_url=server.base_url, api_key="k")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A JSON-able body, raw ``bytes`` (sent as they are), or None for the default echo."""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    stream_chunks: list[Any] | None = None
    """For SSE: each item is a JSON-able chunk (or raw ``bytes``); ``[DONE]`` is appended."""
    chunk_delay_s: float = 0.0

    @staticmethod
    def error(status: int, message: str, *, type_: str = "error", code: str | None = None,
              headers: dict[str, str] | None = None) -> Reply:
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return Reply(status=status, body=body, headers=headers or {})


def completion_body(content: str, *, model: str, prompt_tokens: int, completion_tokens: int,
                    finish_reason: str = "stop", logprobs: list[float] | None = None) -> dict[str, Any]:
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


def stream_chunks(pieces: list[str], *, model: str, prompt_tokens: int,
                  completion_tokens: int | None = None) -> list[dict[str, Any]]:
    """SSE chunks as OpenAI sends them with ``stream_options.include_usage``."""
    base = {"id": "chatcmpl-loopback", "object": "chat.completion.chunk", "created": 0, "model": model}
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None}]},
    ]
    for piece in pieces:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                            "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out_tokens = len(pieces) if completion_tokens is None else completion_tokens
    chunks.append({**base, "choices": [], "usage": {
        "prompt_tokens": prompt_tokens, "completion_tokens": out_tokens,
        "total_tokens": prompt_tokens + out_tokens}})
    return chunks


def _echo(body: dict[str, Any]) -> tuple[str, int, int]:
    messages = body.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    content = f"echo: {last}"
    return content, prompt_tokens, len(content.split())


class OpenAIWireServer:
    """``nodelay=True`` sets TCP_NODELAY on accepted sockets: headers and body go out as separate
    writes, and without it Nagle's algorithm plus the client's delayed ACK can stall a reply by
    ~40 ms (the benchmark uses it; the default keeps the stock socket settings)."""

    def __init__(self, host: str = "127.0.0.1", *, nodelay: bool = False) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = nodelay

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                server._handle(self, body)

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one (the default echo when none is left)."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        """Forget recorded requests and unused scripted replies (a server shared by several tests)."""
        with self._lock:
            self.requests.clear()
            self._script.clear()

    def start(self) -> OpenAIWireServer:
        # a short poll interval: stop() waits up to one interval (0.5 s by default) per server
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAIWireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            self.requests.append(Recorded(h.command, h.path, dict(h.headers.items()), body))
            reply = self._script.popleft() if self._script else None
        if reply is None:
            reply = self._default(h.path, body)
        elif reply.body is None and reply.stream_chunks is None:
            # a scripted delay/status/headers around the default echo, as `Reply.body` documents
            default = self._default(h.path, body)
            reply = Reply(reply.status, default.body, reply.headers, reply.delay_s, default.stream_chunks,
                          reply.chunk_delay_s)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        try:
            if reply.stream_chunks is not None:
                self._send_stream(h, reply)
            else:
                self._send(h, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _default(self, path: str, body: Any) -> Reply:
        if path.rstrip("/").endswith("/models"):
            return Reply(body={"object": "list", "data": [
                {"id": "loopback-model", "object": "model", "created": 0, "owned_by": "orchlab-tests"}]})
        if not isinstance(body, dict):
            return Reply.error(400, "expected a JSON body")
        content, prompt_tokens, completion_tokens = _echo(body)
        model = body.get("model", "unknown")
        if body.get("stream"):
            pieces = [w + " " for w in content.split()]
            return Reply(stream_chunks=stream_chunks(pieces, model=model, prompt_tokens=prompt_tokens))
        return Reply(body=completion_body(content, model=model, prompt_tokens=prompt_tokens,
                                          completion_tokens=completion_tokens))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply) -> None:
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        h.send_response(reply.status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _send_stream(h: BaseHTTPRequestHandler, reply: Reply) -> None:
        h.send_response(reply.status)
        h.send_header("content-type", "text/event-stream")
        h.send_header("cache-control", "no-cache")
        h.send_header("connection", "close")
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        for chunk in [*(reply.stream_chunks or []), b"[DONE]"]:
            data = chunk if isinstance(chunk, bytes) else json.dumps(chunk).encode()
            h.wfile.write(b"data: " + data + b"\n\n")
            h.wfile.flush()
            if reply.chunk_delay_s:
                time.sleep(reply.chunk_delay_s)
        h.close_connection = True
