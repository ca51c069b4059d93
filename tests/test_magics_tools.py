"""``%%llm --tools NAME`` (issue 17 item 6) in a real IPython InteractiveShell: the cell delegates
to the role with a toolset or a notebook variable's functions, and shows each tool call and its
result before the answer. The model is the scripted tool agent of the OpenAI loopback server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from orchlab.notebook import NotebookSession, set_session
from orchlab.notebook.args import ArgsError, parse_cell_args
from orchlab.notebook.magics import LLMCallError
from tests.servers import tool_agent
from tests.servers.openai_wire import OpenAIWireServer


def get_weather(city: str) -> dict[str, object]:
    """The current weather in a city."""
    return {"city": city, "temp_c": tool_agent.TEMPS[city]}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "orchlab")
    return sh


@pytest.fixture
def session(write_config: Callable[..., Path], openai_server: OpenAIWireServer) -> Iterator[NotebookSession]:
    s = NotebookSession(
        write_config(
            f"""\
            project: magic_tools
            providers:
              remote: {{type: vllm, api_base: "{openai_server.base_url}"}}
            toolsets:
              weather: ["tests.test_magics_tools:get_weather", "tests.test_magics_tools:add"]
            roles:
              llm.inference: {{provider: remote, model: m}}
            """
        )
    )
    s.live_mode = "off"
    set_session(s)
    yield s
    set_session(None)
    s.close()


def run(shell: InteractiveShell, line: str, body: str) -> Any:
    with capture_output(display=True) as cap:
        shell.run_cell_magic("llm", line, body)
    return cap


@pytest.mark.parametrize("tools", ["weather", "my_tools"])
def test_a_tools_cell_shows_each_call_and_result_then_the_answer(
    shell: InteractiveShell, session: NotebookSession, tools: str
) -> None:
    shell.user_ns["my_tools"] = [get_weather, add]
    cap = run(shell, f"--tools {tools} -o r", "Weather in Paris and Oslo, and the sum?")
    shown = [o.data for o in cap.outputs]
    # one output per tool run, as each finishes (the two weather calls run at once: either order)
    assert sorted(o["text/plain"] for o in shown[:2]) == [
        'step 1  get_weather({"city": "Oslo"}) -> {"city": "Oslo", "temp_c": 14}',
        'step 1  get_weather({"city": "Paris"}) -> {"city": "Paris", "temp_c": 21}',
    ]
    assert shown[2]["text/plain"] == 'step 2  add({"a": 21, "b": 14}) -> 35'
    assert shown[2]["text/markdown"] == 'tool · step 2 `add({"a": 21, "b": 14})` → `35`'
    assert len(shown) == 4 and tool_agent.FINAL in shown[3]["text/markdown"]
    response = shell.user_ns["r"]
    assert response.content == tool_agent.FINAL and len(response.decision.tools) == 3


def test_tools_options_are_checked(shell: InteractiveShell, session: NotebookSession) -> None:
    assert parse_cell_args("--tools weather,my_tools").tools == ["weather", "my_tools"]
    with pytest.raises(ArgsError, match="--tools delegates to one role"):
        parse_cell_args("--tools weather --compare a:b,c:d")
    with pytest.raises(UsageError):
        shell.run_cell_magic("llm", "--tools weather --ensemble vote", "q")
    with pytest.raises(LLMCallError, match="no toolset 'wether'; did you mean 'weather'"):
        run(shell, "--tools wether", "q")
