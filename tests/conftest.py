"""Shared fixtures: a temp config per test, an isolated environment, clients and adapters built from
YAML (closed after the test), loopback servers, the local model."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import orchlab
from orchlab.orchestrator import Orchestrator
from orchlab.providers.base import Provider
from tests.servers.openai_wire import OpenAIWireServer

P = TypeVar("P", bound=Provider)

CANARY = "sk-orchlab-session-canary-5e0b7c19d2a4f6"
"""A key in every test's environment (``ORCH_AUTH_CANARY_API_KEY``) that no log line may show."""
CANARY_LOGGERS = ("orchlab", "openai", "anthropic", "httpx", "httpx2", "httpcore", "google_genai")


class CanaryWatch(logging.Handler):
    """Sees every record of the session at DEBUG (cheap: one substring test per record)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        extra = [record.exc_text or "", record.stack_info or ""]
        if record.exc_info and record.exc_info[1] is not None:
            extra.append(repr(record.exc_info[1]))
        if CANARY in text or any(CANARY in part for part in extra):
            self.leaks.append(f"{record.name} {record.levelname}: {text[:300]}")


@pytest.fixture(scope="session", autouse=True)
def _canary_never_logged() -> Iterator[CanaryWatch]:
    """The session-wide check: orchlab's and the SDKs' loggers at DEBUG for the whole run, and the
    canary key (set in every test's environment) in no record, whatever the test did."""
    watch = CanaryWatch()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in CANARY_LOGGERS}
    for name in CANARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(watch)
    yield watch
    root.removeHandler(watch)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    assert not watch.leaks, f"the canary key was logged {len(watch.leaks)} time(s): {watch.leaks[:5]}"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a real key, a real tracking server, or writes outside its temp dir."""
    for name in list(os.environ):
        if name.startswith(("ORCH_", "ORCHLAB_", "MLFLOW_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")
    # mlflow.set_tracking_uri() also writes MLFLOW_TRACKING_URI into os.environ, which later kernels
    # (nbval) and drains would inherit: set-then-delete makes monkeypatch put back "absent" after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    # MLflow tracking is on by default for users; tests that exercise it switch it back on
    monkeypatch.setenv("ORCH_TRACKING", "0")
    # so is the response cache for deterministic requests: tests that exercise it switch it back on
    monkeypatch.setenv("ORCH_CACHE", "off")
    monkeypatch.setenv("ORCH_AUTH_CANARY_API_KEY", CANARY)
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "orchlab-cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config (dedented) into the test's temp dir and return its path."""

    def write(text: str, name: str = "llm_orchestrator.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def client_for(write_config: Callable[[str], Path]) -> Iterator[Callable[..., Orchestrator]]:
    """``client_for(yaml, *more_yaml)``: a client for that config (each part dedented, then joined).

    Every client made is closed after the test, failed or not.
    """
    made: list[Orchestrator] = []

    def make(*parts: str) -> Orchestrator:
        client = orchlab.get_llm_client(write_config("".join(textwrap.dedent(p) for p in parts)))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
async def provider_for(write_config: Callable[[str], Path]) -> AsyncIterator[Callable[..., Provider]]:
    """``provider_for(cls, name, entry)``: the adapter a ``providers.<name>`` YAML entry builds.

    The test calls it directly (on the test's own loop), so it is closed there after the test.
    """
    made: list[Provider] = []

    def make(cls: type[P], name: str, entry: str) -> P:
        body = textwrap.indent(textwrap.dedent(entry).strip("\n"), "    ")
        provider = orchlab.get_llm_client(
            write_config(f"project: t\nproviders:\n  {name}:\n{body}\n")
        ).provider(name)
        assert isinstance(provider, cls)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def openai_server() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer() as server:
        yield server


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The shipped Gemma 3 270M GGUF (assembled once per machine, checksummed)."""
    from orchlab.providers.llamacpp import default_model_path

    return default_model_path()
