"""``orchlab run`` and ``orchlab models`` with ``--url`` / ``ORCHLAB_URL``: a real subprocess on a
real gateway (uvicorn on loopback, keys required) in front of the loopback OpenAI upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

import orchlab
from orchlab.store.keys import SECRET_ENV
from tests.serve_support import Served, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHLAB_", "ORCH_AUTH_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchlab", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},  # no upstream key here: only the gateway knows it
    )


@pytest.fixture
def gateway(
    serve: Callable[..., Served], write_config, openai_server: OpenAIWireServer, monkeypatch
) -> tuple[Served, str]:
    """A gateway requiring keys, and a key of a user allowed llm.inference only."""
    monkeypatch.setenv(SECRET_ENV, "gateway-test-secret-" + "k" * 32)
    yaml = gateway_yaml(openai_server, "  auth: keys\n", "store: {url: sqlite:///keys.db}\n")
    served = serve(yaml)
    key = orchlab.get_llm_client(write_config(yaml)).keys.create("ana", roles=["llm.inference"])
    return served, key.key


def test_run_on_a_gateway_answers_through_it_with_the_key(
    gateway: tuple[Served, str], openai_server: OpenAIWireServer
) -> None:
    served, key = gateway
    env = {"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key}
    out = cli("run", "llm.inference", "What is 2+2?", "-s", "Be brief", "-p", "temperature=0.5", env=env)
    assert (out.returncode, out.stdout, out.stderr) == (0, "echo: What is 2+2?\n", "")
    sent = openai_server.requests[-1].body
    assert sent["model"] == "cheap" and sent["temperature"] == 0.5
    assert [m["content"] for m in sent["messages"]] == ["Be brief", "What is 2+2?"]
    out = cli(
        "--json", "run", "llm.inference", "--url", served.base_url, env={"ORCHLAB_API_KEY": key}, stdin="hi"
    )
    answer = json.loads(out.stdout)
    assert (answer["content"], answer["role"], answer["url"]) == ("echo: hi", "llm.inference", served.url)
    assert answer["input_tokens"] > 0 and answer["cost_usd"] > 0
    out = cli("run", "llm.inference", "streamed words", "--stream", env=env)
    assert (out.returncode, out.stdout) == (0, "echo: streamed words \n")
    assert openai_server.requests[-1].body["stream"] is True


def test_models_on_a_gateway_lists_what_the_key_may_call(gateway: tuple[Served, str]) -> None:
    served, key = gateway
    out = cli("models", "--json", "--url", served.url, env={"ORCHLAB_API_KEY": key})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"target": "llm.inference", "owned_by": "orchlab"}]
    out = cli("models", "--tier", "small", "--url", served.url, env={"ORCHLAB_API_KEY": key})
    assert out.returncode == 1 and "local catalog only" in out.stderr


def test_gateway_errors_are_one_line_and_never_show_the_key(gateway: tuple[Served, str]) -> None:
    served, key = gateway
    out = cli("run", "llm.inference", "hi", env={"ORCHLAB_URL": served.url})
    assert out.returncode == 1 and out.stdout == ""
    assert (
        out.stderr.startswith("orchlab: gateway:llm.inference [HTTP 401]: a valid API key is required")
        and "set ORCHLAB_API_KEY" in out.stderr
    )
    out = cli("run", "llm.big", "hi", env={"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key})
    assert out.returncode == 1 and "gateway:llm.big [HTTP 403]" in out.stderr and key not in out.stderr
    out = cli("run", "llm.inference", "hi", env={"ORCHLAB_URL": "http://127.0.0.1:9", "ORCHLAB_API_KEY": key})
    assert out.returncode == 1 and "no gateway answers at http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr
