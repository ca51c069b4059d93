"""The tool model shared by every adapter: `Tool`, `ToolCall`, `ToolResult`, and what a tool run
records (`ToolRun`).

They mirror OpenAI's chat-completions JSON one to one (``from_openai`` / ``to_openai``), so a
gateway or a user's dicts map onto them without loss; each adapter maps them to its own wire
format (`orchlab.providers`). Plain frozen dataclasses: built once, on the hot path.

A tool call's ``arguments`` is the parsed JSON object; ``raw_arguments`` the JSON text as the
model wrote it (OpenAI sends a string, Anthropic, Gemini and Ollama an object: their text is the
object dumped). A call whose text is not a JSON object keeps ``arguments == {}`` and names the
problem in ``arguments_error``; a tool run answers it with an error result, never a guess.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchlab.errors import InvalidRequestError

TOOL_CHOICES = ("auto", "none", "required")
"""``tool_choice`` values besides a tool's name."""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_call_id() -> str:
    """``call_`` + a ULID (48-bit milliseconds, 80 random bits, Crockford base32): for providers
    whose calls carry no id (Ollama, Gemini). Never the function name: parallel calls to one
    function would collide."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "call_" + "".join(reversed(chars))


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, what it does, and its parameters' JSON schema.

    ``strict``: ask the provider to hold the arguments to the schema exactly (OpenAI's strict
    mode; other providers ignore it)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False

    def to_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    @staticmethod
    def from_openai(spec: Mapping[str, Any], where: str = "tools[0]") -> Tool:
        """``{"type": "function", "function": {"name", "description", "parameters", "strict"}}``
        (the bare ``function`` object is taken too)."""
        if not isinstance(spec, Mapping):
            raise InvalidRequestError(f"{where} must be a dict, got {type(spec).__name__}", parameter=where)
        function = spec.get("function", spec) if spec.get("type", "function") == "function" else None
        if not isinstance(function, Mapping):
            raise InvalidRequestError(
                f"{where}.type is {spec.get('type')!r}: only function tools are supported", parameter=where
            )
        name = function.get("name")
        check_tool_name(name, f"{where}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, Mapping):
            raise InvalidRequestError(
                f"{where}.function.parameters must be a JSON schema object", parameter=where
            )
        return Tool(
            str(name), str(function.get("description") or ""), dict(parameters), bool(function.get("strict"))
        )


def check_tool_name(name: object, where: str) -> None:
    """Names every provider accepts: 1-64 of ``a-z A-Z 0-9 _ -`` (Gemini also allows ``.``)."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 64
        or not all(c.isalnum() or c in "_-" for c in name)
    ):
        raise InvalidRequestError(
            f"{where} is {name!r}: a tool name is 1-64 letters, digits, '_' or '-'", parameter=where
        )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for: ``id`` (the provider's, or minted: `new_call_id`), the
    function's ``name``, its parsed ``arguments`` and their ``raw_arguments`` text.

    ``signature`` is an opaque provider token that must go back with the call (Gemini's thought
    signature); other providers ignore it."""

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str = "{}"
    signature: str | None = field(default=None, repr=False)

    @staticmethod
    def from_text(id: str, name: str, text: str | None, signature: str | None = None) -> ToolCall:
        """A call whose arguments arrived as JSON text (OpenAI, a stream's joined deltas)."""
        text = text or "{}"
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return ToolCall(id, name, parsed if isinstance(parsed, dict) else {}, text, signature)

    @staticmethod
    def from_object(
        id: str, name: str, arguments: Mapping[str, Any] | None, signature: str | None = None
    ) -> ToolCall:
        """A call whose arguments arrived as an object (Anthropic, Gemini, Ollama)."""
        args = dict(arguments or {})
        return ToolCall(id, name, args, json.dumps(args, ensure_ascii=False), signature)

    @property
    def arguments_error(self) -> str | None:
        """Why ``raw_arguments`` is not a JSON object (None: it is)."""
        try:
            parsed = json.loads(self.raw_arguments or "{}")
        except ValueError as exc:
            return f"the arguments are not valid JSON ({exc})"
        if not isinstance(parsed, dict):
            return f"the arguments are a JSON {type(parsed).__name__}, not an object"
        return None

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.raw_arguments},
        }

    @staticmethod
    def from_openai(spec: object, where: str = "tool_calls[0]") -> ToolCall:
        """``{"id", "type": "function", "function": {"name", "arguments": "<json text>"}}``; a
        `ToolCall` is taken as it is."""
        if isinstance(spec, ToolCall):
            return spec
        if not isinstance(spec, Mapping) or not isinstance(spec.get("function"), Mapping):
            raise InvalidRequestError(
                f"{where} must be {{'id': ..., 'type': 'function', 'function': "
                "{'name': ..., 'arguments': ...}}",
                parameter=where,
            )
        call_id, function = spec.get("id"), spec["function"]
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequestError(f"{where}.id must be a non-empty string", parameter=f"{where}.id")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"{where}.function.name must be a non-empty string", parameter=where)
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            return ToolCall.from_object(call_id, name, arguments)
        if arguments is not None and not isinstance(arguments, str):
            raise InvalidRequestError(
                f"{where}.function.arguments must be JSON text, got {type(arguments).__name__}",
                parameter=where,
            )
        return ToolCall.from_text(call_id, name, arguments)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What running a call gave: the text sent back to the model for the call ``call_id``;
    ``is_error`` when the tool failed or its arguments were refused (the model sees why)."""

    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One tool run in a `delegate` loop: the call, its result, when and how long (a TOOL span)."""

    call: ToolCall
    result: ToolResult
    step: int
    started_at: float
    """Wall-clock start (``time.time()``)."""
    latency_s: float


def check_tool_choice(choice: object, tools: tuple[Tool, ...], where: str = "tool_choice") -> str | None:
    """``auto`` / ``none`` / ``required`` or the name of one of ``tools`` (OpenAI's
    ``{"type": "function", "function": {"name": ...}}`` is taken too); None when unset."""
    if choice is None:
        return None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        choice = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(choice, str):
        raise InvalidRequestError(
            f"{where} must be 'auto', 'none', 'required' or a tool's name", parameter=where
        )
    if choice in TOOL_CHOICES:
        return choice
    names = [t.name for t in tools]
    if choice not in names:
        raise InvalidRequestError(
            f"{where} is {choice!r}, which is neither 'auto', 'none', 'required' nor one of the tools "
            f"given ({', '.join(names) or 'none'})",
            parameter=where,
        )
    return choice


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """The tools one call offers the model, ``tool_choice`` and ``parallel_tool_calls`` (what
    goes on each `ModelRequest` of the call)."""

    tools: tuple[Tool, ...] = ()
    choice: str | None = None
    parallel: bool | None = None

    def __bool__(self) -> bool:
        return bool(self.tools) or self.choice is not None or self.parallel is not None


NO_TOOLS = ToolOffer()
