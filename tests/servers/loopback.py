"""The shared machinery of the loopback wire servers (OpenAI, Anthropic, Gemini, Ollama).

A threaded stdlib HTTP server on 127.0.0.1, port 0. Every request is recorded (method, path with
its query, headers, JSON body). Replies are scripted with `push` (optionally only for paths that
contain a given string) or come from the subclass's `default_reply`, which speaks its provider's
real wire format. Streamed replies are written frame by frame and end by closing the connection.

Example::

    class MyServer(LoopbackServer):
        def default_reply(self, method, path, body):
            return Reply(body={"ok": True})

    with MyServer() as server:
        server.push(Reply(status=429, body={"error": "slow down"}, headers={"retry-after": "2"}))
        httpx.get(server.url + "/anything")    # -> the 429
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    """The request target as sent, query string included."""
    headers: dict[str, str]
    body: Any
    """The decoded JSON body, the raw bytes when it was not JSON, or None when there was none."""

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A JSON-able body, or raw ``bytes`` sent as they are."""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Sleep before answering (to provoke client timeouts)."""
    stream: list[bytes] | None = None
    """Frames of a streamed reply, already encoded; written one by one, then the connection closes."""
    content_type: str = "application/json"
    chunk_delay_s: float = 0.0
    match: str | None = None
    """Only a request whose path contains this string takes the reply (None: any request)."""
    trickle_s: float = 0.0
    """Write the body (or each stream frame) one byte at a time, this long between bytes."""
    stall_s: float = 0.0
    """Say nothing for this long: after the headers (a body) or after the frames (a stream)."""
    stall_after: int | None = None
    """In a stream, stall after this many frames and then send the rest (None: after all)."""
    after: threading.Event | None = None
    """Answer only once this is set (a test's gate: e.g. after a rival has made its first tokens);
    waits at most 30 s."""
    reset: bool = False
    """End with a TCP reset instead of finishing the reply (a body is cut half way): a server that
    dies mid-reply."""


class LoopbackServer:
    """``nodelay=True`` sets TCP_NODELAY on accepted sockets: headers and body go out as separate
    writes, and without it Nagle's algorithm plus the client's delayed ACK can stall a reply by
    ~40 ms (benchmarks use it; the default keeps the stock socket settings)."""

    def __init__(self, host: str = "127.0.0.1", *, nodelay: bool = False) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # ends stalls and trickles when the server stops
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = nodelay

            def log_message(self, *args: Any) -> None:
                pass

            def _read_body(self) -> Any:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not raw:
                    return None
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw

            def do_GET(self) -> None:
                server._handle(self, self._read_body())

            def do_POST(self) -> None:
                server._handle(self, self._read_body())

            def do_DELETE(self) -> None:
                server._handle(self, self._read_body())

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True

    # --- what a subclass provides -----------------------------------------------------------

    def default_reply(self, method: str, path: str, body: Any) -> Reply:
        return Reply(status=404, body={"error": f"no route for {method} {path}"})

    def reply_for(self, scripted: Reply | None, method: str, path: str, body: Any) -> Reply:
        """What a request gets: its scripted reply, else `default_reply`."""
        return scripted if scripted is not None else self.default_reply(method, path, body)

    # --- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *replies: Reply) -> None:
        """Queue replies; each request takes the first one that matches it (else the default)."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        """Forget recorded requests and unused scripted replies (a server shared by several tests)."""
        with self._lock:
            self.requests.clear()
            self._script.clear()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def start(self) -> LoopbackServer:
        # A short poll interval: `shutdown()` waits for the next poll, and tests stop a server each.
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------------

    def _take(self, path: str) -> Reply | None:
        for reply in self._script:
            if reply.match is None or reply.match in path:
                self._script.remove(reply)
                return reply
        return None

    def _handle(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            self.requests.append(Recorded(h.command, h.path, dict(h.headers.items()), body))
            scripted = self._take(h.path)
        reply = self.reply_for(scripted, h.command, h.path, body)
        if reply.after is not None:
            reply.after.wait(30)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        try:
            if reply.stream is not None:
                self._send_stream(h, reply)
            else:
                self._send(h, reply)
        except (OSError, ValueError):  # the client went away (or the server is stopping)
            h.close_connection = True

    def _write(self, h: BaseHTTPRequestHandler, data: bytes, reply: Reply) -> None:
        if not reply.trickle_s:
            h.wfile.write(data)
            h.wfile.flush()
            return
        for i in range(len(data)):
            h.wfile.write(data[i : i + 1])
            h.wfile.flush()
            if self._stopping.wait(reply.trickle_s):
                raise BrokenPipeError("the server is stopping")

    def _stall(self, reply: Reply) -> None:
        if reply.stall_s and self._stopping.wait(reply.stall_s):
            raise BrokenPipeError("the server is stopping")

    @staticmethod
    def _reset(h: BaseHTTPRequestHandler) -> None:
        # SO_LINGER 0: close() sends a RST, so the client reads "connection reset by peer"
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
        h.close_connection = True

    def _send(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        h.send_response(reply.status)
        h.send_header("content-type", reply.content_type)
        h.send_header("content-length", str(len(data)))
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()
        self._stall(reply)
        if reply.reset:
            self._write(h, data[: len(data) // 2], reply)
            self._reset(h)
            return
        self._write(h, data, reply)

    def _send_stream(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        h.send_response(reply.status)
        h.send_header("content-type", reply.content_type)
        h.send_header("cache-control", "no-cache")
        h.send_header("connection", "close")
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()
        for i, frame in enumerate(reply.stream or []):
            if i == reply.stall_after:
                self._stall(reply)
            self._write(h, frame, reply)
            if reply.chunk_delay_s:
                time.sleep(reply.chunk_delay_s)
        if reply.stall_after is None:
            self._stall(reply)
        if reply.reset:
            self._reset(h)
        h.close_connection = True


def closed_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def word_count(text: str) -> int:
    return len(text.split())
