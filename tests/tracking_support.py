"""Fixtures for the tracking tests: real MLflow SQLite stores, a loopback-backed config, and the
drain processes that tracking starts (stopped by the test that caused them).

Import the ``*_fixture`` functions into a test module to use the fixtures (``store``, ...).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchlab.tracking import journal
from tests.servers.openai_wire import OpenAIWireServer

API_KEY = "sk-loop-0123456789-SECRET-abcdef"


@pytest.fixture(autouse=True, name="tracking_on")
def tracking_on_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Tracking as a user gets it (on), whatever the shared fixtures set for other tests; the drains
    started for spool folders in the test's temp dir are stopped after it."""
    monkeypatch.delenv("ORCH_TRACKING", raising=False)
    yield
    # This test's journals stop being this process's business (a later flush does not wait on them).
    with journal._journals_lock:
        for j in journal._journals.values():
            j.close()
        journal._journals.clear()
    for status in tmp_path.rglob("status.json"):
        stop_drains(status.parent.parent)


def drain_running(store_dir: Path) -> bool:
    """Whether a drain holds that store's lock."""
    lock = store_dir / "drain.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the lock if we got it
    return False


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.1)


def stop_drains(spool: Path, timeout: float = 30.0) -> None:
    """Stop (SIGTERM, by the pid it wrote in status.json) each drain serving a store under ``spool``."""
    for status in spool.glob("*/status.json"):
        store_dir = status.parent
        deadline = time.monotonic() + timeout
        while drain_running(store_dir) and time.monotonic() < deadline:
            try:
                pid = int(json.loads(status.read_text())["pid"])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        assert not drain_running(store_dir), f"the drain of {store_dir} did not stop"


def stored_ids(uri: str, experiment: str) -> set[str]:
    """Trace ids in that experiment (none when it, or the store, does not exist yet).

    A SQLite store that does not exist yet is not opened: MLflow would create and migrate it here,
    racing the drain that is setting it up."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return set()
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    return {t.info.trace_id for t in client.search_traces(locations=[exp.experiment_id], max_results=5000)}


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


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    exp = mlflow_client(uri).get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name!r} in {uri}"
    return str(exp.experiment_id)


def all_traces(uri: str, experiment: str, **kwargs: Any) -> list[Any]:
    return list(
        mlflow_client(uri).search_traces(
            locations=[experiment_id(uri, experiment)], max_results=1000, **kwargs
        )
    )


def trace_info(uri: str, trace_id: str) -> Any:
    return mlflow_client(uri).get_trace(trace_id, display=False).info


@pytest.fixture(scope="module", name="shared_store")
def shared_store_fixture(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Iterator[Path]:
    """A store and spool folder for a whole module: its tests share one drain process."""
    folder = tmp_path_factory.mktemp("shared-store")
    shutil.copyfile(template_db, folder / "mlflow.db")
    yield folder
    stop_drains(folder / "spool")


@pytest.fixture(name="experiment")
def experiment_fixture(
    shared_store: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """This test's calls go to the module's store, in an experiment of their own (its name)."""
    monkeypatch.setenv("ORCH_TRACKING_URI", f"sqlite:///{shared_store / 'mlflow.db'}")
    monkeypatch.setenv("ORCH_TRACKING_SPOOL", str(shared_store / "spool"))
    name = f"trk/{request.node.name}"
    monkeypatch.setenv("ORCH_EXPERIMENT", name)
    return name
