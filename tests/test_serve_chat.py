"""``POST /chat``, ``GET /config``, ``/healthz``, ``/readyz``, the ``gateway:`` YAML section and the
``orchlab`` command."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

import orchlab
from orchlab.errors import ConfigValidationError, InvalidRequestError, UnknownRoleError
from orchlab.serve.targets import Targets
from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.loopback import closed_port
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body


def test_chat_answers_with_usage_cost_trace_and_decision(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    r = httpx.post(
        f"{served.url}/chat", json={"prompt": "What is 2+2?", "role": "llm.inference", "format": "raw"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["answer"] == "echo: What is 2+2?" and body["format"] == "raw" and body["role"] == "llm.inference"
    )
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    assert body["cost_usd"] == pytest.approx((3 * 1.0 + 4 * 2.0) / 1e6)
    assert body["decision"]["strategy"] == "single" and body["decision"]["winner"] == "up:cheap"
    assert body["target"] == "up:cheap" and r.headers["x-request-id"] == body["request_id"]
    assert openai_server.last.body["messages"] == [{"role": "user", "content": "What is 2+2?"}]


def test_chat_json_format_parses_the_answer(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server, "  aliases: {fast: llm.inference}\n"))
    openai_server.push(
        Reply(
            body=completion_body(
                'Sure:\n```json\n{"a": 1}\n```', model="cheap", prompt_tokens=1, completion_tokens=5
            )
        )
    )
    messages = [{"role": "system", "content": "json only"}, {"role": "user", "content": "a?"}]
    r = httpx.post(f"{served.url}/chat", json={"messages": messages, "model": "fast", "format": "json"})
    assert r.json()["answer"] == {"a": 1} and r.json()["format_error"] is None
    assert openai_server.last.body["messages"] == messages
    r = httpx.post(f"{served.url}/chat", json={"prompt": "hi", "model": "fast", "format": "json"})
    assert r.json()["answer"] == "echo: hi" and "holds no JSON" in r.json()["format_error"]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        (
            {"prompt": "hi", "role": "llm.inference", "thread_id": "t1", "context_depth": -1},
            400,
            "context_depth",
            "greater than or equal to 0",
        ),
        (
            {"prompt": "hi", "role": "llm.inference", "context_depth": 3},
            400,
            "context_depth",
            "needs thread_id",
        ),
        ({"role": "llm.inference"}, 400, "prompt", "either prompt or messages"),
        ({"prompt": "hi"}, 400, "role", "either role or model"),
        ({"prompt": "hi", "role": "llm.nope"}, 404, "model", "'llm.nope' is not served"),
        ({"prompt": "hi", "role": "llm.inference", "format": "yaml"}, 400, "format", "yaml"),
        ({"prompt": 3, "role": "llm.inference"}, 400, "prompt", "valid string"),
    ],
)
def test_chat_refuses_bad_requests(
    serve, openai_server: OpenAIWireServer, body, status, param, words
) -> None:
    served = serve(gateway_yaml(openai_server))
    r = httpx.post(f"{served.url}/chat", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and words in r.json()["error"]["message"]
    assert openai_server.requests == []


def test_config_describes_what_a_frontend_needs(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(
        gateway_yaml(openai_server, "  aliases: {gpt-4o: llm.big}\n  expose: [llm.inference, llm.big]\n")
    )
    c = httpx.get(f"{served.url}/config").json()
    assert [r["name"] for r in c["roles"]] == ["llm.inference", "llm.big"]  # llm.tiny is not exposed
    assert c["roles"][0]["target"] == "up:cheap" and c["roles"][0]["strategy"] == "single"
    big = next(m for m in c["models"] if m["target"] == "up:big")
    assert (big["input_price_per_mtok"], big["output_price_per_mtok"]) == (10.0, 20.0)
    assert c["aliases"] == {"gpt-4o": "llm.big"} and c["formats"] == ["raw", "markdown", "json"]
    assert "urn:orchlab:cascade" in c["logics"] and c["limits"]["max_body_bytes"] == 1_048_576
    r = httpx.post(
        f"{served.base_url}/chat/completions",
        json={"model": "llm.tiny", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404


def test_health_and_readiness(serve, openai_server: OpenAIWireServer) -> None:
    served = serve(gateway_yaml(openai_server))
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{served.url}/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "providers": {"up": True}}
    down = f"""
providers:
  up: {{type: openai, api_base: "{openai_server.base_url}", auth_profile: up}}
  gone: {{type: openai, api_base: "http://127.0.0.1:{closed_port()}/v1", auth_profile: up, max_retries: 0}}
