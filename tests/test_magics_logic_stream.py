"""``%%llm`` on a role with a strategy streams its logic (it used to run it unstreamed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from orchlab.notebook.session import NotebookSession, set_session

CONFIG = """\
    project: magic_logic
    providers:
      a:
        type: test
        options: {models: {down: {script: [{error: unavailable}]}, m: {reply: "streamed from a"}}}
    roles:
      chain: {provider: a, model: down, fallbacks: ["a:m"], retry: {retries: 0}}
    """


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "orchlab")
    return sh


@pytest.fixture
def session(write_config: Callable[..., Path]) -> Iterator[NotebookSession]:
    s = NotebookSession(write_config(CONFIG))
    s.live_mode = "print"
    set_session(s)
    yield s
    set_session(None)
    s.close()


def test_a_strategy_role_streams_into_the_cell(shell: InteractiveShell, session: NotebookSession) -> None:
    with capture_output() as cap:
        shell.run_cell_magic("llm", "-r chain -o r", "What is 2+2?")
    r: Any = shell.user_ns["r"]
    assert cap.stdout.strip() == r.content == "streamed from a"  # printed delta by delta as it came
    assert r.decision.strategy == "fallback"
    assert [(a.model, a.outcome) for a in r.decision.attempts] == [("down", "error"), ("m", "ok")]
    calls = session.client.provider("a").calls
    assert [(c.model, c.stream) for c in calls] == [("down", True), ("m", True)]
