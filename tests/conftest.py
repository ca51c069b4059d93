"""Shared fixtures: a temp config per test, an isolated environment, loopback servers, the local model."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers.openai_wire import OpenAIWireServer


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a real key, a real tracking server, or writes outside its temp dir."""
    for name in list(os.environ):
        if name.startswith(("ORCH_", "MLFLOW_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")
    # MLflow tracking is on by default for users; tests that exercise it switch it back on
    monkeypatch.setenv("ORCH_TRACKING", "0")
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
def openai_server() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer() as server:
        yield server


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The shipped Gemma 3 270M GGUF (assembled once per machine, checksummed)."""
    from orchlab.providers.llamacpp import default_model_path

    return default_model_path()
