"""The tool model (issue 17 items 1-3): messages with tool calls and results, functions as tools
with validated arguments, toolsets from the YAML."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Literal

import pytest

import orchlab
from orchlab.config.loader import load_config
from orchlab.errors import ConfigError, ConfigValidationError, InvalidRequestError
from orchlab.tools.functions import FunctionTool, run_calls
from orchlab.tools.model import Tool, ToolCall, check_tool_choice, new_call_id
from orchlab.tools.toolsets import gather_tools
from orchlab.types import Message, to_messages

CALL = {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}


@orchlab.tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """The weather in a city."""
    return {"city": city, "sky": "sunny", "unit": unit}


# --- messages ---------------------------------------------------------------------------------


def test_openai_shaped_tool_turns_become_messages() -> None:
    messages = to_messages(
        [
            {"role": "user", "content": "1+2?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_a", "content": "3"},
        ]
    )
    assert messages[1] == Message(
        "assistant", "", tool_calls=(ToolCall("call_a", "add", {"a": 1, "b": 2}, '{"a": 1, "b": 2}'),)
    )
    assert messages[2] == Message("tool", "3", tool_call_id="call_a")
    assert messages[1].tool_calls[0].to_openai() == CALL


@pytest.mark.parametrize(
    ("turns", "problem"),
    [
        (
            [{"role": "tool", "tool_call_id": "x", "content": "3"}],
            "messages[0].tool_call_id is 'x', but no earlier",
        ),
        (
            [{"role": "user", "content": "q"}, {"role": "tool", "content": "3"}],
            "messages[1] is a tool result without",
        ),
        (
            [{"role": "user", "content": "q", "tool_calls": [CALL]}],
            "messages[0] is a 'user' turn with tool_calls",
        ),
        (
            [{"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}],
            "messages[0].tool_calls[0] must be",
        ),
        ([{"role": "user", "content": "q", "tool_call_id": "c"}], "only a 'tool' turn answers a call"),
        ([{"role": "user", "content": "q", "colour": "red"}], "unknown keys ['colour']"),
    ],
)
def test_bad_tool_turns_are_refused_naming_the_message(turns: list[dict[str, object]], problem: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages(turns)
    assert problem in str(info.value)


def test_arguments_that_are_no_json_object_are_kept_and_named() -> None:
    call = ToolCall.from_text("c", "add", '{"a": 1')
    assert call.arguments == {} and call.raw_arguments == '{"a": 1'
    assert call.arguments_error is not None and "not valid JSON" in call.arguments_error
    assert (
        ToolCall.from_text("c", "add", "[1]").arguments_error
        == "the arguments are a JSON list, not an object"
    )
    assert ToolCall.from_object("c", "add", {"a": 1}).raw_arguments == '{"a": 1}'


def test_minted_call_ids_are_unique_and_never_the_function_name() -> None:
    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("call_") and len(i) == 31 for i in ids)


def test_tool_choice_takes_the_four_kinds() -> None:
    tools = (Tool("add"),)
    assert [check_tool_choice(c, tools) for c in ("auto", "none", "required", "add", None)] == [
        "auto",
        "none",
        "required",
        "add",
        None,
    ]
    assert check_tool_choice({"type": "function", "function": {"name": "add"}}, tools) == "add"
    with pytest.raises(InvalidRequestError, match="'mul', which is neither"):
        check_tool_choice("mul", tools)


def test_openai_tool_json_round_trips() -> None:
    spec = {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }
    assert Tool.from_openai(spec).to_openai() == spec
    with pytest.raises(InvalidRequestError, match="a tool name is 1-64"):
        Tool.from_openai({"type": "function", "function": {"name": "bad name"}})


# --- functions as tools -----------------------------------------------------------------------


def test_a_decorated_function_gets_its_schema_from_hints_and_docstring() -> None:
    assert isinstance(add, FunctionTool) and add(2, 3) == 5
    assert add.tool == Tool(
        "add",
        "Add two integers.",
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "the first"},
                "b": {"type": "integer", "description": "the second"},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    )
    weather = FunctionTool(get_weather)
    assert weather.tool.parameters["properties"]["unit"] == {
        "enum": ["C", "F"],
        "type": "string",
        "default": "C",
    }
    assert orchlab.tool(name="weather", strict=True)(get_weather).tool.strict


def test_arguments_are_validated_before_the_function_runs() -> None:
    ran: list[object] = []

    @orchlab.tool
    def record(n: int) -> str:
        ran.append(n)
        return "ok"

    calls = (
        ToolCall.from_text("1", "record", '{"n": "seven"}'),
        ToolCall.from_text("2", "record", "{"),
        ToolCall.from_text("3", "nope", "{}"),
        ToolCall.from_text("4", "record", '{"n": 7}'),
    )
    runs = asyncio.run(run_calls(calls, {"record": record}, 1))
    assert [(r.result.call_id, r.result.is_error) for r in runs] == [
        ("1", True),
        ("2", True),
        ("3", True),
        ("4", False),
    ]
    assert "invalid arguments: n: Input should be a valid integer" in runs[0].result.content
    assert "not valid JSON" in runs[1].result.content
    assert "no tool named 'nope' (tools: record)" in runs[2].result.content
    assert ran == [7]


def test_a_failing_function_answers_with_an_error_result_and_results_are_json() -> None:
    @orchlab.tool
    def boom() -> str:
        raise ValueError("no network")

    runs = asyncio.run(
        run_calls(
            (
                ToolCall.from_text("1", "boom", "{}"),
                ToolCall.from_text("2", "get_weather", '{"city": "Oslo"}'),
            ),
            {"boom": boom, "get_weather": FunctionTool(get_weather)},
            1,
        )
    )
    assert runs[0].result.content == "boom failed: ValueError: no network" and runs[0].result.is_error
    assert runs[1].result.content == '{"city": "Oslo", "sky": "sunny", "unit": "C"}'


def test_several_calls_run_at_once() -> None:
    barrier = threading.Barrier(2, timeout=5)

    @orchlab.tool
    def meet(n: int) -> int:
        barrier.wait()  # only returns when both calls are running together
        return n

    calls = (ToolCall.from_text("1", "meet", '{"n": 1}'), ToolCall.from_text("2", "meet", '{"n": 2}'))
    started = time.perf_counter()
    runs = asyncio.run(run_calls(calls, {"meet": meet}, 1))
    assert [r.result.content for r in runs] == ["1", "2"]
    assert time.perf_counter() - started < 5


# --- toolsets ---------------------------------------------------------------------------------


def _config(tmp_path: Path, body: str):
    path = tmp_path / "orchlab.yaml"
    path.write_text(textwrap.dedent(body))
    return load_config(path)


def test_toolsets_name_importable_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mytools.py").write_text(
        "def search_docs(query: str) -> str:\n    '''Search the docs.'''\n    return 'found ' + query\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _config(
        tmp_path,
        """\
        project: t
        providers: {p: {type: test}}
        toolsets:
          research: ["mytools:search_docs", "tests.test_tools_model:add"]
        roles:
          analyst: {provider: p, model: m, toolset: research}
        """,
    )
    tools = gather_tools(None, None, config.toolsets, config.roles["analyst"].toolset)
    assert [t.tool.name for t in tools if isinstance(t, FunctionTool)] == ["search_docs", "add"]
    assert tools[1] is add
    # tools= names a toolset too, and then the role's is not added
    assert [
        getattr(t, "name", None) for t in gather_tools([get_weather], None, config.toolsets, "research")
    ] == ["get_weather"]
    with pytest.raises(InvalidRequestError, match="no toolset 'reserch'; did you mean 'research'"):
        gather_tools(None, "reserch", config.toolsets)
    sys.modules.pop("mytools", None)


def test_bad_toolsets_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigValidationError, match="toolsets"):
        _config(tmp_path, "project: t\ntoolsets: {x: ['not a ref']}\n")
    with pytest.raises(ConfigValidationError, match=r"roles\.r\.toolset is 'nope'"):
        _config(
            tmp_path,
            "project: t\nproviders: {p: {type: test}}\nroles: {r: {provider: p, model: m, toolset: nope}}\n",
        )
    config = _config(tmp_path, "project: t\ntoolsets: {x: ['no_such_module_17:f']}\n")
    with pytest.raises(ConfigError, match=r"toolsets.x\[0\]: cannot import module 'no_such_module_17'"):
        gather_tools("x", None, config.toolsets)
