"""Toolsets: named collections of tools in the YAML, chosen per call or per role (never bound to a
model string)::

    toolsets:
      research: ["mypkg.search:search_docs", "mypkg.maths:calculator"]
    roles:
      analyst: {provider: openai, model: gpt-4.1-mini, toolset: research}

``client.run(role, messages, toolset="research")`` / ``tools=[...]`` pick them per call; a role's
``toolset:`` applies when the call names none. Each entry is imported on first use (once).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence

from orchlab.errors import ConfigError, InvalidRequestError
from orchlab.plugins import did_you_mean
from orchlab.tools.functions import AnyTool, FunctionTool, as_tool, schemas
from orchlab.tools.model import ToolOffer, check_tool_choice

_imported: dict[str, FunctionTool] = {}


def import_tool(ref: str, where: str) -> FunctionTool:
    """``package.module:function`` as a tool (an ``@orchlab.tool`` stays as it is)."""
    found = _imported.get(ref)
    if found is not None:
        return found
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import module {module_name!r} for tool {ref!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{where}: module {module_name!r} has no {attr!r} (tool {ref!r})")
    item = as_tool(fn, where)
    if not isinstance(item, FunctionTool):
        raise ConfigError(f"{where}: {ref!r} is not a function")
    _imported[ref] = item
    return item


def toolset(toolsets: Mapping[str, Sequence[str]], name: str) -> tuple[FunctionTool, ...]:
    """The tools of the toolset ``name``; an unknown name lists the ones that exist."""
    refs = toolsets.get(name)
    if refs is None:
        known = ", ".join(sorted(toolsets)) or "none: add a toolsets: section to the YAML"
        raise InvalidRequestError(
            f"there is no toolset {name!r}{did_you_mean(name, toolsets)} (toolsets: {known})",
            parameter="toolset",
        )
    return tuple(import_tool(ref, f"toolsets.{name}[{i}]") for i, ref in enumerate(refs))


def gather_tools(
    tools: object,
    toolset_name: str | None,
    toolsets: Mapping[str, Sequence[str]],
    role_toolset: str | None = None,
) -> tuple[AnyTool, ...]:
    """What a call offers: ``tools`` (functions, tools, OpenAI JSON, or toolset names) and the
    toolset ``toolset_name``; neither given: the role's toolset (None: no tools)."""
    out: list[AnyTool] = []
    if tools is not None:
        if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
            items: list[object] = [tools]
        else:
            items = list(tools)
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.extend(toolset(toolsets, item))
            else:
                out.append(as_tool(item, f"tools[{i}]"))
    if toolset_name is not None:
        out.extend(toolset(toolsets, toolset_name))
    if tools is None and toolset_name is None and role_toolset is not None:
        out.extend(toolset(toolsets, role_toolset))
    unique: dict[int, AnyTool] = {}
    for t in out:
        unique.setdefault(id(t), t)  # a tool in a toolset and in tools= is offered once
    return tuple(unique.values())


TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")
"""Names in a call's params that are no generation params but the tool offer (OpenAI's)."""


def lift_tool_params(params: object) -> tuple[object, dict[str, object]]:
    """``params`` without OpenAI's ``tools`` / ``tool_choice`` / ``parallel_tool_calls``, and those."""
    if not isinstance(params, Mapping) or not any(k in params for k in TOOL_PARAMS):
        return params, {}
    rest = {k: v for k, v in params.items() if k not in TOOL_PARAMS}
    return rest, {k: params[k] for k in TOOL_PARAMS if k in params}


def make_offer(
    toolsets: Mapping[str, Sequence[str]],
    role_toolset: str | None,
    *,
    tools: object = None,
    toolset: str | None = None,
    tool_choice: object = None,
    parallel_tool_calls: object = None,
) -> tuple[ToolOffer, tuple[AnyTool, ...]]:
    """A call's `ToolOffer` (the schemas sent) and its tools (what `delegate` runs)."""
    found = gather_tools(tools, toolset, toolsets, role_toolset)
    sent = schemas(found)
    choice = check_tool_choice(tool_choice, sent)
    if choice is not None and choice != "none" and not sent:
        raise InvalidRequestError(
            f"tool_choice is {choice!r} but the call offers no tools: pass tools= or toolset=",
            parameter="tool_choice",
        )
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidRequestError(
            "parallel_tool_calls must be true or false", parameter="parallel_tool_calls"
        )
    return ToolOffer(sent, choice, parallel_tool_calls), found
