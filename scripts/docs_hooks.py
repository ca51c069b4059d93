"""mkdocs hook: fills the generated reference pages at build time (``hooks:`` in mkdocs.yml).

A page holds a marker comment on its own line; the hook replaces it with Markdown built from the
code, so nothing generated is committed and it cannot go stale:

- ``<!-- generated: config-reference -->``: every key of ``llm_orchestrator.yaml``, from the
  pydantic models in `orchlab.config.schema` (key path, type, default, description);
- ``<!-- generated: error-tree -->``: the error tree of `orchlab.errors`, each class with its
  docstring and, where the gateway answers it, the HTTP status from `orchlab.serve.errors`;
- ``<!-- generated: api-orchlab -->``: a mkdocstrings block listing exactly ``orchlab.__all__``.

It imports only orchlab's config schema and error modules: no network, no key, no model.
``tests/test_docs_build.py`` checks that every key and every error class is on the pages.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)


def _use_checkout() -> None:
    """Document the checkout being built, whatever orchlab the interpreter would import otherwise
    (an editable install of another checkout). Done per event: mkdocs restores ``sys.path`` after
    it has imported a hook module."""
    if sys.path[:1] != [_ROOT]:
        sys.path.insert(0, _ROOT)
    loaded = sys.modules.get("orchlab")
    if loaded is not None and not str(loaded.__file__).startswith(_ROOT):
        raise RuntimeError(f"orchlab was imported from {loaded.__file__}, not from the checkout {_ROOT}")


CONFIG_MARKER = "<!-- generated: config-reference -->"
ERRORS_MARKER = "<!-- generated: error-tree -->"
API_MARKER = "<!-- generated: api-orchlab -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CONFIG_MARKER in markdown or ERRORS_MARKER in markdown or API_MARKER in markdown:
        _use_checkout()
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if ERRORS_MARKER in markdown:
        markdown = markdown.replace(ERRORS_MARKER, error_tree())
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, api_members())
    return markdown


def api_members() -> str:
    """A mkdocstrings block for `orchlab` with exactly the names of ``orchlab.__all__``."""
    import orchlab

    names = "\n".join(f"        - {name}" for name in orchlab.__all__)
    return (
        "::: orchlab\n    options:\n      show_root_heading: false\n      show_root_toc_entry: false\n"
        f"      heading_level: 3\n      members:\n{names}\n"
    )


# --- the configuration reference -----------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One documented key: its full path (``roles.<role>.params.temperature``) and what it takes."""

    path: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    """One pydantic model, documented once, under the first key path that reaches it."""

    path: str
    anchor: str
    doc: str
    keys: tuple[Key, ...]
    variant: str = ""
    """The model's name, when two models share a path (a candidate: a target or a logic)."""


def _anchor(path: str) -> str:
    return "cfg-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "top")


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    text = inspect.cleandoc(doc).split("\n\n")[0]
    return " ".join(text.split())


def _doc(doc: str | None) -> str:
    """A model docstring as Markdown: reST's ``x`` is Markdown's `x`; an ``Example::`` block is a
    fenced YAML block."""
    if not doc:
        return ""
    text = inspect.cleandoc(doc).replace("``", "`")
    return text


def _is_model(tp: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """``Annotated[T, ...]`` -> (T, metadata), recursively."""
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp, meta = args[0], meta + list(args[1:])
    return tp, meta


def _constraints(meta: list[Any]) -> str:
    import annotated_types as at

    out = []
    for m in meta:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            cls = {"ge": at.Ge, "gt": at.Gt, "le": at.Le, "lt": at.Lt}[name]
            if isinstance(m, cls):
                out.append(f"{sign} {getattr(m, name)}")
        if isinstance(m, at.MinLen) and m.min_length:
            out.append(f"at least {m.min_length}")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"matches `{pattern}`")
    return ", ".join(out)


