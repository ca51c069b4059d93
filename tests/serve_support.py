"""The gateway on loopback for tests: `Served` runs ``create_app(...)`` on uvicorn in a thread, on
a free port; `served` is the fixture. Upstream: the loopback wire servers."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.openai_wire import OpenAIWireServer

KEY = "sk-gw-upstream-0123456789-SECRET"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """uvicorn serving an app on 127.0.0.1 in a background thread (its own event loop)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def gateway_yaml(
    upstream: OpenAIWireServer, gateway: str = "", extra: str = "", *, tracking: bool = False
) -> str:
    """Roles on the loopback OpenAI server (key in ORCH_AUTH_UP_API_KEY), priced; ``gateway``
    is the body of the ``gateway:`` section (indented by 2)."""
    section = f"gateway:\n{gateway}" if gateway else ""
    return f"""
project: gw
tracking: {{enabled: {"true" if tracking else "false"}}}
providers:
  up: {{type: openai, api_base: "{upstream.base_url}", auth_profile: up, max_retries: 0}}
models:
  "up:cheap": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
  "up:big": {{input_price_per_mtok: 10.0, output_price_per_mtok: 20.0}}
  "up:tiny": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0, context_window: 50}}
roles:
  llm.inference: {{provider: up, model: cheap}}
  llm.big: {{provider: up, model: big}}
  llm.tiny: {{provider: up, model: tiny}}
{extra}
{section}
"""


class StreamDropWatch:
    """Make a loopback server stream ``frames`` and then hold, noticing when the client drops the
    connection (the upstream call was cancelled)."""

    def __init__(self, server: OpenAIWireServer, frames: list[bytes], hold_s: float = 10.0) -> None:
        self.dropped = threading.Event()

        def handle(h: Any, body: Any) -> None:
            h.send_response(200)
            h.send_header("content-type", "text/event-stream")
            h.send_header("connection", "close")
            h.end_headers()
            for frame in frames:
                h.wfile.write(frame)
            h.wfile.flush()
            sock: socket.socket = h.connection
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], 0.01)
                if ready and sock.recv(1, socket.MSG_PEEK) == b"":
                    self.dropped.set()
                    break
            h.close_connection = True

        server._handle = handle  # type: ignore[method-assign]


@pytest.fixture(name="serve")
def serve_fixture(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> Iterator[Callable[..., Served]]:
    """``serve(yaml)`` (or ``serve(client=...)``): the gateway for it, stopped after the test."""
    from orchlab.serve import create_app

    monkeypatch.setenv("ORCH_AUTH_UP_API_KEY", KEY)
    started: list[Served] = []

    def start(yaml: str | None = None, **kwargs: Any) -> Served:
        app = create_app(write_config(yaml) if yaml is not None else None, **kwargs)
        served = Served(app).start()
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
