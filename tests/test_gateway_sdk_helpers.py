"""The official ``openai`` SDK's helpers against ``orchlab serve``: the stream helper that accumulates a
``ChatCompletion`` (``client.chat.completions.stream``), ``with_raw_response``,
``with_streaming_response`` and structured output (``client.chat.completions.parse``).

The gateway runs as ``python -m orchlab serve`` (a subprocess on a loopback port) in front of the
loopback OpenAI-wire server of this module (its echo answers "echo: <last message>", in one SSE frame
per word when streamed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pydantic
import pytest

from tests.servers import loopback
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body, sse_frames, stream_chunks

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.server]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: OpenAIWireServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway's ``/v1`` URL: role ``chat`` (priced) on the upstream, alias ``gpt-4o-mini``."""
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "gateway.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            project: sdk_helpers
            env: test
            providers:
              up: {{type: openai, api_base: "{upstream.base_url}", auth_profile: up}}
              up_idle:
                {{type: openai, api_base: "{upstream.base_url}", auth_profile: up, stream_idle_timeout_s: 1}}
            models:
              "up:echo-model": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
            roles:
              chat: {{provider: up, model: echo-model}}
              stalls: {{provider: up_idle, model: echo-model}}
            gateway:
              aliases: {{gpt-4o-mini: chat}}
            tracking: {{enabled: false}}
            """
        ),
        encoding="utf-8",
    )
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "OPENAI_"))},
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "ORCH_AUTH_UP_API_KEY": "sk-upstream-0123456789",
        "ORCH_TRACKING": "0",
    }
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchlab", "serve", "--config", str(config), "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not ready in 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def up(upstream: OpenAIWireServer) -> OpenAIWireServer:
    upstream.reset()
    return upstream


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway, api_key="caller-key", max_retries=0) as c:
        yield c


MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello there"}]
# the echo's words, each its own SSE frame upstream: "echo:", "hello", "there" (a space after each)
STREAMED = "echo: hello there "


def test_stream_helper_accumulates_the_completion(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    with client.chat.completions.stream(
        model="chat", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    deltas = [e.delta for e in events if e.type == "content.delta"]
    assert "".join(deltas) == STREAMED
    assert [e.content for e in events if e.type == "content.done"] == [STREAMED]
    assert final.choices[0].message.content == STREAMED
    assert final.choices[0].finish_reason == "stop"
    assert final.id.startswith("chatcmpl-")
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (4, 3)
    assert up.last.body["stream"] is True
    assert [m["content"] for m in up.last.body["messages"]] == ["Be terse.", "hello there"]


async def test_async_stream_helper_through_an_alias(gateway: str, up: OpenAIWireServer) -> None:
    async with (
        openai.AsyncOpenAI(base_url=gateway, api_key="caller-key", max_retries=0) as client,
        client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream,
    ):
        text = "".join([e.delta async for e in stream if e.type == "content.delta"])
        final = await stream.get_final_completion()
    assert text == final.choices[0].message.content == STREAMED
    assert up.last.body["model"] == "echo-model"  # the alias reached the role's model


def test_raw_response_carries_the_gateway_headers(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    completion = raw.parse()

    assert raw.status_code == 200
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.model == "chat"
    request_id = raw.headers["x-request-id"]
    assert request_id and completion._request_id == request_id  # the SDK reads it as the request id
    # 4 input tokens at $1/Mtok + 3 output tokens at $2/Mtok
    assert float(raw.headers["x-orchlab-cost-usd"]) == pytest.approx(10e-6)
    assert "up:echo-model" in raw.headers["x-orchlab-decision"]
    assert float(raw.headers["x-orchlab-overhead-ms"]) >= 0


def test_raw_response_of_a_stream(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-request-id"]
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == STREAMED
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1


def test_streaming_response_gives_the_sse_lines(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]

    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 4 and usage_chunk["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1] if "usage" in c)
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["stop"]


def test_streaming_response_of_a_completion(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    with client.chat.completions.with_streaming_response.create(model="chat", messages=MESSAGES) as response:
        body = json.loads(response.read())
        headers = response.headers
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert (message["role"], message["content"]) == ("assistant", "echo: hello there")
    assert body["usage"]["total_tokens"] == 7
    assert headers["x-request-id"]


class City(pydantic.BaseModel):
    name: str
    population: int


def test_parse_helper_structured_output(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    answer = json.dumps({"name": "Paris", "population": 2_100_000})
    up.push(Reply(body=completion_body(answer, model="echo-model", prompt_tokens=5, completion_tokens=9)))

    completion = client.chat.completions.parse(model="chat", messages=MESSAGES, response_format=City)

    assert completion.choices[0].message.parsed == City(name="Paris", population=2_100_000)
    sent = up.last.body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "City"
    assert set(sent["json_schema"]["schema"]["properties"]) == {"name", "population"}


def test_stream_helper_raises_the_error_of_an_upstream_that_stalls_mid_stream(
    client: openai.OpenAI, up: OpenAIWireServer
) -> None:
    # two frames, then silence past the role's stream_idle_timeout_s (1 s): the gateway has sent the
    # first token already, so the fault reaches the caller as an SSE error frame
    frames = sse_frames(stream_chunks(["one ", "two "], model="echo-model", prompt_tokens=4))[:2]
    up.push(loopback.Reply(stream=frames, content_type="text/event-stream", stall_s=30))

    received: list[str] = []
    with (
        pytest.raises(openai.APIError) as info,
        client.chat.completions.stream(model="stalls", messages=MESSAGES) as stream,
    ):
        for event in stream:
            if event.type == "content.delta":
                received.append(event.delta)
    assert "".join(received) == "one "  # what arrived before the stall reached the caller
    assert info.value.code == "upstream_timeout"
    assert "silent for 1s (stream_idle_timeout_s)" in info.value.message
    assert "sk-upstream" not in info.value.message


def test_stream_helper_on_an_unknown_model(client: openai.OpenAI, up: OpenAIWireServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.stream(model="no-such-model", messages=MESSAGES).__enter__()
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert "no-such-model" in info.value.message
    assert up.requests == []