class _Types:
    """Renders annotations; collects the models it meets (each gets its own section)."""

    def __init__(self, sections: dict[type, str]) -> None:
        self.sections = sections  # model -> anchor, filled before rendering

    def render(self, tp: Any, field_meta: list[Any] | None = None) -> str:
        tp, meta = _unwrap(tp)
        meta = [*(field_meta or ()), *meta]  # a field's own Annotated metadata lives on the field
        text = self._render(tp, meta)
        extra = _constraints(meta)
        return f"{text} ({extra})" if extra else text

    def _render(self, tp: Any, meta: list[Any]) -> str:
        from orchlab.config import schema

        if tp is schema.Target or any(getattr(m, "func", None) is schema._check_target for m in meta):
            return "`provider:model`"
        if any(getattr(m, "func", None) is schema._logic_id for m in meta):
            return "strategy id"
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            return " \\| ".join(f"`{a}`" for a in args)
        if origin in (typing.Union, types.UnionType):
            parts = [self.render(a) for a in args if a is not type(None)]
            return " \\| ".join(parts) + (" \\| `null`" if type(None) in args else "")
        if origin is list:
            return f"list of {self.render(args[0])}"
        if origin is dict:
            return f"map of {self.render(args[0])} → {self.render(args[1])}"
        if _is_model(tp):
            anchor = self.sections.get(tp)
            return f"[{tp.__name__}](#{anchor})" if anchor else tp.__name__
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in tp)
        if tp is Any:
            return "any"
        return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if _is_model(type(value)):
        return "(see its keys)"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _children(tp: Any) -> Iterator[tuple[str, type]]:
    """(path suffix, model) for every model reachable in one step through ``tp``'s containers."""
    tp, _ = _unwrap(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_model(tp):
        yield "", tp
    elif origin in (typing.Union, types.UnionType):
        for a in args:
            yield from _children(a)
    elif origin is list:
        for suffix, model in _children(args[0]):
            yield "[]" + suffix, model
    elif origin is dict:
        key = _key_placeholder(args[0])
        for suffix, model in _children(args[1]):
            yield f".<{key}>" + suffix, model


def _key_placeholder(tp: Any) -> str:
    tp, meta = _unwrap(tp)
    from orchlab.config import schema

    if any(getattr(m, "func", None) is schema._check_target for m in meta):
        return "provider:model"
    return "name"


# the placeholder of the map each top-level key holds (``providers.<provider>``, ``roles.<role>``)
_PLACEHOLDERS = {
    "providers": "provider",
    "roles": "role",
    "envs": "env",
    "models": "provider:model",
    "toolsets": "toolset",
    "per_role_usd": "role",
    "aliases": "alias",
    "routes": "task type",
}


def config_sections() -> list[Section]:
    """Every model of the schema, breadth first from `OrchestratorConfig`, each once."""
    from orchlab.config.schema import OrchestratorConfig

    order: list[tuple[str, type]] = [("", OrchestratorConfig)]
    seen: dict[type, str] = {OrchestratorConfig: ""}
    i = 0
    while i < len(order):
        path, model = order[i]
        i += 1
        model.model_rebuild()  # resolves forward references (a Literal alias defined further down)
        for name, field in model.model_fields.items():
            for suffix, child in _children(field.annotation):
                suffix = re.sub(r"<name>", f"<{_PLACEHOLDERS.get(name, 'name')}>", suffix)
                if child not in seen:
                    child_path = f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
                    seen[child] = child_path
                    order.append((child_path, child))
    paths = [path for path, _ in order]
    anchors = {
        model: _anchor(path if paths.count(path) == 1 else f"{path}-{model.__name__}")
        for path, model in order
    }
    render = _Types(anchors)
    sections = []
    for path, model in order:
        keys = []
        for name, field in model.model_fields.items():
            key_path = f"{path}.{name}" if path else name
            description = field.description or ""
            if not description:
                models = [m for _, m in _children(field.annotation)]
                if models:
                    description = _first_paragraph(models[0].__doc__)
            description = description.replace("``", "`")
            kind = render.render(field.annotation, list(field.metadata))
            keys.append(Key(key_path, kind, _default(field), description))
        variant = model.__name__ if paths.count(path) > 1 else ""
        sections.append(Section(path, anchors[model], _doc(model.__doc__), tuple(keys), variant))
    return sections


def _cell(text: str) -> str:
    """One table cell: one line, and a ``|`` that does not end the cell."""
    return " ".join(re.sub(r"(?<!\\)\|", r"\\|", text).split())


def config_reference() -> str:
    out = []
    for section in config_sections():
        title = f"`{section.path}`" if section.path else "Top level"
        if section.variant:
            title += f" ({section.variant})"
        out.append(f"## {title} {{#{section.anchor}}}\n")
        if section.doc and section.path:
            out.append(_markdown_doc(section.doc) + "\n")
        out.append("| key | type | default | description |")
        out.append("| --- | --- | --- | --- |")
        for key in section.keys:
            out.append(
                f"| `{key.path}` | {_cell(key.type)} | {_cell(key.default)} | {_cell(key.description)} |"
            )
        out.append("")
    return "\n".join(out)


def _markdown_doc(doc: str) -> str:
    """``Example::`` + an indented block -> a paragraph and a fenced block."""
    lines = doc.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            out += ["", "```yaml", *[b for b in "\n".join(block).strip("\n").split("\n")], "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


# --- the error reference -------------------------------------------------------------------------


def error_classes() -> list[type[BaseException]]:
    """Every exception class `orchlab.errors` defines (the warning and `ScrubbedCause` included)."""
    from orchlab import errors

    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]


def http_answer(cls: type[BaseException]) -> str | None:
    """What the gateway (``orchlab serve``) answers for an error of this class: status, type, code.

    Read from `orchlab.serve.errors.from_exception` (which imports no web framework), on an
    instance made without its constructor (only the class decides the answer)."""
    from orchlab import errors
    from orchlab.serve import errors as http

    if not issubclass(cls, errors.OrchlabError):
        return None
    if issubclass(cls, errors.AllAttemptsFailedError):
        return "the attempts' common status when they all agree (all rate-limited: 429), else 502"
    # a subclass (isinstance still holds) whose message and missing attributes are empty
    probe = type(cls.__name__, (cls,), {"__str__": lambda self: "", "__getattr__": lambda self, name: None})
    exc = probe.__new__(probe)
    answer = http.from_exception(exc, "REQUEST-ID")
    code = f" `{answer.code}`" if answer.code else ""
    return f"HTTP {answer.status}{code}"


def error_tree() -> str:
    from orchlab import errors

    classes = error_classes()
    out: list[str] = []

    def walk(cls: type[BaseException], depth: int) -> None:
        doc = _first_paragraph(cls.__doc__).replace("``", "`") or "(no docstring)"
        status = http_answer(cls)
        gateway = f" *Gateway: {status}.*" if status else ""
        out.append(f"{'    ' * depth}- **`{cls.__name__}`**: {doc}{gateway}")
        for sub in cls.__subclasses__():
            if sub in classes:
                walk(sub, depth + 1)

    walk(errors.OrchlabError, 0)
    out.append("")
    out.append("Not errors, but in the same module:\n")
    for cls in classes:
        if not issubclass(cls, errors.OrchlabError):
            doc = _first_paragraph(cls.__doc__).replace("``", "`")
            out.append(f"- **`{cls.__name__}`** ({cls.__bases__[0].__name__}): {doc}")
    return "\n".join(out) + "\n"
