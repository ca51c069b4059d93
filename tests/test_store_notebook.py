"""``%%llm --chat NAME`` on a stored thread: the conversation survives a kernel restart (the first
exchange is made in another process), and its answers are rated through the store."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from orchlab.notebook import NotebookSession, set_session
from tests.servers.openai_wire import OpenAIWireServer
from tests.store_support import feedback_rows as _feedback_rows
from tests.test_store import KEY, config_yaml, sent


@pytest.fixture
def config(
    write_config: Callable[[str], Path],
    openai_server: OpenAIWireServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    monkeypatch.setenv("ORCH_AUTH_LOOP_API_KEY", KEY)
    return write_config(config_yaml(openai_server, f"sqlite:///{tmp_path / 'chats.db'}"))


@pytest.fixture
def session(config: Path) -> Iterator[NotebookSession]:
    s = NotebookSession(config)
    s.live_mode = "print"
    set_session(s)
    yield s
    set_session(None)
    s.close()


def test_a_chat_survives_a_kernel_restart(
    config: Path, session: NotebookSession, openai_server: OpenAIWireServer
) -> None:
    before = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            from IPython.core.interactiveshell import InteractiveShell
            from orchlab.notebook import NotebookSession, set_session
            shell = InteractiveShell.instance()
            shell.run_line_magic("load_ext", "orchlab")
            set_session(NotebookSession({str(config)!r}))
            shell.run_cell_magic("llm", "--no-stream --chat geo --depth 2", "What is the capital of France?")
            """),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert before.returncode == 0, before.stderr
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "orchlab")
    with capture_output():
        shell.run_cell_magic("llm", "--chat geo --depth 2 -o r", "What is its population?")
    assert sent(openai_server) == [
        ("user", "What is the capital of France?"),
        ("assistant", "echo: What is the capital of France?"),
        ("user", "What is its population?"),
    ]
    r = shell.user_ns["r"]
    assert r.message_id is not None
    table = shell.run_line_magic("llm", "chats")
    assert table.records() == [
        {"chat": "geo", "depth": "2", "kept": "2", "turns": "2", "last question": "What is its population?"}
    ]
    session.client.feedback(r, True, user="ann")  # what the rating widget calls
    assert _feedback_rows(session.client.store) == [(r.message_id, "ann", "thumbs", 1, None)]
    assert shell.run_line_magic("llm", "reset geo").text == "forgot geo"
    with capture_output():
        shell.run_cell_magic("llm", "--no-stream --chat geo", "Hello again")
    assert sent(openai_server) == [("user", "Hello again")]