roles:
  llm.inference: {{provider: up, model: cheap}}
  llm.gone: {{provider: gone, model: m}}
"""
    served = serve("project: gw\ntracking: {enabled: false}\n" + down)
    r = httpx.get(f"{served.url}/readyz")
    assert r.status_code == 503 and r.json() == {
        "status": "unavailable",
        "providers": {"gone": False, "up": True},
    }


def test_gateway_section_errors_are_located(write_config, openai_server: OpenAIWireServer) -> None:
    with pytest.raises(ConfigValidationError) as info:
        orchlab.load_config(
            write_config(gateway_yaml(openai_server, "  max_body_bytes: -1\n  drop_parms: true\n"))
        )
    keys = [k for k, _ in info.value.problems]
    assert keys == ["gateway.max_body_bytes", "gateway.drop_parms"]
    assert "line" in str(info.value)
    with pytest.raises(
        UnknownRoleError, match=r"gateway\.aliases\.gpt-4o: 'llm.bigg' is not a defined role.*llm\.big"
    ):
        orchlab.load_config(write_config(gateway_yaml(openai_server, "  aliases: {gpt-4o: llm.bigg}\n")))
    with pytest.raises(UnknownRoleError, match=r"gateway\.expose\[0\]: 'llm.x'"):
        orchlab.load_config(write_config(gateway_yaml(openai_server, "  expose: [llm.x]\n")))


def test_a_bad_urn_alias_is_refused_when_the_gateway_starts(write_config, openai_server) -> None:
    config = orchlab.load_config(
        write_config(
            gateway_yaml(openai_server, "  aliases: {fast: 'urn:orchlab:nope:candidates=llm.big'}\n")
        )
    )
    with pytest.raises(InvalidRequestError, match=r"gateway\.aliases\.fast: URN .*unknown"):
        Targets(config)


def test_cli_reports_a_config_error_without_starting(write_config, tmp_path) -> None:
    bad = write_config("project: x\ngateway: {aliases: 5}\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchlab", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "gateway.aliases" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "orchlab", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--workers" in out.stdout and "127.0.0.1" in out.stdout


def test_tags_reach_the_call_record_on_every_path(
    client_for, openai_server: OpenAIWireServer, monkeypatch
) -> None:
    import asyncio

    monkeypatch.setenv("ORCH_AUTH_UP_API_KEY", "sk-upstream-key-0123456789")
    client = client_for(
        gateway_yaml(openai_server, extra="  llm.safe: {provider: up, model: big, fallbacks: ['up:cheap']}")
    )
    seen: list[dict] = []

    class Recorder:
        def call_finished(self, record):
            seen.append(dict(record.context.tags))

    client.observers.add(Recorder())

    async def calls() -> None:
        await client.arun("llm.inference", [{"role": "user", "content": "a"}], tags={"k": "plain"})
        await client.arun("llm.safe", [{"role": "user", "content": "a"}], tags={"k": "strategy"})
        async for _ in client.stream(
            "llm.inference", [{"role": "user", "content": "a"}], tags={"k": "stream"}
        ):
            pass
        async for _ in client.stream("llm.safe", [{"role": "user", "content": "a"}], tags={"k": "logic"}):
            pass

    asyncio.run(calls())
    assert seen == [{"k": "plain"}, {"k": "strategy"}, {"k": "stream"}, {"k": "logic"}]


def test_import_orchlab_does_not_load_the_gateway() -> None:
    code = (
        "import sys, orchlab, orchlab.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_fastapi_names_the_extra(monkeypatch) -> None:
    from orchlab.errors import MissingDependencyError
    from orchlab.serve.app import require_fastapi

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'orchlab\[gateway\]'") as info:
        require_fastapi()
    assert info.value.extra == "gateway" and info.value.module == "fastapi"


@pytest.mark.server
def test_several_workers_each_serve(write_config, openai_server: OpenAIWireServer, monkeypatch) -> None:
    from tests.serve_support import free_port
    from tests.tracking_support import wait_until

    monkeypatch.setenv("ORCH_AUTH_UP_API_KEY", "sk-upstream-key-0123456789")
    config = write_config(gateway_yaml(openai_server))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "orchlab",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def answer() -> httpx.Response | None:
            try:
                return httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "llm.inference", "messages": [{"role": "user", "content": "hi"}]},
                )
            except httpx.HTTPError:
                return None

        r = wait_until(answer, timeout=60, what="the workers starting")
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hi"
    finally:
        proc.terminate()
        proc.wait(30)
