"""The gateway's thread store failing (`StoreError`): a database that cannot be reached is a 503
``store_unavailable``, any other store failure a 500 ``store_error``; neither names the store's
host, port or file, and the gateway keeps serving what needs no store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from orchlab.errors import StoreError
from orchlab.serve.errors import from_exception
from tests.serve_support import gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.loopback import closed_port
from tests.servers.openai_wire import OpenAIWireServer


def _chat(served, **extra) -> httpx.Response:
    body = {"prompt": "hi", "role": "llm.inference", "format": "raw", "thread_id": "t", **extra}
    return httpx.post(f"{served.url}/chat", json=body, timeout=30)


def test_an_unreachable_postgresql_store_is_a_503(
    serve, openai_server: OpenAIWireServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    store = f"postgresql://orchlab@127.0.0.1:{port}/orchlab"
    served = serve(gateway_yaml(openai_server, extra=f"store: {{url: '{store}'}}\n"))
    r = _chat(served)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    rid = r.headers["x-request-id"]
    assert error == {
        "message": f"the gateway's thread store is unavailable (request {rid})",
        "type": "server_error",
        "param": None,
        "code": "store_unavailable",
    }
    assert str(port) not in r.text and "127.0.0.1" not in r.text
    [logged] = [rec.getMessage() for rec in caplog.records if rec.name == "orchlab.serve"]
    assert logged.startswith(f"request {rid}: the thread store postgresql+psycopg://orchlab@127.0.0.1:{port}")
    assert openai_server.requests == []  # refused before anything was sent
    got = httpx.get(f"{served.url}/threads/t")
    assert (got.status_code, got.json()["error"]["code"]) == (503, "store_unavailable")
    plain = httpx.post(f"{served.url}/chat", json={"prompt": "hi", "role": "llm.inference", "format": "raw"})
    assert plain.json()["answer"] == "echo: hi"  # what needs no store is served


def test_a_store_another_orchlab_made_is_a_500(
    serve, openai_server: OpenAIWireServer, tmp_path: Path
) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as db:  # a schema revision this orchlab does not know
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('ffffffffffff')")
    served = serve(gateway_yaml(openai_server, extra=f"store: {{url: 'sqlite:///{path}'}}\n"))
    r = _chat(served)
    assert r.status_code == 500, r.text
    rid = r.headers["x-request-id"]
    assert r.json()["error"]["message"] == f"the gateway's thread store failed (request {rid})"
    assert r.json()["error"]["code"] == "store_error" and "newer.db" not in r.text


def test_a_locked_sqlite_store_is_unavailable() -> None:
    # what Store._guard raises for a file still locked after its retries
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as exc:
            raise StoreError("the thread store sqlite:///x.db failed: database is locked") from exc
    except StoreError as exc:
        answer = from_exception(exc, "r1")
    assert (answer.status, answer.code) == (503, "store_unavailable")
    assert (from_exception(StoreError("no such thing"), "r1").status) == 500
