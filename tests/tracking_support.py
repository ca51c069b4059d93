"""Fixtures for the tracking tests: a real MLflow SQLite store per test, a loopback-backed config.

Import the ``*_fixture`` functions into a test module to use the fixtures (``store``, ...).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.servers.openai_wire import OpenAIWireServer

API_KEY = "sk-loop-0123456789-SECRET-abcdef"


@pytest.fixture(autouse=True, name="tracking_on")
def tracking_on_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracking as a user gets it (on), whatever the shared fixtures set for other tests."""
    monkeypatch.delenv("ORCH_TRACKING", raising=False)


@pytest.fixture(scope="session", name="template_db")
def template_db_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema migrated, made once (migrating takes seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path, template_db: Path) -> Path:
    """This test's own store: ``mlflow.db`` in its working directory (orchlab's default place)."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture(name="loop_config")
def loop_config_fixture(
    write_config: Callable[[str], Path], openai_server: OpenAIWireServer, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Roles on the loopback OpenAI server, priced, with a fallback chain; the key is in the env."""
    monkeypatch.setenv("ORCH_AUTH_LOOP_API_KEY", API_KEY)
    return write_config(
        f"""
        project: trk
        providers:
          loop: {{type: openai, api_base: "{openai_server.base_url}", auth_profile: loop}}
        models:
          "loop:cheap": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
          "loop:big": {{input_price_per_mtok: 10.0, output_price_per_mtok: 20.0}}
        roles:
          chat: {{provider: loop, model: cheap, params: {{temperature: 0}}}}
          safe:
            provider: loop
            model: big
            fallbacks: ["loop:cheap"]
            retry: {{retries: 0}}
        """
    )


def tracing(uri: str) -> Any:
    from mlflow.tracing.client import TracingClient

    return TracingClient(uri)


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    exp = mlflow_client(uri).get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name!r} in {uri}"
    return str(exp.experiment_id)


def all_traces(uri: str, experiment: str, **kwargs: Any) -> list[Any]:
    return list(
        tracing(uri).search_traces(locations=[experiment_id(uri, experiment)], max_results=1000, **kwargs)
    )
