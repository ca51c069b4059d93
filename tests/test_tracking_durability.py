"""Tracking's promises under faults: a script that exits (or is interrupted, or killed) right after
its calls, a drain killed while it sets a store up, a half-migrated store, a store that is away.

Each script here is a real process that starts its own drain, as a user's script does; the test
only reads the store (with MLflow) and stops the drains at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import OrchlabWarning, TrackingError
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    mlflow_client,
    stop_drains,
    stored_ids,
    template_db_fixture,
    trace_info,
    tracking_on_fixture,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
project: dur
providers:
  t: {type: test, options: {models: {m: {reply: "four"}}}}
roles:
  chat: {provider: t, model: m}
"""
ASK = "[{'role': 'user', 'content': 'What is 2+2?'}]"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The scripts' working folder: the config, and by default ./mlflow.db and ./.orchlab/spool."""
    folder = tmp_path_factory.mktemp("scripts")
    (folder / "llm_orchestrator.yaml").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    yield folder
    for status in folder.rglob("status.json"):
        stop_drains(status.parent.parent)


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "MLFLOW_"))}
    return {**env, "PYTHONPATH": str(REPO), "ORCH_TRACKING_DRAIN_IDLE": "10", **extra}


def start(work: Path, body: str, **env: str) -> subprocess.Popen[str]:
    code = f"import orchlab, sys, time\nc = orchlab.get_llm_client('llm_orchestrator.yaml')\n{body}"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=work,
        env=script_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a script in a terminal
    )


@pytest.mark.parametrize("ending", ["exit", "ctrl-c", "exit timeout 0.1 s"])
def test_a_script_that_ends_right_after_its_call_has_its_trace_stored(work: Path, ending: str) -> None:
    env = {"ORCH_TRACKING_EXIT_TIMEOUT": "0.1"} if ending == "exit timeout 0.1 s" else {}
    wait = "time.sleep(120)\n" if ending == "ctrl-c" else ""
    proc = start(work, f"r = c.run('chat', {ASK})\nprint(r.trace_id, flush=True)\n{wait}", **env)
    assert proc.stdout is not None
    trace_id = proc.stdout.readline().strip()
    if ending == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    if ending == "ctrl-c":
        assert "KeyboardInterrupt" in err
    else:
        assert proc.returncode == 0, err
    assert re.fullmatch(r"tr-[0-9a-f]{32}", trace_id)

    uri = f"sqlite:///{work / 'mlflow.db'}"  # the default store: mlflow.db in the working directory
    wait_until(lambda: trace_id in stored_ids(uri, "dur · dev"), 30, f"trace {trace_id} in the store")
    # MLflow stores a trace's spans, then its tags: wait for the whole of it
    info = wait_until(lambda: (i := trace_info(uri, trace_id)).tags.get("orchlab.role") and i, 10, "its tags")
    assert info.tags["orchlab.role"] == "chat" and info.response_preview == "four"


def test_every_call_completed_before_kill_9_is_stored(work: Path) -> None:
    body = f"while True:\n    print(c.run('chat', {ASK}).trace_id, flush=True)\n"
    proc = start(work, body, ORCH_EXPERIMENT="kill9")
    assert proc.stdout is not None
    printed = [proc.stdout.readline().strip() for _ in range(150)]
    proc.kill()  # SIGKILL: no atexit, no flush, nothing of Python runs
    rest = proc.stdout.read()  # what readline() buffered already, then the rest of the pipe
    proc.communicate(timeout=30)
    printed += [line for line in rest.splitlines() if re.fullmatch(r"tr-[0-9a-f]{32}", line)]

    uri = f"sqlite:///{work / 'mlflow.db'}"
    stored = wait_until(
        lambda: (ids := stored_ids(uri, "kill9")) >= set(printed) and ids, 90, "every printed trace stored"
    )
    assert set(printed) <= stored
    # the call in flight may have reached the journal without its id being printed: at most one more
    assert len(printed) <= len(stored) <= len(printed) + 1


