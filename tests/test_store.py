"""The thread store (orchlab.store) on SQLite and on a real PostgreSQL server: migrations, threads
and their branches, context injection seen by the loopback server, several processes at once,
kill -9, feedback in the table and MLflow, and the reads people want."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchlab.errors import ConfigValidationError, StoreError
from orchlab.orchestrator import Orchestrator
from orchlab.store.engine import HEAD, MIGRATIONS
from orchlab.store.settings import StoreSettings, resolve_store_settings
from orchlab.store.store import AsyncStore, Store
from tests.servers.openai_wire import OpenAIWireServer
from tests.store_support import feedback_rows as _feedback_rows
from tests.store_support import opened_behind_a_lock, postgres_fixture, store_url_fixture

__all__ = ["postgres_fixture", "store_url_fixture"]

KEY = "sk-loop-store-0123456789"


def config_yaml(server: OpenAIWireServer, store_url: str, depth: int = 10) -> str:
    return textwrap.dedent(
        f"""
        project: threads
        providers:
          loop: {{type: openai, api_base: "{server.base_url}", auth_profile: loop}}
        models:
          "loop:m": {{input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
        roles:
          chat: {{provider: loop, model: m}}
        store: {{url: "{store_url}", context_depth: {depth}}}
        """
    )


@pytest.fixture
def client(
    store_url: str,
    openai_server: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> Orchestrator:
    monkeypatch.setenv("ORCH_AUTH_LOOP_API_KEY", KEY)
    return client_for(config_yaml(openai_server, store_url))


def sent(server: OpenAIWireServer) -> list[tuple[str, str]]:
    """The messages of the last request the server received."""
    return [(m["role"], m["content"]) for m in server.requests[-1].body["messages"]]


def run_python(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# --- migrations ------------------------------------------------------------------------------


def test_migrations_build_exactly_the_schema(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from orchlab.store.schema import metadata

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD
    store = Store.open(StoreSettings(store_url))
    try:
        with store._engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
        # opening again (another process would do the same) changes nothing
        Store.open(StoreSettings(store_url)).close()
    finally:
        store.close()


def test_two_processes_open_a_new_store_at_once(store_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = f"""
        import os, sys, time
        from orchlab.store.settings import StoreSettings
        from orchlab.store.store import Store
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        store = Store.open(StoreSettings({store_url!r}))
        t = store.create_thread(name="shared")
        mine = store.create_thread(name=f"p{{os.getpid()}}")
        print(t.id, mine.id)
        """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both interpreters are up and polling (no timing is asserted)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    shared = {out.split()[0] for out, _ in outs}
    assert len(shared) == 1  # both got the same thread named "shared"
    store = Store.open(StoreSettings(store_url))
    names = set(store.threads()["name"])
    assert names == {"shared", *(f"p{p.pid}" for p in procs)}
    from sqlalchemy import text

    with store._engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    store.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_opening_waits_while_another_connection_holds_a_lock_on_a_new_store(
    tmp_path: Path, kind: str
) -> None:
    import asyncio

    db = tmp_path / "new.db"
    settings = StoreSettings(f"sqlite:///{db}")

    def open_sync() -> str:
        store = Store.open(settings)
        try:
            return store.create_thread(name="after the lock").name
        finally:
            store.close()

    async def open_async() -> str:
        store = await AsyncStore.open(settings)
        try:
            return (await store.create_thread(name="after the lock")).name
        finally:
            await store.aclose()

    opened = opened_behind_a_lock(db, open_sync if kind == "sync" else lambda: asyncio.run(open_async()))
    assert opened == "after the lock"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_made_by_a_newer_orchlab_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        con.execute("INSERT INTO alembic_version VALUES ('9999')")
    with pytest.raises(StoreError, match=r"newer\.db.*a newer orchlab made it"):
        Store.open(StoreSettings(f"sqlite:///{db}"))


# --- settings --------------------------------------------------------------------------------


def test_the_default_store_is_next_to_the_mlflow_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchlab.config.schema import StoreConfig
    from orchlab.tracking.settings import resolve_settings

    monkeypatch.setenv("ORCH_TRACKING_URI", f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    tracking = resolve_settings(None, project="p", env="dev")
    settings = resolve_store_settings(None, tracking=tracking)
    assert settings.url == f"sqlite:///{tmp_path / 'runs' / '.orchlab' / 'store.db'}"
    yaml_dir = tmp_path / "cfg"
    relative = resolve_store_settings(StoreConfig(url="sqlite:///t.db"), tracking=tracking, base_dir=yaml_dir)
    assert relative.url == f"sqlite:///{yaml_dir / 't.db'}"
    monkeypatch.setenv("ORCH_STORE_URL", "postgresql://u:hunter2@db.example/threads")
    over = resolve_store_settings(StoreConfig(url="sqlite:///t.db", context_depth=4), tracking=tracking)
    assert (over.url, over.context_depth) == ("postgresql+psycopg://u:hunter2@db.example/threads", 4)
    assert "hunter2" not in repr(over) and "u:***@db.example" in repr(over)
    monkeypatch.setenv("ORCH_STORE_URL", "mysql://u:hunter2@db/x")
    with pytest.raises(ConfigValidationError, match=r"ORCH_STORE_URL.*not a store orchlab supports") as exc:
        resolve_store_settings(None, tracking=tracking)
    assert "hunter2" not in str(exc.value)
    monkeypatch.setenv("ORCH_STORE_URL", "sqlite:///:memory:")
    with pytest.raises(ConfigValidationError, match="names no database file"):
        resolve_store_settings(None, tracking=tracking)


def test_import_orchlab_loads_no_sqlalchemy() -> None:
    out = run_python(
        """
        import sys, orchlab
        client = orchlab.get_llm_client()
        print(sorted(m for m in ("sqlalchemy", "alembic", "psycopg") if m in sys.modules))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- threads ---------------------------------------------------------------------------------


def test_a_thread_is_continued_in_another_process(
    client: Orchestrator, openai_server: OpenAIWireServer, store_url: str, tmp_path: Path
) -> None:
    config = client.config_path
    first = run_python(
        f"""
        import orchlab
        client = orchlab.get_llm_client({str(config)!r})
        t = client.thread("project-x")
        r = t.run("chat", "my name is Ada")
        print(t.id, r.message_id)
        """
    )
    assert first.returncode == 0, first.stderr
    thread_id, message_id = first.stdout.split()
    t = client.thread("project-x")
    assert t.id == thread_id
    r = client.thread(thread_id).run("chat", "what is my name?")
    assert sent(openai_server) == [
        ("user", "my name is Ada"),
        ("assistant", "echo: my name is Ada"),
        ("user", "what is my name?"),
    ]
    stored = t.history()
    assert [(m.role, m.text) for m in stored] == [
        *sent(openai_server),
        ("assistant", "echo: what is my name?"),
    ]
    assert stored[1].id == message_id and stored[-1].id == r.message_id
    assert stored[2].parent_id == message_id  # the second exchange hangs under the first answer
    assert (stored[-1].provider, stored[-1].model, stored[-1].llm_role) == ("loop", "m", "chat")
    assert stored[-1].input_tokens == r.usage.input_tokens and stored[-1].cost_usd == r.cost_usd


def test_context_depth_sends_exactly_the_last_messages_of_the_branch(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    t = client.thread("depth", context_depth=3)
    answers = [t.run("chat", f"q{i}") for i in range(4)]
    # an edit of q2: a new branch from q2's parent (the answer to q1)
    q2 = t.history(8)[-4]
    assert q2.text == "q2"
    t.run("chat", "q2 edited", parent_id=q2.parent_id)
    t.run("chat", "q3 on the new branch")
    # exactly the last 3 messages of the current branch + the new one
    assert sent(openai_server) == [
        ("assistant", "echo: q1"),
        ("user", "q2 edited"),
        ("assistant", "echo: q2 edited"),
        ("user", "q3 on the new branch"),
    ]
    # the old branch is untouched: every message written once
    frame = t.messages()
    assert list(frame["content"]) == [
        "q0",
        "echo: q0",
        "q1",
        "echo: q1",
        "q2",
        "echo: q2",
        "q3",
        "echo: q3",
        "q2 edited",
        "echo: q2 edited",
        "q3 on the new branch",
        "echo: q3 on the new branch",
    ]
    assert answers[-1].message_id in set(frame["id"])
    deeper = client.thread("depth", context_depth=0)
    deeper.run("chat", "alone")
    assert sent(openai_server) == [("user", "alone")]


def test_system_and_restart(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    t = client.thread("sys", system="Be brief.")
    t.run("chat", "a")
    t.run("chat", "b")
    assert sent(openai_server) == [
        ("system", "Be brief."),
        ("user", "a"),
        ("assistant", "echo: a"),
        ("user", "b"),
    ]
    t.restart()
    t.run("chat", "c")
    assert sent(openai_server) == [("system", "Be brief."), ("user", "c")]
    assert len(t.messages()) == 6  # nothing was deleted


async def test_arun_and_stream_store_the_exchange(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    t = client.thread()
    r = await t.arun("chat", "one")
    stream = t.stream("chat", "two")
    text = "".join([d async for d in stream])
    assert text.strip() == "echo: two"
    assert stream.response is not None and stream.response.message_id is not None
    assert sent(openai_server) == [("user", "one"), ("assistant", "echo: one"), ("user", "two")]
    history = t.history()
    assert [m.id for m in history][1::2] == [r.message_id, stream.response.message_id]
    assert history[-1].text == text


def test_a_failed_call_writes_nothing(client: Orchestrator, openai_server: OpenAIWireServer) -> None:
    from tests.servers.openai_wire import Reply

    t = client.thread("fails")
    t.run("chat", "ok")
    openai_server.push(Reply.error(400, "bad request"))
    with pytest.raises(Exception, match="bad request"):
        t.run("chat", "refused")
    assert list(t.messages()["content"]) == ["ok", "echo: ok"]


def test_unknown_thread_and_parent_are_store_errors(client: Orchestrator) -> None:
    from orchlab.store.ids import new_ulid

    missing = new_ulid()
    with pytest.raises(StoreError, match=f"no thread {missing}"):
        client.thread(missing)
    with pytest.raises(StoreError, match="context_depth must be a whole number"):
        client.thread("x", context_depth=-1)
    with pytest.raises(StoreError, match=f"no message '{missing}' in thread"):
        client.thread("x").run("chat", "hi", parent_id=missing)


# --- many writers, kill -9 ---------------------------------------------------------------------

WRITER = """
    import sys
    from datetime import UTC, datetime
    from orchlab.store.ids import new_ulid
    from orchlab.store.settings import StoreSettings
    from orchlab.store.store import Store
    url, thread_id, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = Store.open(StoreSettings(url))
    for i in range(n):
        row = {{"id": new_ulid(), "thread_id": thread_id, "parent_id": None, "role": "user",
                "content": [{{"type": "text", "text": f"{{tag}}-{{i}}"}}], "created_at": datetime.now(UTC)}}
        store.append([row], head=row["id"])
        print(row["id"], flush=True)
"""


def test_eight_writer_processes_lose_nothing_and_never_see_a_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    store = Store.open(StoreSettings(url))
    thread = store.create_thread(name="busy")
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER.format()), url, thread.id, str(n), f"w{k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(8)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err[-500:] for _, err in outs]
    assert not any("locked" in err for _, err in outs)
    texts = sorted(m.text for m in store.messages(thread.id))
    assert texts == sorted(f"w{k}-{i}" for k in range(8) for i in range(n))
    store.close()


def test_kill_9_during_writes_loses_at_most_the_message_being_written(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    url = f"sqlite:///{db}"
    store = Store.open(StoreSettings(url))
    thread = store.create_thread(name="killed")
    store.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER.format()), url, thread.id, "100000", "k"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    committed = [proc.stdout.readline().strip() for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read().split()
    proc.wait(timeout=30)
    printed = committed + rest
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    reopened = Store.open(StoreSettings(url))
    stored = [m.id for m in reopened.messages(thread.id)]
    assert stored[: len(printed)] == printed  # everything acknowledged is there, in order
    assert len(stored) - len(printed) <= 1  # at most the one whose commit was not acknowledged yet
    assert reopened.thread(thread.id).head_id == stored[-1]
    reopened.close()


# --- feedback ------------------------------------------------------------------------------------


def test_feedback_on_an_untraced_message_is_the_row_alone(client: Orchestrator, store_url: str) -> None:
    t = client.thread("rate")
    r = t.run("chat", "hello")
    fb = client.feedback(r.message_id, 4, comment="fine", user="ana")
    assert (fb.message_id, fb.user, fb.kind, fb.value, fb.trace_id, fb.rating) == (
        r.message_id,
        "ana",
        "stars",
        4,
        None,
        None,
    )
    client.feedback(r, "down", user="ana")  # the same user again: the row is updated
    client.feedback(r, True, user="bo")
    frame = _feedback_rows(client.store)
    assert frame == [(r.message_id, "ana", "thumbs", 0, None), (r.message_id, "bo", "thumbs", 1, None)]
    user_message = t.history()[0].id
    with pytest.raises(StoreError, match="is a user message"):
        client.feedback(user_message, 5)
    with pytest.raises(Exception, match="a star rating must be 1 to 5"):
        client.feedback(r.message_id, 9)


# --- reads ---------------------------------------------------------------------------------------


def test_usage_by_thread_user_and_day_and_rated_messages_of_a_prompt(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    from datetime import UTC, datetime

    from orchlab.tracking.prompts import PromptMessage

    a = client.thread("a", user="ana")
    b = client.thread("b", user="bo")
    a.run("chat", "one two")
    a.run("chat", "three")
    r = b.run("chat", [PromptMessage("user", "summarise: x", "summarise", "2")])
    b.run("chat", [PromptMessage("user", "summarise: y", "summarise", "3")])
    client.feedback(r, 5, comment="great", user="cy")
    by_thread = client.store.usage("thread")
    assert list(by_thread["thread"]) == ["a", "b"]
    assert list(by_thread["calls"]) == [2, 2]
    sent_a = openai_server.requests[0].body, openai_server.requests[1].body
    assert by_thread["output_tokens"].sum() > 0
    assert len(sent_a) == 2
    by_user = client.store.usage("user")
    assert list(by_user["user"]) == ["ana", "bo"]
    by_day = client.store.usage("day")
    assert list(by_day["day"]) == [datetime.now(UTC).date().isoformat()]
    assert list(by_day["calls"]) == [4]
    rated = client.store.rated_messages("summarise", 2)
    assert rated[["version", "answer", "user", "kind", "value", "comment"]].to_dict("records") == [
        {
            "version": "2",
            "answer": "echo: summarise: x",
            "user": "cy",
            "kind": "stars",
            "value": 5,
            "comment": "great",
        }
    ]
    assert client.store.rated_messages("summarise", 3).empty
    threads = client.threads()
    assert list(threads["name"]) == ["b", "a"] and list(threads["messages"]) == [4, 4]
    with pytest.raises(StoreError, match="by is one of thread, user, day"):
        client.store.usage("month")


# --- async (the gateway's path) --------------------------------------------------------------------


async def test_async_store_reads_what_the_sync_store_wrote(store_url: str) -> None:
    from datetime import UTC, datetime

    from orchlab.store.ids import new_ulid

    store = await AsyncStore.open(StoreSettings(store_url))
    try:
        t = await store.create_thread(name="gw")
        head = None
        for i in range(5):
            row = {
                "id": new_ulid(),
                "thread_id": t.id,
                "parent_id": head,
                "role": "user" if i % 2 == 0 else "assistant",
                "content": [{"type": "text", "text": f"m{i}"}],
                "created_at": datetime.now(UTC),
            }
            await store.append([row], head=row["id"])
            head = row["id"]
        got_head, branch = await store.current_branch(t.id, 3)
        assert got_head == head and [m.text for m in branch] == ["m2", "m3", "m4"]
        await store.set_feedback(head, "ana", "thumbs", 1)
        sync = Store.open(StoreSettings(store_url))
        assert [m.text for m in sync.branch(head, 2)] == ["m3", "m4"]
        assert _feedback_rows(sync) == [(head, "ana", "thumbs", 1, None)]
        sync.close()
    finally:
        await store.aclose()


def _json(value: object) -> str:
    return json.dumps(value)


def test_a_registered_prompt_is_rendered_and_its_template_kept(
    client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    from sqlalchemy import select

    from orchlab.store.schema import prompt_versions
    from orchlab.tracking.prompts import RegisteredPrompt

    class Version:  # what MLflow's PromptVersion does for a text template
        def format(self, **variables: str) -> str:
            return "Summarise: {{text}}".replace("{{text}}", variables["text"])

    prompt = RegisteredPrompt(
        "summarise", 3, "Summarise: {{text}}", frozenset({"text"}), _version_obj=Version()
    )
    r = client.thread("p").run("chat", prompt, variables={"text": "a diff"})
    assert sent(openai_server) == [("user", "Summarise: a diff")]
    stored = client.store.message(r.message_id or "")
    assert stored is not None and (stored.prompt_name, stored.prompt_version) == ("summarise", "3")
    with client.store._engine.connect() as conn:
        rows = conn.execute(
            select(
                prompt_versions.c.name,
                prompt_versions.c.version,
                prompt_versions.c.template,
                prompt_versions.c.source,
            )
        ).all()
    assert [tuple(row) for row in rows] == [("summarise", "3", "Summarise: {{text}}", "prompts:/summarise/3")]
