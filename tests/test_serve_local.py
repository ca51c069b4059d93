"""``orchlab serve`` with no config: the embedded default answers with the real local model."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.serve_support import Served, free_port
from tests.tracking_support import wait_until

pytestmark = pytest.mark.slow
Q = [{"role": "user", "content": "What is 2+2?"}]


def test_embedded_default_in_process(gguf_path) -> None:
    from orchlab.serve import create_app

    served = Served(create_app()).start()
    try:
        client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
        r = client.chat.completions.create(model="llm.preprocess", messages=Q)
        assert "4" in (r.choices[0].message.content or "")
        assert r.usage.prompt_tokens == 13 and 0 < r.usage.completion_tokens <= 48
        parts = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="llm.preprocess", messages=Q, stream=True)
            if c.choices
        ]
        # temperature 0: the same answer (the adapter strips the leading space only when not streaming)
        assert "".join(parts).strip() == r.choices[0].message.content
    finally:
        served.stop()


@pytest.mark.server
def test_orchlab_serve_with_no_config_answers_with_the_local_model(gguf_path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchlab", "serve", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _up(port), what="orchlab serve starting")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        assert [m.id for m in client.models.list()][:2] == ["llm.preprocess", "llm.inference"]
        r = client.chat.completions.create(model="llm.inference", messages=Q, max_tokens=8)
        assert r.choices[0].message.content and r.usage.completion_tokens <= 8
        assert r.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.terminate()
        proc.wait(30)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False