def test_calls_spread_over_drains_that_come_and_go_are_all_stored(work: Path) -> None:
    # A drain that has nothing to do leaves at once here: the second call finds the first drain gone,
    # the third finds the second one still starting.
    call = f"print(c.run('chat', {ASK}).trace_id, flush=True)\n"
    body = f"{call}time.sleep(5)\n{call}{call}"
    spool = str(work / "spool-of-short-drains")
    env = {"ORCH_EXPERIMENT": "come-and-go", "ORCH_TRACKING_DRAIN_IDLE": "0", "ORCH_TRACKING_SPOOL": spool}
    proc = start(work, body, **env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    printed = set(out.split())
    uri = f"sqlite:///{work / 'mlflow.db'}"
    wait_until(lambda: stored_ids(uri, "come-and-go") == printed, 60, "all three traces stored")
    assert len(printed) == 3


def test_a_drain_killed_while_it_sets_a_store_up_leaves_no_store_or_a_working_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: object
) -> None:
    db = tmp_path / "fresh" / "mlflow.db"
    spool = tmp_path / "spool"
    monkeypatch.setenv("ORCH_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("ORCH_TRACKING_SPOOL", str(spool))
    (tmp_path / "llm_orchestrator.yaml").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    client = orchlab.get_llm_client(tmp_path / "llm_orchestrator.yaml")
    r = client.run("chat", [{"role": "user", "content": "What is 2+2?"}])  # starts a drain

    setups = wait_until(lambda: list(db.parent.glob(".mlflow.db.setup-*")), 30, "the store's setup to start")
    pid = int(setups[0].name.split(".setup-")[1].split("-")[0])
    os.kill(pid, signal.SIGKILL)  # the drain, half-way through MLflow's schema migration
    wait_until(lambda: not _lock_held(spool), 10, "the killed drain to release its lock")
    if db.exists():  # the kill came after the setup finished: then the store must work
        mlflow_client(f"sqlite:///{db}").search_experiments()
    else:
        assert not db.exists()

    assert orchlab.flush(timeout=60)  # a new drain sets the store up and writes the call
    assert trace_info(f"sqlite:///{db}", r.trace_id).tags["orchlab.role"] == "chat"
    assert not list(db.parent.glob(".mlflow.db.setup-*"))  # the abandoned setup was cleared


def _lock_held(spool: Path) -> bool:
    from tests.tracking_support import drain_running

    return any(drain_running(d) for d in spool.iterdir() if d.is_dir())


def test_a_half_migrated_store_is_a_clear_error_that_says_how_to_repair_it(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copyfile(template_db, db)
    # As an interrupted first-time setup leaves it: the newest migration's tables exist, but the
    # schema version still names the migration before it, so `mlflow db upgrade` fails on them.
    with sqlite3.connect(db) as con:
        (head,) = con.execute("select version_num from alembic_version").fetchone()
        versions = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
        migration = next(versions.glob(f"{head}_*"))
        before = re.search(r'down_revision = "(\w+)"', migration.read_text()).group(1)  # type: ignore[union-attr]
        con.execute("update alembic_version set version_num = ?", (before,))
    (tmp_path / "llm_orchestrator.yaml").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    client = orchlab.get_llm_client(tmp_path / "llm_orchestrator.yaml")

    expected = (
        rf"the MLflow store {re.escape(str(db))} cannot be used: MlflowException: Detected out-of-date "
        rf"database schema \(found version {before}, but expected {head}\)\. If an older MLflow made it, "
        rf"back it up and run `mlflow db upgrade sqlite:///{re.escape(str(db))}`\. If that fails too "
        rf".*move the file away \(`mv {re.escape(str(db))} {re.escape(str(db))}\.broken`"
    )
    with pytest.raises(TrackingError, match=expected):
        orchlab.history(client=client)  # an explicit read opens the store in this process

    r = client.run("chat", [{"role": "user", "content": "What is 2+2?"}])  # the drain meets it too
    with pytest.warns(OrchlabWarning, match=expected):
        assert not orchlab.flush(timeout=60)
    assert r.trace_id and len(list(client.tracking.settings.store_dir.glob("*.journal"))) == 1  # kept


def test_calls_made_while_the_store_cannot_be_created_are_written_once_it_can(work: Path) -> None:
    blocker = work / "later"
    blocker.write_text("a file where the store's folder should be")
    body = f"r = c.run('chat', {ASK})\nc.feedback(r, 'up')\nprint(r.trace_id, flush=True)\n"
    uri = f"sqlite:///{work / 'later' / 'mlflow.db'}"
    proc = start(work, body, ORCH_TRACKING_URI=uri)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    trace_id = out.strip()
    spool = work / ".orchlab" / "spool"
    (journal,) = [p for p in spool.glob("*/*.journal") if uri in p.read_text()]
    assert trace_id in journal.read_text()  # on disk, waiting

    blocker.unlink()  # the store can be created now; the drain, retrying, writes it
    wait_until(lambda: trace_id in stored_ids(uri, "dur · dev"), 60, "the waiting trace stored")
    info = wait_until(lambda: (i := trace_info(uri, trace_id)).assessments and i, 30, "the rating stored")
    assert [(a.name, a.value) for a in info.assessments] == [("thumbs", True)]
    wait_until(lambda: not journal.exists(), 30, "the written journal of the ended script deleted")
