"""What keeps ``orchlab serve`` lean per request: no access-log line or server header unless
asked, idle connections kept longer than clients keep theirs, and a worker that owns its process
freezes its heap after the first answer (full collections then skip modules, classes and SDK
clients). The speed itself is measured in benchmarks/gateway.py and benchmarks/gateway_profile.py."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer

BODY = {"model": "llm.inference", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(name="unfrozen")
def unfrozen_fixture() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process's heap goes back to the collector


def _runs(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> dict[str, Any]:
    from orchlab import cli
    from orchlab.cli import serve
    from orchlab.serve.app import CONFIG_ENV

    monkeypatch.setenv(CONFIG_ENV, "")  # restored after the test (serve sets it)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve, "_run", lambda config: seen.update(vars(config)) or 0)  # uvicorn.Config
    assert cli.main(argv) == 0
    return seen


def test_serve_logs_no_access_line_sends_no_server_header_and_keeps_connections(
    monkeypatch: pytest.MonkeyPatch, write_config, openai_server: OpenAIWireServer
) -> None:
    config = str(write_config(gateway_yaml(openai_server)))
    plain = _runs(monkeypatch, ["serve", "--config", config])
    assert plain["access_log"] is False and plain["server_header"] is False
    assert plain["app"] == "orchlab.serve.app:app_from_env" and plain["factory"] is True
    # idle connections outlive the clients' own keep-alive (httpx's, so the openai SDK's: 5 s)
    assert plain["timeout_keep_alive"] > httpx.Limits().keepalive_expiry
    logged = _runs(monkeypatch, ["serve", "--config", config, "--access-log", "--workers", "2"])
    assert logged["access_log"] is True and logged["workers"] == 2


def test_the_heap_is_frozen_after_the_first_answer_when_the_app_owns_its_process(
    serve, openai_server: OpenAIWireServer, unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchlab.serve import gateway

    calls: list[int] = []
    real = gateway.freeze_heap
    monkeypatch.setattr(gateway, "freeze_heap", lambda: (calls.append(1), real()))
    served = serve(gateway_yaml(openai_server), freeze_heap=True)
    assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert gc.get_freeze_count() == 0  # not before an answer: the provider SDK is not loaded yet
    first = httpx.post(f"{served.base_url}/chat/completions", json=BODY)
    assert first.status_code == 200 and first.json()["choices"][0]["message"]["content"] == "echo: hi"
    # the freeze runs on the server's loop right after the first answer, before the next request
    assert httpx.post(f"{served.base_url}/chat/completions", json=BODY).status_code == 200
    assert gc.get_freeze_count() > 10_000  # modules, classes, the openai SDK: the long-lived heap
    assert httpx.post(f"{served.base_url}/chat/completions", json=BODY).status_code == 200
    assert calls == [1]  # once


def test_an_app_sharing_its_process_leaves_the_heap_alone(
    serve, openai_server: OpenAIWireServer, unfrozen: None
) -> None:
    served = serve(gateway_yaml(openai_server))
    for _ in range(2):
        assert httpx.post(f"{served.base_url}/chat/completions", json=BODY).status_code == 200
    assert gc.get_freeze_count() == 0


def test_app_from_env_freezes_the_heap_of_its_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchlab.serve import app as app_module

    seen: dict[str, Any] = {}
    monkeypatch.setattr(app_module, "create_app", lambda config, **kwargs: seen.update(kwargs, config=config))
    monkeypatch.setenv(app_module.CONFIG_ENV, "/srv/gw.yaml")
    monkeypatch.setenv(app_module.AUTH_ENV, "keys")
    app_module.app_from_env()
    assert seen == {"config": "/srv/gw.yaml", "freeze_heap": True, "auth": "keys"}
