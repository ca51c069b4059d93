"""Every string reachable from an object: to prove a secret is nowhere in what orchlab hands back.

`reachable_strings(obj)` walks an object graph, depth-bounded and cycle-safe, and yields every string
it meets: exception messages, ``str()`` and ``repr()`` of exceptions, ``args``, ``__cause__``,
``__context__``, ``__notes__``, exception groups' ``exceptions``, every ``__dict__`` and
``__slots__`` value, mapping keys and values, sequence and set items, ``bytes`` (decoded), and the
attributes HTTP libraries expose as properties (``request``, ``response``, ``headers``, ``body``,
``content``, ``text``, ``url``, ``extensions``). Modules, classes, functions, frames and tracebacks
are not entered: a traceback's frames hold the SDK client (and so the key) of any failed call,
and printing one shows source lines, not values.

Example::

    from tests.secret_walk import reachable_strings

    with pytest.raises(orchlab.ProviderError) as info:
        client.run("llm.x", messages)
    assert not [s for s in reachable_strings(info.value) if KEY in s]
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import Any

# Properties (not in __dict__) that HTTP libraries and SDK exceptions use for what they carry.
_PROPERTIES = ("request", "response", "headers", "body", "content", "text", "url", "extensions", "message")
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.TracebackType,
    types.CodeType,
)


def reachable_strings(obj: Any, *, max_depth: int = 12) -> Iterator[str]:
    """Every string reachable from ``obj`` (each object visited once, ``max_depth`` levels deep)."""
    seen: set[int] = set()
    yield from _walk(obj, 0, max_depth, seen)


def _walk(obj: Any, depth: int, max_depth: int, seen: set[int]) -> Iterator[str]:
    if obj is None or isinstance(obj, bool | int | float | complex):
        return
    if isinstance(obj, str):
        yield obj
        return
    if isinstance(obj, bytes | bytearray | memoryview):
        yield bytes(obj).decode("utf-8", errors="replace")
        return
    if depth > max_depth or id(obj) in seen or isinstance(obj, _OPAQUE):
        return
    seen.add(id(obj))
    nxt = depth + 1
    if isinstance(obj, BaseException):
        for text in (_safe(str, obj), _safe(repr, obj)):
            if text is not None:
                yield text
        for part in (obj.args, obj.__cause__, obj.__context__, getattr(obj, "__notes__", None)):
            yield from _walk(part, nxt, max_depth, seen)
        if isinstance(obj, BaseExceptionGroup):
            yield from _walk(obj.exceptions, nxt, max_depth, seen)
    if isinstance(obj, Mapping):
        for key, value in list(_safe(lambda m: list(m.items()), obj) or ()):
            yield from _walk(key, nxt, max_depth, seen)
            yield from _walk(value, nxt, max_depth, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in list(obj):
            yield from _walk(item, nxt, max_depth, seen)
    else:
        items = getattr(type(obj), "items", None)  # headers classes that are not Mappings
        if callable(items):
            for pair in _safe(lambda o: list(o.items()), obj) or ():
                yield from _walk(pair, nxt, max_depth, seen)
    for value in _attributes(obj):
        yield from _walk(value, nxt, max_depth, seen)


def _attributes(obj: Any) -> Iterator[Any]:
    values = getattr(obj, "__dict__", None)
    if isinstance(values, Mapping):
        yield from list(values.values())
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                value = _safe(lambda o, s=slot: getattr(o, s), obj)
                if value is not None:
                    yield value
    for name in _PROPERTIES:
        if isinstance(getattr(type(obj), name, None), property | types.GetSetDescriptorType):
            value = _safe(lambda o, n=name: getattr(o, n), obj)
            if value is not None:
                yield value


def _safe(fn: Any, obj: Any) -> Any:
    """``fn(obj)``, or None when it raises (an unread body, a property with nothing behind it)."""
    try:
        return fn(obj)
    except Exception:
        return None
