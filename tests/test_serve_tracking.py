"""Every gateway request is a trace in the config's MLflow experiment, tagged with the endpoint,
the caller and the request id; a caller who leaves mid-stream still leaves a trace with the partial
answer, and the upstream call is cancelled; SIGTERM lets the request in flight finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from tests.serve_support import StreamDropWatch, free_port, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply, sse_frames, stream_chunks
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    all_traces,
    experiment_fixture,
    shared_store_fixture,
    stored_ids,
    template_db_fixture,
    tracking_on_fixture,
    wait_until,
)

Q = [{"role": "user", "content": "What is 2+2?"}]


def uri() -> str:
    return os.environ["ORCH_TRACKING_URI"]


def traced(experiment: str, request_id: str):
    """The trace of the gateway request ``request_id`` once it is stored (else None)."""
    if not stored_ids(uri(), experiment):
        return None
    found = [t for t in all_traces(uri(), experiment) if t.info.tags.get("orchlab.request_id") == request_id]
    assert len(found) <= 1
    return found[0] if found else None


def test_each_request_is_a_trace_tagged_with_endpoint_caller_and_request_id(
    serve, openai_server: OpenAIWireServer, experiment: str
) -> None:
    served = serve(gateway_yaml(openai_server, tracking=True))
    client = openai.OpenAI(base_url=served.base_url, api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="llm.inference",
        messages=Q,
        user="alice",
        metadata={"team": "ds"},
        extra_headers={"x-request-id": "req-42"},
    )
    trace_id = raw.headers["x-orchlab-trace-id"]
    assert trace_id.startswith("tr-") and raw.headers["x-request-id"] == "req-42"
    trace = wait_until(lambda: traced(experiment, "req-42"), what="the trace landing")
    assert trace.info.trace_id == trace_id
    tags = trace.info.tags
    assert tags["orchlab.endpoint"] == "/v1/chat/completions" and tags["orchlab.caller"] == "alice"
    assert tags["orchlab.request_id"] == "req-42" and tags["orchlab.metadata.team"] == "ds"
    assert tags["orchlab.role"] == "llm.inference" and tags["orchlab.status"] == "ok"


def test_a_caller_leaving_mid_stream_cancels_upstream_and_keeps_the_partial_trace(
    serve, openai_server: OpenAIWireServer, experiment: str
) -> None:
    served = serve(gateway_yaml(openai_server, tracking=True))
    frames = sse_frames(stream_chunks(["four", " is"], model="cheap", prompt_tokens=3)[:3])[:3]
    watch = StreamDropWatch(openai_server, frames)
    body = {"model": "llm.inference", "messages": Q, "stream": True}
    headers = {"x-request-id": "req-gone"}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body, headers=headers) as r:
        seen = ""
        for line in r.iter_lines():
            seen += line
            if '"content":" is"' in seen:
                break  # leave now: the response is closed with the upstream still holding
    assert watch.dropped.wait(5.0), "the gateway did not cancel the upstream call"

    trace = wait_until(lambda: traced(experiment, "req-gone"), what="the partial trace landing")
    assert trace.info.tags["orchlab.status"] == "error"
    attempt = trace.data.spans[1]
    assert attempt.attributes["orchlab.outcome"] == "cancelled"
    assert attempt.outputs["choices"][0]["message"]["content"] == "four is"


@pytest.mark.server
def test_sigterm_lets_the_request_in_flight_finish_and_its_trace_land(
    write_config, openai_server: OpenAIWireServer, experiment: str, monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_UP_API_KEY", "sk-upstream-key-0123456789")
    config = write_config(gateway_yaml(openai_server, tracking=True))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchlab", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _up(port), what="orchlab serve starting")
        openai_server.push(Reply(delay_s=2.0))
        answers: list[httpx.Response] = []
        body = {"model": "llm.inference", "messages": Q}
        call = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)
            )
        )
        call.start()
        wait_until(lambda: openai_server.requests, what="the request reaching the upstream")
        proc.send_signal(signal.SIGTERM)
        call.join(30)
        # a graceful shutdown, then exit 0: SIGTERM is how a supervisor stops a service
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    [answer] = answers
    assert (
        answer.status_code == 200
        and answer.json()["choices"][0]["message"]["content"] == "echo: What is 2+2?"
    )
    trace_id = answer.headers["x-orchlab-trace-id"]
    wait_until(lambda: trace_id in stored_ids(uri(), experiment), what="the trace landing")
    assert traced(experiment, answer.headers["x-request-id"]).info.tags["orchlab.status"] == "ok"


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False
