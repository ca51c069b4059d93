"""Output formats (OutputSmith): ``run(..., format="raw" | "markdown" | "json")``, and your own.

- ``raw``: the text as generated;
- ``markdown``: normalised: line ends ``\\n``, trailing spaces of each line dropped, an unclosed
  code fence closed, exactly one trailing newline;
- ``json``: the JSON value in the answer (the whole text, a fenced block, or the first object or
  array in prose) as ``response.output``, and its compact text as ``content``; an answer holding no
  JSON is an `OutputValidationError` with the raw text (and the answer, ``.response``). The
  request asks for JSON (``ModelRequest.json_answer``) and each adapter that can holds generation
  to it: OpenAI and compatible servers ``response_format: json_object``, Ollama ``format:
  "json"``, Gemini ``response_mime_type: application/json``, the in-process llama.cpp model a
  generic JSON grammar (Anthropic has no JSON mode: the JSON is extracted as from any answer).

A formatter is a callable ``text -> str | Formatted``: a ``str`` becomes the response's content; a
`Formatted` sets the content and ``response.output``. Add one in this process::

    orchlab.register_formatter("shout", lambda text: text.upper())
    client.run("llm.inference", messages, format="shout").content

or install one: an entry point in the group ``orchlab.formatters``
(``[project.entry-points."orchlab.formatters"] shout = "my_pkg.formats:shout"``), read the first
time a format is neither built in nor added. The names live in one `orchlab.plugins.PluginRegistry`.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from orchlab.errors import InvalidRequestError, OutputValidationError, PluginError
from orchlab.plugins import Plugin, PluginRegistry, did_you_mean

if TYPE_CHECKING:
    from orchlab.types import LLMResponse

GROUP = "orchlab.formatters"
BUILTIN_FORMATS = ("raw", "markdown", "json")
_NAME = re.compile(r"[a-z_][a-z0-9_.-]*")
_FENCE_LINE = re.compile(r"^[ \t]*(```|~~~)")


@dataclass(frozen=True, slots=True)
class Formatted:
    """What a formatter made of an answer: its new ``content`` and a ``value`` (``response.output``)."""

    content: str
    value: Any = None


Formatter = Callable[[str], "str | Formatted"]

FORMATTERS: PluginRegistry[Formatter] = PluginRegistry(
    GROUP, BUILTIN_FORMATS, noun="format", builtin_noun="format", log=logging.getLogger(__name__)
)


def raw(text: str) -> str:
    return text


def markdown(text: str) -> str:
    """Line ends ``\\n``, no trailing spaces, every code fence closed, one trailing newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    fence: str | None = None
    for line in lines:
        match = _FENCE_LINE.match(line)
        if match is not None:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker == fence and line.strip() == marker:
                fence = None
    body = "\n".join(lines).strip("\n")
    if fence is not None:
        body += "\n" + fence
    return body + "\n"


def json_value(text: str) -> Formatted:
    """The JSON value in ``text`` (whole, fenced, or the first object/array in prose)."""
    stripped = text.strip()
    decoder = json.JSONDecoder()
    candidates = [stripped, *(m.group(1) for m in re.finditer(r"```[^\n]*\n(.*?)(?:\n```|\Z)", text, re.S))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        return Formatted(json.dumps(value, ensure_ascii=False), value)
    for i, ch in enumerate(stripped):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(stripped, i)
            except ValueError:
                continue
            return Formatted(json.dumps(value, ensure_ascii=False), value)
    raise ValueError("the answer holds no JSON value")


_BUILTINS: dict[str, Formatter] = {"raw": raw, "markdown": markdown, "json": json_value}


def register_formatter(name: str, formatter: Formatter | str) -> None:
    """Add (or replace) the format ``name``: a callable ``text -> str | Formatted``, or its
    ``"module:function"``. A built-in format cannot be replaced."""
    call = f"register_formatter({name!r}, ...)"
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise PluginError(
            f"{call}: a format name is lower case, such as 'shout' (letters, digits, _ . -)", kind=str(name)
        )
    FORMATTERS.refuse_builtin(name, call)
    if not (callable(formatter) or isinstance(formatter, str)):
        raise PluginError(
            f"{call}: takes a callable text -> str | Formatted, got {type(formatter).__name__}", kind=name
        )
    FORMATTERS.add(name, formatter)


def unregister_formatter(name: str) -> None:
    """Remove a format added with `register_formatter` (nothing happens when there is none)."""
    FORMATTERS.remove(name)


def check_format(name: object) -> str:
    """``name`` when it is a known format, else `InvalidRequestError` with "did you mean" (before
    anything is sent)."""
    if isinstance(name, str) and FORMATTERS.is_known(name):
        return name
    known = FORMATTERS.known()
    raise InvalidRequestError(
        f"unknown format {name!r}{did_you_mean(str(name), known)} (known: {', '.join(known)})",
        parameter="format",
    )


def formatter(name: str) -> Formatter:
    """The formatter registered as ``name`` (built in, added, or installed: imported on first use)."""
    builtin = _BUILTINS.get(name)
    if builtin is not None:
        return builtin
    value = FORMATTERS.added.get(name) or FORMATTERS.loaded(name)
    if value is None:
        check_format(name)
        FORMATTERS.check_clash(name, f"format {name!r}")
        plugin: Plugin = FORMATTERS.installed()[name]
        return FORMATTERS.remember(name, _load(plugin.target, f"format {name!r} ({plugin.origin})", name))
    if isinstance(value, str):
        return FORMATTERS.remember(name, _load(value, f"format {name!r} ({value})", name))
    return value


def _load(target: str, where: str, name: str) -> Formatter:
    module_name, _, attr = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as exc:
        raise PluginError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}", kind=name) from exc
    if not callable(obj):
        raise PluginError(f"{where}: names a {type(obj).__name__}, not a callable", kind=name)
    return cast(Formatter, obj)


def apply_format(response: LLMResponse, name: str) -> LLMResponse:
    """``response`` in the format ``name``: its content (and ``output``) as the formatter made them."""
    if name == "raw":
        return response
    try:
        made = formatter(name)(response.content)
    except (PluginError, InvalidRequestError):
        raise
    except Exception as exc:
        raise OutputValidationError(
            f"format {name!r}: {exc}; the answer: {response.content[:120]!r}",
            provider=response.provider,
            model=response.model,
            raw=response.content,
            errors=[{"type": "format", "loc": (), "msg": str(exc)}],
            response=response,
        ) from None
    if isinstance(made, Formatted):
        return replace(response, content=made.content, output=made.value)
    if isinstance(made, str):
        return replace(response, content=made)
    raise PluginError(
        f"format {name!r}: the formatter returned a {type(made).__name__}; return a str or a Formatted",
        kind=name,
    )
