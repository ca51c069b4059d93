"""The logic ids a config may name in ``strategy:``: the built-in ones (`Strategy` values), the ones
added in this process (`orchlab.strategies.register_logic`) and the ones installed as plugins
(the ``orchlab.logics`` entry points, read only when a config names an id that is not built in).
`LOGIC_IDS` holds them, with the classes added or loaded, as opaque values: the logic classes live
in `orchlab.strategies.registry`, above this layer, which the config layer does not import.
"""

from __future__ import annotations

import logging

from orchlab.config.schema import Strategy
from orchlab.plugins import PluginRegistry, did_you_mean

GROUP = "orchlab.logics"

LOGIC_IDS: PluginRegistry[type] = PluginRegistry(
    GROUP,
    [s.value for s in Strategy],
    noun="id",
    builtin_noun="logic",
    reserved=("race", "role"),  # a URN's alias of parallel, and its role form
    log=logging.getLogger("orchlab.strategies.registry"),  # where the logic registry's users look
)


def unknown(value: str, *, aliases: tuple[str, ...] = ()) -> str:
    """Why ``value`` is not a logic id: "did you mean" (``aliases`` among the choices), the
    built-in and the installed ids."""
    hint = did_you_mean(value, [*aliases, *LOGIC_IDS.known()])
    return (
        f"unknown logic {value!r}{hint} (built-in: {', '.join(LOGIC_IDS.builtins)}; "
        f"installed: {', '.join(LOGIC_IDS.known()[len(LOGIC_IDS.builtins) :]) or 'none'})"
    )


def check(value: str) -> None:
    """Refuse an id that is neither built in, added nor installed, with "did you mean"."""
    if not LOGIC_IDS.is_known(value):
        raise ValueError(unknown(value))
