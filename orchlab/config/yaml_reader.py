"""PyYAML's reading of config text: its events into plain data, a line for every key path, and the
line of every string value that holds a ``$`` (`orchlab.config.document` expands those). The rules
it enforces are listed in `orchlab.config.document`; this module is imported only when a text was
not read before (`orchlab.yaml_cache`), so that a later process never imports PyYAML.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from orchlab.config.document import MAX_ALIAS_NODES, MAX_DEPTH, Path, Reading, key_path
from orchlab.errors import ConfigFileError

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _STR = _TAG + "map", _TAG + "seq", _TAG + "str"
_MERGE, _VALUE = _TAG + "merge", _TAG + "value"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "binary", "timestamp"))


def read(text: str, source: str) -> Reading:
    """``text`` (one YAML document) as plain data, the line of each key path, and the line of each
    string value holding a ``$`` (not expanded here); a `ConfigFileError` for what the rules refuse."""
    root = _compose(text, source)
    reader = _Reader(source)
    data = None if root is None else reader.value(root, ())
    return data, reader.lines, reader.dollars


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _fail(source: str, mark: Any, where: str, problem: str) -> NoReturn:
    line, column = mark.line + 1, mark.column + 1
    raise ConfigFileError(
        f"{source}:{line}:{column}: {where}: {problem}",
        path=source,
        line=line,
        column=column,
        key_path=where,
    )


# --- events -> nodes, measuring aliases and depth as they come ------------------------------


class _Open:
    """A collection being read: its node, anchor, size with aliases expanded, and height."""

    __slots__ = ("anchor", "height", "key", "node", "size")

    def __init__(self, node: yaml.CollectionNode, anchor: str | None) -> None:
        self.node = node
        self.anchor = anchor
        self.size = 1
        self.height = 1
        self.key: yaml.Node | None = None  # in a mapping: the key whose value comes next


def _where(stack: Sequence[_Open]) -> str:
    parts: list[Any] = []
    for frame in stack:
        if isinstance(frame.node, yaml.SequenceNode):
            parts.append(len(frame.node.value))
        elif frame.key is not None:
            parts.append(frame.key.value if isinstance(frame.key, yaml.ScalarNode) else "?")
        else:
            break
    return key_path(parts)


def _compose(text: str, source: str, loader: Any = None) -> yaml.Node | None:
    """The node graph of ``text``: one pass over the parser's events (the C parser when PyYAML has
    it), never recursive, so depth and alias expansion are bounded before anything is built."""
    loader = loader or _LOADER
    resolver = Resolver()
    anchors: dict[str, yaml.Node] = {}
    measured: dict[int, tuple[int, int]] = {}  # id(collection) -> (size with aliases expanded, height)
    stack: list[_Open] = []
    root: yaml.Node | None = None
    documents = 0
    added = 0

    def attach(node: yaml.Node, size: int, height: int) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        frame = stack[-1]
        frame.size += size
        frame.height = max(frame.height, height + 1)
        if isinstance(frame.node, yaml.SequenceNode):
            frame.node.value.append(node)
        elif frame.key is None:
            frame.key = node
        else:
            frame.node.value.append((frame.key, node))
            frame.key = None

    def check_anchor(anchor: str | None, mark: Any) -> None:
        if anchor is not None and (anchor in anchors or any(f.anchor == anchor for f in stack)):
            _fail(source, mark, _where(stack), f"anchor &{anchor} is defined twice; rename one")

    events: Any = yaml.parse(text, Loader=loader)  # a generator: closed below
    try:
        for event in events:
            start: Any = event.start_mark  # libyaml's marks are not the type yaml.nodes declares
            if isinstance(event, yaml.ScalarEvent):
                check_anchor(event.anchor, event.start_mark)
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
                node: yaml.Node = yaml.ScalarNode(tag, event.value, start, start, style=event.style)
                if event.anchor is not None:
                    anchors[event.anchor] = node
                attach(node, 1, 0)
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= MAX_DEPTH:
                    _fail(source, event.start_mark, _where(stack), f"nested deeper than {MAX_DEPTH} levels")
                check_anchor(event.anchor, event.start_mark)
                kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolver.resolve(kind, None, event.implicit)
                collection = kind(tag, [], start, start, flow_style=event.flow_style)
                stack.append(_Open(collection, event.anchor))
            elif isinstance(event, yaml.CollectionEndEvent):
                frame = stack.pop()
                frame.node.end_mark = event.end_mark
                measured[id(frame.node)] = (frame.size, frame.height)
                if frame.anchor is not None:
                    anchors[frame.anchor] = frame.node
                attach(frame.node, frame.size, frame.height)
            elif isinstance(event, yaml.AliasEvent):
                target = anchors.get(event.anchor or "")
                if target is None:
                    inside = any(f.anchor == event.anchor for f in stack)
                    _fail(
                        source,
                        event.start_mark,
                        _where(stack),
                        f"alias *{event.anchor} is inside its own anchor (a structure that contains itself)"
                        if inside
                        else f"alias *{event.anchor} names no anchor defined above it",
                    )
                size, height = measured.get(id(target), (1, 0))
                added += size
                if added > MAX_ALIAS_NODES:
                    _fail(
                        source,
                        event.start_mark,
                        _where(stack),
                        f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (*{event.anchor} "
                        f"alone is {size:,}); write the values out or use fewer aliases",
                    )
                if len(stack) + height > MAX_DEPTH:
                    _fail(
                        source,
                        event.start_mark,
                        _where(stack),
                        f"alias *{event.anchor} nests the config more than {MAX_DEPTH} levels deep",
                    )
                attach(target, size, height)
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    _fail(
                        source,
                        event.start_mark,
                        "<top level>",
                        "a second YAML document ('---'); a config file holds one",
                    )
    except yaml.YAMLError as exc:
        if loader is not yaml.SafeLoader:
            # PyYAML's own parser says what it found ("but found '<stream end>'") and counts
            # positions in characters; libyaml does neither. On this error path only, let it raise.
            _compose(text, source, yaml.SafeLoader)
        raise _syntax_error(exc, text, source, _where(stack) if stack else None) from exc
    finally:
        events.close()
    return root


def _syntax_error(exc: yaml.YAMLError, text: str, source: str, where: str | None) -> ConfigFileError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        at = None if mark is None else (mark.line + 1, mark.column + 1)
    else:  # the reader: a character YAML does not allow
        position = getattr(exc, "position", None)
        problem = getattr(exc, "reason", None) or str(exc)
        char = getattr(exc, "character", None)
        problem += f" (#x{char:04x})" if isinstance(char, int) else ""
        at = None
        if isinstance(position, int):
            before = text[:position]
            at = (before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1)
    if at is None:
        return ConfigFileError(f"{source}: invalid YAML: {problem}", path=source)
    line, column = at
    where = None if where == "<top level>" else where
    inside = f" (in {where})" if where else ""
    if "${" in "".join(text.splitlines()[max(0, line - 2) : line]):  # '{' is YAML syntax in flow style
        inside += '; quote a ${VAR} value inside { } or [ ]: "${VAR}"'
    return ConfigFileError(
        f"{source}:{line}:{column}: invalid YAML: {problem}{inside}",
        path=source,
        line=line,
        column=column,
        key_path=where,
    )


# --- nodes -> plain data, with lines --------------------------------------------------------------


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = SafeConstructor()
        self.lines: dict[Path, int] = {(): 1}
        self.dollars: dict[Path, int] = {}

    def fail(self, node: yaml.Node, path: Path, problem: str) -> NoReturn:
        _fail(self.source, node.start_mark, key_path(path), problem)

    def value(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            self.check_tag(node, _SEQ, path)
            items = []
            for index, item in enumerate(node.value):
                sub = (*path, index)
                self.lines[sub] = item.start_mark.line + 1
                items.append(self.value(item, sub))
            return items
        assert isinstance(node, yaml.MappingNode)
        return self.mapping(node, path)

    def check_tag(self, node: yaml.Node, expected: str, path: Path) -> None:
        if node.tag != expected:
            kind = "list" if expected == _SEQ else "mapping"
            self.fail(node, path, f"the tag {_tag_name(node.tag)} cannot mark a {kind} in a config")

    def mapping(self, node: yaml.MappingNode, path: Path, skip: frozenset[Any] = frozenset()) -> dict:
        self.check_tag(node, _MAP, path)
        seen: dict[Any, yaml.Node] = {}
        merges: list[yaml.Node] = []
        entries: list[tuple[Any, yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "a key must be a plain value, not a list or a mapping")
            key = "<<" if key_node.tag == _MERGE else self.scalar(key_node, path, is_key=True)
            first = seen.get(key)
            if first is not None:
                self.fail(
                    key_node,
                    (*path, key),
                    f"the key {key!r} appears twice in one mapping (lines {first.start_mark.line + 1} "
                    f"and {key_node.start_mark.line + 1}); keep one",
                )
            seen[key] = key_node
            if key_node.tag == _MERGE:
                merges.append(value_node)
            else:
                entries.append((key, key_node, value_node))
        out: dict[Any, Any] = {}
        taken = skip | {key for key, _, _ in entries} if merges else skip
        for merge in merges:  # one at most: a second '<<' is a duplicate key
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for merged in sources:  # the first one listed wins
                if not isinstance(merged, yaml.MappingNode):
                    self.fail(merge, path, "'<<' (merge) takes a mapping or a list of mappings")
                part = self.mapping(merged, path, taken)
                out.update(part)
                taken |= part.keys()
        for key, key_node, value_node in entries:
            if key in skip:
                continue
            sub = (*path, key)
            self.lines[sub] = key_node.start_mark.line + 1
            out[key] = self.value(value_node, sub)
        return out

    def scalar(self, node: yaml.ScalarNode, path: Path, *, is_key: bool = False) -> Any:
        tag = node.tag
        if tag in (_STR, _MERGE, _VALUE):
            text: str = node.value
            if not is_key and "$" in text:
                self.dollars[path] = node.start_mark.line + 1  # ${VAR}: expanded after reading
            return text
        if tag not in _SCALAR_TAGS:
            self.fail(
                node,
                path,
                f"the tag {_tag_name(tag)} is not allowed in a config (only YAML's own types: "
                "!!str, !!int, !!float, !!bool, !!null, !!binary, !!timestamp)",
            )
        try:
            return SafeConstructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, LookupError, TypeError, AttributeError, ArithmeticError, yaml.YAMLError):
            digits = sum(c.isdigit() for c in node.value)
            limit = sys.get_int_max_str_digits()
            if tag == _TAG + "int" and digits > limit:
                problem = f"an integer of {digits:,} digits; the most Python reads is {limit:,}"
            else:
                problem = f"{_short(node.value)!r} is not a valid {_tag_name(tag)}"
            self.fail(node, path, problem)
