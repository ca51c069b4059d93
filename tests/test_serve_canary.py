"""A canary user key and a canary admin key, used and misused against the gateway with every log
at DEBUG (orchlab, uvicorn with its access log, httpx, httpcore, openai, SQLAlchemy) and MLflow on:
neither key is ever in a log record, a response, an MLflow record or a file of the store (which
holds HMACs only)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

import orchlab
from orchlab.store.keys import SECRET_ENV
from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer
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
LOGGERS = (
    "",
    "orchlab",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpx",
    "httpcore",
    "openai",
    "sqlalchemy",
)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {logging.Formatter().format(record)}")


@pytest.fixture
def debug_logs() -> Iterator[Collect]:
    handler = Collect()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)  # every statement and its parameters
    yield handler
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)


def test_canary_keys_are_nowhere(
    serve,
    write_config,
    openai_server: OpenAIWireServer,
    experiment: str,
    tmp_path: Path,
    monkeypatch,
    debug_logs,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "canary-test-secret-" + "c" * 32)
    yaml = gateway_yaml(openai_server, "  auth: keys\n", "store: {url: sqlite:///keys.db}\n", tracking=True)
    cheap = "output_price_per_mtok: 2.0}"
    yaml = yaml.replace(cheap, cheap[:-1] + ", max_output_tokens: 64}", 1)  # bounds /chat's worst case
    keys = orchlab.get_llm_client(write_config(yaml)).keys
    canary = keys.create("ana", rpm=1000, tpm=1_000_000, budget="5/day").key
    admin = keys.create("root", admin=True).key
    served = serve(yaml)
    for name in LOGGERS:  # uvicorn set its own levels and handlers when it started
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        if debug_logs not in logger.handlers:
            logger.addHandler(debug_logs)
    seen: list[str] = []

    def keep(r: httpx.Response) -> httpx.Response:
        r.read()
        seen.append(r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
        return r

    ids = []
    with httpx.Client(base_url=served.url, event_hooks={"response": [keep]}) as http:
        user, boss = {"authorization": f"Bearer {canary}"}, {"authorization": f"Bearer {admin}"}
        # used
        r = http.post("/v1/chat/completions", headers=user, json={"model": "llm.inference", "messages": Q})
        ids.append(r.headers["x-request-id"])
        body = {
            "model": "llm.inference",
            "messages": Q,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with http.stream("POST", "/v1/chat/completions", headers=user, json=body) as s:
            s.read()
        assert (
            http.post("/chat", headers=user, json={"role": "llm.inference", "prompt": "hi"}).status_code
            == 200
        )
        assert http.get("/config", headers=user).status_code == 200
        assert http.get("/v1/models", headers=user).status_code == 200
        made = http.post("/admin/keys", headers=boss, json={"user": "bo"}).json()
        seen.pop()  # the answer that creates a key is the one place a key (that new one) is shown
        assert http.get("/admin/keys", headers=boss).status_code == 200
        assert http.get("/admin/usage", headers=boss).status_code == 200
        # misused
        for method, path, headers in [
            ("POST", "/v1/chat/completions", boss),
            ("GET", "/admin/keys", user),
            ("GET", "/v1/models", {"authorization": f"Basic {canary}"}),
            ("GET", "/v1/models", {"x-api-key": canary}),
            ("GET", f"/v1/models?api_key={canary}", {}),
            ("GET", "/v1/models", {"authorization": f"Bearer {canary}x"}),
            ("GET", "/v1/models", {"authorization": f"Bearer {admin[:-1]}"}),
        ]:
            r = http.request(method, path, headers=headers, json={"model": "llm.inference", "messages": Q})
            assert r.status_code in (401, 403)
        assert http.delete(f"/admin/keys/{made['prefix']}", headers=boss).status_code == 200
    sdk = openai.OpenAI(base_url=served.base_url, api_key=canary, max_retries=0)
    sdk.chat.completions.create(model="llm.inference", messages=Q)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        openai.OpenAI(base_url=served.base_url, api_key=admin, max_retries=0).models.list()
    seen.append(str(denied.value.body))
    keys.revoke(canary[3:15])
    served.stop()

    secrets = {canary, admin, canary.split("_")[2], admin.split("_")[2]}
    assert len(debug_logs.lines) > 50  # DEBUG was on: uvicorn, httpx, httpcore, SQL
    names = {line.split(":")[0] for line in debug_logs.lines}
    assert {"uvicorn.access", "httpx", "httpcore.http11", "sqlalchemy.pool.impl.QueuePool"} <= names, names
    for text in (*debug_logs.lines, *seen):
        assert not any(s in text for s in secrets), text[:300]
    assert any("api_key=**********" in line for line in debug_logs.lines)  # the URL's key, masked
    # MLflow: the traces of these calls (tagged with the user, never the key) and every file under here
    orchlab.flush(30)
    traces = wait_until(
        lambda: len(stored_ids_of(experiment)) >= 3 and all_traces(uri(), experiment), what="traces"
    )
    assert {t.info.tags.get("orchlab.user") for t in traces} == {"ana"}
    assert not any(s in str(t.to_dict()) for t in traces for s in secrets)
    store_dir = Path(uri().removeprefix("sqlite:///")).parent
    for folder in (tmp_path, store_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(s.encode() in data for s in secrets), path


def uri() -> str:
    import os

    return os.environ["ORCH_TRACKING_URI"]


def stored_ids_of(experiment: str) -> set[str]:
    return stored_ids(uri(), experiment)
