"""Tracking against a real ``mlflow server`` on loopback: records made while it is down are not lost.

Slow (the server takes 7-15 s to start here), so one server for the whole story.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import OrchlabWarning
from orchlab.tracking.api import tracking_status
from tests.servers.openai_wire import OpenAIWireServer
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    API_KEY,
    mlflow_client,
    template_db_fixture,
    trace_info,
    tracking_on_fixture,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.server]
ASK = [{"role": "user", "content": "What is 2+2?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f}s")


@pytest.fixture
def server_dir(tmp_path: Path, template_db: Path) -> Iterator[Path]:
    folder = tmp_path / "server"
    folder.mkdir()
    shutil.copyfile(template_db, folder / "server.db")
    yield folder


def start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_cli = [sys.executable, "-m", "mlflow"]
    return subprocess.Popen(
        [*mlflow_cli, "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--workers", "1",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def test_records_made_while_the_server_is_down_arrive_when_it_is_back(
    tmp_path: Path, server_dir: Path, openai_server: OpenAIWireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "llm_orchestrator.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            project: srv
            providers:
              loop: {{type: openai, api_base: "{openai_server.base_url}", auth_profile: loop}}
            models:
              "loop:cheap": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
            roles:
              chat: {{provider: loop, model: cheap}}
            tracking: {{tracking_uri: "{url}", spool_dir: spool}}
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("ORCH_AUTH_LOOP_API_KEY", API_KEY)

    # 1. another session calls and rates while no server runs, then exits: its records wait on disk
    script = (
        "import sys, orchlab\n"
        "c = orchlab.get_llm_client(sys.argv[1])\n"
        "r = c.run('chat', [{'role': 'user', 'content': 'from the other session'}])\n"
        "c.feedback(r, 4)\n"
        "c.run('chat', [{'role': 'user', 'content': 'again'}])\n"
        "print(r.trace_id)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "ORCH_TRACKING_EXIT_TIMEOUT": "1", "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    rated_elsewhere = other.stdout.strip()
    (journal,) = list((tmp_path / "spool").glob("*/*.journal"))
    assert len(journal.read_text().splitlines()) == 4  # a header and 3 records

    # 2. this session: the call returns normally, the rating is accepted, nothing is written yet
    client = orchlab.get_llm_client(config)
    with pytest.warns(OrchlabWarning, match=f"the tracking store {url} is unreachable"):
        r = client.run("chat", ASK)
        assert r.content == "echo: What is 2+2?" and r.trace_id
        client.feedback(r, 5, comment="right")
        wait_until(lambda: tracking_status()[url]["state"] == "down", 60, "the drain to find the server down")
        assert not orchlab.flush(timeout=3)
    assert tracking_status()[url]["waiting_bytes"] > 0

    # 3. the server comes up on that port; the drain writes this session's and the other's records
    server = start_server(server_dir, port)
    try:
        wait_healthy(url, server)
        assert orchlab.flush(timeout=120), tracking_status()
        wait_until(lambda: not journal.exists(), 30, "the other session's written journal deleted")

        exp = mlflow_client(url).get_experiment_by_name("srv · dev")
        traces = mlflow_client(url).search_traces(locations=[exp.experiment_id], max_results=100)
        assert len(traces) == 3
        ours = trace_info(url, r.trace_id)
        assert [(a.name, a.value, a.rationale) for a in ours.assessments] == [("rating", 5, "right")]
        assert ours.token_usage["total_tokens"] == r.usage.total_tokens
        assert ours.tags["orchlab.role"] == "chat"
        theirs = trace_info(url, rated_elsewhere)
        assert [(a.name, a.value, a.source.source_type) for a in theirs.assessments] == [
            ("rating", 4, "HUMAN")
        ]

        # reading back and rating through the server
        history = orchlab.history(client=client, min_rating=4)
        assert set(history["trace_id"]) == {r.trace_id, rated_elsewhere}
        assert set(history["rating"]) == {4, 5}
        later = client.run("chat", ASK)
        client.feedback(later, "up")
        assert orchlab.history(client=client, thumbs=True)["trace_id"].tolist() == [later.trace_id]
    finally:
        stop_server(server)
