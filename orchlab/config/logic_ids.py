"""The logic ids a config may name in ``strategy:``: the built-in ones (`Strategy` values), the ones
added in this process (`orchlab.strategies.register_logic` adds its id here), and the ones installed
as plugins (names of the ``orchlab.logics`` entry points, read only when a config names an id that
is not built in). Names only: the logic classes live in `orchlab.strategies.registry`, above this
layer, which the config layer does not import.
"""

from __future__ import annotations

import difflib
import threading
from typing import Any

GROUP = "orchlab.logics"
_lock = threading.Lock()
_added: set[str] = set()
_entry_points: tuple[Any, ...] | None = None


def add(name: str) -> None:
    """A logic id added in this process (by ``register_logic``)."""
    with _lock:
        _added.add(name)


def discard(name: str) -> None:
    with _lock:
        _added.discard(name)


def entry_points(*, refresh: bool = False) -> tuple[Any, ...]:
    """The ``orchlab.logics`` entry points, read once (again with ``refresh``); the logic registry
    reads them through here too, so a process reads them once."""
    global _entry_points
    with _lock:
        if _entry_points is None or refresh:
            from importlib.metadata import entry_points as read

            _entry_points = tuple(read(group=GROUP))
        return _entry_points


def installed() -> set[str]:
    """The ids of the installed ``orchlab.logics`` entry points."""
    return {ep.name for ep in entry_points()}


def check(value: str, builtins: list[str]) -> None:
    """Refuse an id that is neither built in, added nor installed, with "did you mean"."""
    if value in builtins or value in _added:
        return
    others = sorted((_added | installed()) - set(builtins))
    if value in others:
        return
    close = difflib.get_close_matches(value, [*builtins, *others], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown logic {value!r}{hint} (built-in: {', '.join(builtins)}; "
        f"installed: {', '.join(others) or 'none'})"
    )
