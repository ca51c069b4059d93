"""Python functions as tools: ``@orchlab.tool`` or a plain function with type hints and a docstring.

The parameters' JSON schema comes from the signature through pydantic; the description from the
docstring's first paragraph, and each parameter's from an ``Args:`` section when there is one.
Arguments are validated before the function runs: a validation error, an exception inside the
function or arguments that are no JSON object go back to the model as an error result (it can
correct itself), never into the caller's path. For example:

    @orchlab.tool
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"\"\"The current weather in a city.

        Args:
            city: the city's name, e.g. Paris
        \"\"\"
        return f"sunny, 21 {unit}"
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, get_type_hints, overload

from orchlab.errors import InvalidRequestError
from orchlab.tools.model import Tool, ToolCall, ToolResult, ToolRun, check_tool_name

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


class FunctionTool:
    """A Python function the model may call: its `Tool` (name, description, JSON schema) and a
    pydantic model that validates the arguments. Calling it calls the function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
    ) -> None:
        from pydantic import ConfigDict, create_model

        if not callable(fn):
            raise InvalidRequestError(f"a tool must be a function, got {type(fn).__name__}")
        self.fn = fn
        tool_name: str = name or str(getattr(fn, "__name__", ""))
        check_tool_name(tool_name, f"the name of tool {fn!r}")
        summary, arg_docs = _docstring(inspect.getdoc(fn) or "")
        try:
            hints = get_type_hints(fn)
        except Exception:
            hints = {}
        fields: dict[str, Any] = {}
        self._positional: list[str] = []
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise InvalidRequestError(
                    f"tool {tool_name!r}: *{pname} cannot be described to a model; name each parameter"
                )
            if param.kind is param.POSITIONAL_ONLY:
                self._positional.append(pname)
            annotation = hints.get(pname, Any)
            from pydantic import Field

            default = ... if param.default is param.empty else param.default
            fields[pname] = (annotation, Field(default, description=arg_docs.get(pname)))
        self.arguments_model = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        schema = _without_titles(self.arguments_model.model_json_schema())
        self.tool = Tool(tool_name, description if description is not None else summary, schema, strict)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = tool_name
        self.__wrapped__ = fn

    @property
    def name(self) -> str:
        return self.tool.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"

    async def run(self, call: ToolCall) -> ToolResult:
        """Validate ``call``'s arguments and run the function (a sync one in a worker thread, so
        several calls run at once); its result as text (JSON for anything but a string)."""
        problem = call.arguments_error
        if problem is not None:
            return ToolResult(call.id, f"{problem}; send the arguments as a JSON object", is_error=True)
        from pydantic import ValidationError

        try:
            validated = self.arguments_model.model_validate(dict(call.arguments))
        except ValidationError as exc:
            lines = [
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()
            ]
            return ToolResult(call.id, "invalid arguments: " + "; ".join(lines), is_error=True)
        values = {k: getattr(validated, k) for k in type(validated).model_fields}
        args = [values.pop(p) for p in self._positional]
        try:
            if self.is_async:
                result = await self.fn(*args, **values)
            else:
                result = await asyncio.to_thread(self.fn, *args, **values)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            return ToolResult(call.id, f"{self.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        return ToolResult(call.id, as_text(result))


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, strict: bool = False
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make ``fn`` a tool (``@orchlab.tool`` or ``@orchlab.tool(name=..., strict=True)``); the
    function stays callable as before. A plain function passed as a tool is made one the same way."""
    if fn is not None:
        return FunctionTool(fn, name=name, description=description, strict=strict)
    return lambda f: FunctionTool(f, name=name, description=description, strict=strict)


def as_text(value: Any) -> str:
    """A tool's return value as the text sent back to the model."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, ensure_ascii=False, default=str)


AnyTool = FunctionTool | Tool


def as_tool(item: object, where: str) -> AnyTool:
    """One item of ``tools=``: a `FunctionTool`, a function, a `Tool` (a schema only: the model
    may call it, but `delegate` cannot run it) or OpenAI's tool JSON."""
    if isinstance(item, FunctionTool | Tool):
        return item
    if isinstance(item, Mapping):
        return Tool.from_openai(item, where)
    if callable(item) and not isinstance(item, type):
        return FunctionTool(item)
    raise InvalidRequestError(
        f"{where} is a {type(item).__name__}: a tool is a function, an @orchlab.tool, an orchlab Tool or "
        "OpenAI's {'type': 'function', 'function': {...}} JSON",
        parameter=where,
    )


def schemas(tools: tuple[AnyTool, ...]) -> tuple[Tool, ...]:
    """The `Tool` of each (what is sent to the model); two tools of one name are refused."""
    out = tuple(t.tool if isinstance(t, FunctionTool) else t for t in tools)
    seen: set[str] = set()
    for t in out:
        if t.name in seen:
            raise InvalidRequestError(
                f"two tools are named {t.name!r}: tool names must be unique", parameter="tools"
            )
        seen.add(t.name)
    return out


async def run_calls(
    calls: tuple[ToolCall, ...],
    tools: Mapping[str, AnyTool],
    step: int,
    on_run: Callable[[ToolRun], object] | None = None,
) -> list[ToolRun]:
    """Run ``calls`` at once (a sync function each in its own worker thread), in the order asked.
    A call to a tool that is not given, or that is a schema only, is answered with an error.
    ``on_run`` is told of each run as it finishes."""

    async def one(call: ToolCall) -> ToolRun:
        started, t0 = time.time(), time.perf_counter()
        found = tools.get(call.name)
        if isinstance(found, FunctionTool):
            result = await found.run(call)
        elif found is None:
            known = ", ".join(tools) or "none"
            result = ToolResult(
                call.id, f"there is no tool named {call.name!r} (tools: {known})", is_error=True
            )
        else:
            result = ToolResult(call.id, f"tool {call.name!r} has no function to run here", is_error=True)
        run = ToolRun(call, result, step, started, time.perf_counter() - t0)
        if on_run is not None:
            on_run(run)
        return run

    return list(await asyncio.gather(*(one(c) for c in calls)))


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each parameter's text from an ``Args:`` section."""
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    lines = doc.splitlines()
    i = 0
    while i < len(lines) and lines[i].strip():
        summary_lines.append(lines[i].strip())
        i += 1
    current: str | None = None
    in_args = False
    indent = 0
    for line in lines[i:]:
        if _ARGS_HEADER.match(line):
            in_args, current, indent = True, None, len(line) - len(line.lstrip())
            continue
        if not in_args:
            continue
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            in_args = False  # the next section
            continue
        found = _ARG_LINE.match(line)
        if found and (current is None or len(line) - len(line.lstrip()) <= indent + 4):
            current = found.group(1).lstrip("*")
            args[current] = found.group(3).strip()
        elif current is not None and line.strip():
            args[current] = f"{args[current]} {line.strip()}".strip()
    return " ".join(summary_lines), args


def _without_titles(schema: Any) -> Any:
    """pydantic's schema without its generated ``title`` keys (noise in every request)."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]
