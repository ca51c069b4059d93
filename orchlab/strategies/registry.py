"""The one place logics are registered: the built-ins (one `Logic` class per `Strategy` member),
then logics added with `register_logic`, then installed plugins (the entry points of the group
``orchlab.logics``: ``[project.entry-points."orchlab.logics"] shortest = "my_pkg:Shortest"``, read
once, the first time an id is not found among the first two, never at ``import orchlab``).

A logic id is what YAML ``strategy:``, a nested ``{strategy: ...}``, a URN and
``complete(strategy=...)`` name: a `Strategy` value or an added/installed id. ``logic_for(plan)``
builds the logic that answers ``plan``; nothing else picks a logic by name. The ids and the
classes added or loaded are kept in `orchlab.config.logic_ids.LOGIC_IDS` (an
`orchlab.plugins.PluginRegistry`), so the config layer checks an id without importing a logic.
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeGuard, cast

from orchlab.config.logic_ids import GROUP, LOGIC_IDS, unknown
from orchlab.config.schema import Strategy
from orchlab.errors import InvalidRequestError, PluginError
from orchlab.plugins import Plugin
from orchlab.strategies.auto import Auto
from orchlab.strategies.base import Answering, EnsembleMode, Nested
from orchlab.strategies.cascade import Cascade
from orchlab.strategies.ensemble import Ensemble
from orchlab.strategies.fallback import Fallback
from orchlab.strategies.logic import Logic
from orchlab.strategies.plan import Plan, split_options
from orchlab.strategies.race import Race
from orchlab.strategies.select import Select
from orchlab.strategies.selection import CloudFirst, CloudOnly, LocalFirst, LocalOnly
from orchlab.strategies.single import Single

ENTRY_POINT_GROUP = GROUP

LOGICS: Mapping[str, type[Logic]] = MappingProxyType(
    {
        cls.strategy: cls
        for cls in (
            Single,
            Fallback,
            LocalOnly,
            CloudOnly,
            LocalFirst,
            CloudFirst,
            Race,
            Cascade,
            Ensemble,
            Auto,
            Select,
        )
    }
)
"""The built-in logics, by their `Strategy` (a `Strategy` is its value: ``LOGICS["parallel"]``)."""

_ID = re.compile(r"[a-z_][a-z0-9_.-]*")


def register_logic(name: str, cls: type[Logic]) -> None:
    """Add (or replace) a logic in this process under the id ``name`` (lower case: letters, digits,
    ``_ . -``). A built-in id cannot be taken; an installed plugin's can."""
    if not isinstance(name, str) or _ID.fullmatch(name) is None:
        raise PluginError(
            f"register_logic({name!r}, ...): a logic id is a lower-case name such as 'shortest' "
            "(letters, digits, _ . -)",
            kind=str(name),
        )
    LOGIC_IDS.refuse_builtin(name, f"register_logic({name!r}, ...)")
    _check(cls, f"register_logic({name!r}, ...)", name)
    _name(cls, name)
    LOGIC_IDS.add(name, cls)


def unregister_logic(name: str) -> None:
    """Remove a logic added with `register_logic` (nothing happens when there is none)."""
    LOGIC_IDS.remove(name)


def installed_logics(*, refresh: bool = False) -> dict[str, Plugin]:
    """The logic plugins installed in this environment, by id. Read once; ``refresh=True`` reads
    them again."""
    return dict(LOGIC_IDS.installed(refresh=refresh))


def known_logics() -> list[str]:
    """Every logic id: the built-ins (in `Strategy` order), then the added and installed ones, sorted."""
    return LOGIC_IDS.known()


def logic_id(value: object, *, aliases: Mapping[str, Strategy] | None = None) -> Strategy | str:
    """``value`` as a logic id: a `Strategy` for a built-in, else an added or installed id.
    An unknown id raises `InvalidRequestError` with "did you mean" and the known ids."""
    if isinstance(value, Strategy):
        return value
    text = str(value)
    if aliases and text in aliases:
        return aliases[text]
    if text in LOGICS:
        return Strategy(text)
    if LOGIC_IDS.is_known(text):
        return text
    raise InvalidRequestError(unknown(text, aliases=tuple(aliases or ())), parameter="strategy")


def logic_class(strategy: Strategy | str) -> type[Logic]:
    """The logic registered for ``strategy`` (a `Strategy`, its value, or an added/installed id)."""
    name = logic_id(strategy)
    builtin = LOGICS.get(name)
    if builtin is not None:
        return builtin
    cls = LOGIC_IDS.added.get(name) or LOGIC_IDS.loaded(name)
    if cls is not None:
        return cast("type[Logic]", cls)
    LOGIC_IDS.check_clash(name, f"logic {name!r}")
    plugin = LOGIC_IDS.installed()[name]
    where = f"logic {name!r} ({plugin.origin})"
    module_name, _, attr = plugin.target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise PluginError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}", kind=name) from exc
    _check(obj, where, name)
    assert isinstance(obj, type)
    _name(obj, name)
    return cast("type[Logic]", LOGIC_IDS.remember(name, obj))


def _check(cls: object, where: str, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Logic)):
        what = f"the class {cls.__qualname__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise PluginError(
            f"{where}: names {what}, which is not a subclass of orchlab.strategies.Logic", kind=name
        )


def _name(cls: type[Logic], name: str) -> None:
    """A plugin class that leaves ``strategy`` unset gets its id there (its errors name it)."""
    if getattr(cls, "strategy", None) is None:
        cls.strategy = name


def logic_for(plan: Plan) -> Logic:
    """The logic that answers ``plan``, built from it: the call's own logic object when it passed
    one (a class is built from the plan; an instance answers as a shallow copy holding the plan, so
    the instance itself is never changed and may answer concurrent calls), else the registered one."""
    given = plan.logic
    if isinstance(given, Logic):
        logic = copy.copy(given)
        logic.plan = plan
        return logic
    if given is not None:
        return given(plan)
    return logic_class(plan.strategy)(plan)


def is_logic_object(value: object) -> TypeGuard[Logic | type[Logic]]:
    """Whether ``value`` is a `Logic` subclass or instance (a logic a call passes itself, unregistered)."""
    return isinstance(value, Logic) or (isinstance(value, type) and issubclass(value, Logic))


def logic_object_name(value: Logic | type[Logic]) -> str:
    """What a logic object is called in a trail, a trace and an error: the ``strategy`` its own
    class sets, else the class name (a subclass of a built-in is not called by the built-in's id)."""
    cls = value if isinstance(value, type) else type(value)
    named = vars(cls).get("strategy")
    return str(named) if named else cls.__name__


def nested_logic(cand: Nested, answering: Answering) -> Logic:
    """The logic of a candidate that is itself a logic (its options parsed by its ``from_params``)."""
    cls = logic_class(cand.strategy)
    options = cls.from_params(dict(cand.options))
    if "mode" in options:
        options["mode"] = EnsembleMode(options["mode"])
    known, extra = split_options(options)
    plan = Plan(
        role=cand.role,
        spec=None,
        strategy=cand.strategy,
        candidates=list(cand.candidates),
        base_params=cand.params,
        extra=extra,
        **known,
    )
    return cls(plan)
