"""Reading config YAML into plain data with a line for every key path, refusing what a config never
needs before it costs time or memory.

Each refusal is a `ConfigFileError` naming the file, the line and the key path:

- The file is UTF-8 text (a BOM is allowed) holding one YAML document.
- At most ``MAX_DEPTH`` (100) levels of nesting, counted through aliases and merges.
- Aliases add at most ``MAX_ALIAS_NODES`` (10,000) nodes in all. Each alias counts every node of
  what it stands for, the aliases inside that included, so the sum is exactly what expanding every
  alias would add to the file as written. It is counted while the file is read, in one pass, so a
  "billion laughs" file is refused at the alias that passes the bound. An alias inside its own
  anchor (a structure that contains itself) and an anchor defined twice are refused.
- A key appears once per mapping; both lines are named. Keys merged in with ``<<`` may be set
  again in the mapping: overriding them is what merging is for.
- Keys are plain values. Tags are YAML's own (``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null``, ``!!binary``, ``!!timestamp`` on values; ``!!seq``, ``!!map`` on collections); a
  value its tag cannot read (``!!float abc``, an integer of more than 4,300 digits) is refused.

String values then go through `orchlab.config.envvars` (``${VAR}``); what cannot be expanded is
collected in `Document.problems`.

PyYAML does the reading (`orchlab.config.yaml_reader`). ``read_document(..., cache=True)`` (a
config file: `orchlab.config.loader.load_config`) takes that reading from `orchlab.yaml_cache` when
the same text was read before, so that a later process never imports PyYAML; ``${VAR}`` values
are expanded on every read, from the environment of the moment.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchlab.config.envvars import ExpansionError, expand
from orchlab.errors import ConfigFileError

MAX_DEPTH = 100
MAX_ALIAS_NODES = 10_000

Path = tuple[Any, ...]
"""A key path into the data: mapping keys and list indexes."""

Reading = tuple[Any, dict[Path, int], dict[Path, int]]
"""What PyYAML read: the data (``${VAR}`` not expanded), the line of each key path, and the line of
each string value holding a ``$``."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong at a key path (``line`` is 1-based)."""

    key: str
    line: int | None
    message: str


@dataclass
class Document:
    """A config file's data, the line of each key path, and the values expanded from the environment."""

    data: Any
    lines: dict[Path, int] = field(repr=False)
    """key path -> line of its key (of the item, in a list)"""
    from_env: dict[Path, tuple[str, str]] = field(repr=False)
    """key path -> (the text in the file, the value it expanded to)"""
    problems: list[Problem] = field(default_factory=list)
    """``${VAR}`` references that could not be expanded"""
    _env_under: dict[Path, list[tuple[str, str]]] | None = field(default=None, repr=False)

    def locate(self, loc: Iterable[Any]) -> Path:
        """The deepest key path of the file along ``loc`` (a pydantic error location): parts the file
        does not have, such as the names of union members, are skipped: one lookup per part."""
        path: Path = ()
        for part in loc:
            for candidate in (part, str(part)) if isinstance(part, int) else (part,):
                if (*path, candidate) in self.lines:
                    path = (*path, candidate)
                    break
        return path

    def redact(self, text: str, path: Path = ()) -> str:
        """``text`` with every value expanded from the environment at or under ``path`` shown as the
        file writes it (``'${VAR}'``), never as its value."""
        if self._env_under is None:
            under: dict[Path, list[tuple[str, str]]] = defaultdict(list)
            for where, (written, value) in self.from_env.items():
                if value:
                    for depth in range(len(where) + 1):
                        under[where[:depth]].append((written, value))
            self._env_under = dict(under)
        for written, value in self._env_under.get(path, ()):
            text = text.replace(repr(value), repr(written))
        return text


def decode(raw: bytes, *, source: str) -> str:
    """The text of a config file; a file that is not UTF-8 is refused with the line of the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigFileError(
            f"{source}:{line}:{column}: the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "save it as UTF-8",
            path=source,
            line=line,
            column=column,
        ) from None


def read_document(
    text: str, *, source: str, environ: Mapping[str, str] | None = None, cache: bool = False
) -> Document:
    """Parse ``text`` (one YAML document) into a `Document`; see the module docstring for the rules.
    ``cache``: PyYAML's reading of a text read before comes from `orchlab.yaml_cache`, and a new
    one is kept there."""
    reading = _kept(text) if cache else None
    if reading is None:
        from orchlab.config.yaml_reader import read

        reading = read(text, source)
        if cache:
            _keep(text, reading)  # before expanding: the cache holds the file's ${VAR}, never values
    return _expanded(reading, os.environ if environ is None else environ)


def _expanded(reading: Reading, environ: Mapping[str, str]) -> Document:
    """The `Document` of a reading: each string value holding a ``$`` expanded (in place)."""
    data, lines, dollars = reading
    from_env: dict[Path, tuple[str, str]] = {}
    problems: list[Problem] = []
    for path, line in dollars.items():
        parent = _at(data, path[:-1])
        written = parent[path[-1]] if path else data
        try:
            value, names = expand(written, environ)
        except ExpansionError as exc:
            problems.append(Problem(key_path(path), line, str(exc)))
            continue
        if names:
            from_env[path] = (written, value)
        if path:
            parent[path[-1]] = value
        else:
            data = value
    return Document(data, lines, from_env, problems)


def _kept(text: str) -> Reading | None:
    from orchlab import yaml_cache

    kept: Any = yaml_cache.load("config", text)
    try:
        data = kept["data"]
        lines = {tuple(p): int(n) for p, n in kept["lines"] if isinstance(p, list)}
        dollars = {tuple(p): int(n) for p, n in kept["dollars"] if isinstance(p, list)}
        if all(isinstance(_at(data, path), str) for path in dollars):
            return data, lines, dollars
    except (KeyError, IndexError, TypeError, ValueError):  # none kept (None)
        pass
    return None  # or not what _keep writes: PyYAML reads the text


def _at(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _keep(text: str, reading: Reading) -> None:
    from orchlab import yaml_cache

    data, lines, dollars = reading
    paths = {"lines": lines, "dollars": dollars}
    kept = {name: [[list(p), n] for p, n in found.items()] for name, found in paths.items()}
    yaml_cache.save("config", text, {"data": data, **kept})


def key_path(parts: Sequence[Any]) -> str:
    """``('roles', 'r', 'fallbacks', 0)`` -> ``'roles.r.fallbacks[0]'``; long paths are cut short."""
    out = ""
    for n, part in enumerate(parts):
        if n == 8 and len(parts) > 10:
            return out + f"…({len(parts) - 8} more levels)"
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"
