"""``${VAR}`` and ``${VAR:-default}`` in config values, expanded from the environment at load.

Rules:

- Only string values are expanded, never mapping keys. The result stays a string; typed fields
  convert it (``timeout_s: ${TIMEOUT:-30}`` is the number 30).
- ``${NAME}`` needs ``NAME`` set (to anything, the empty string included); ``${NAME:-default}``
  uses ``default`` when ``NAME`` is unset or empty. Defaults are literal text: no nesting.
- ``$${`` is a literal ``${``; a ``$`` not followed by ``{`` stays as it is.
- Anything else after ``${`` (an unclosed brace, ``${1X}``, ``${A-B}``) is an error, never sent on.
- ``ORCH_AUTH_*_API_KEY`` variables are refused: keys are read through ``auth_profile`` and held as
  secrets, while a config value shows in ``repr(config)``.

For example:

    providers:
      vllm: {api_base: "${VLLM_BASE:-http://localhost:8000/v1}"}
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_KEY_VARIABLE = re.compile(r"ORCH_AUTH_\w*_API_KEY")


class ExpansionError(ValueError):
    """A value's ``${...}`` cannot be expanded; the message says why (never a variable's value)."""


def expand(text: str, environ: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """``text`` with every reference replaced, and the variables it read (empty: nothing expanded).

    >>> expand("${HOST:-localhost}:$${PORT}", {})
    ('localhost:${PORT}', ('HOST',))
    """
    names: list[str] = []
    unset: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body, closed = match.group(1), match.group(2)
        parsed = _BODY.fullmatch(body) if closed else None
        if parsed is None:
            shown = match.group(0) if len(match.group(0)) <= 40 else match.group(0)[:40] + "…"
            raise ExpansionError(
                f"{shown!r} is not a variable reference: write ${{NAME}} or ${{NAME:-default}}, "
                "or $${ for a literal ${"
            )
        name, default = parsed.group(1), parsed.group(2)
        if _KEY_VARIABLE.fullmatch(name):
            raise ExpansionError(
                f"${{{name}}} is an API key variable: keys are read through auth_profile and kept "
                "secret, never expanded into the config (where repr(config) would show them)"
            )
        names.append(name)
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            unset.append(name)
            return ""
        return value

    out = _REFERENCE.sub(replace, text)
    if unset:
        listed = list(dict.fromkeys(unset))
        what = f"variable {listed[0]} is" if len(listed) == 1 else f"variables {', '.join(listed)} are"
        raise ExpansionError(
            f"environment {what} not set (set it, or give a default: ${{{listed[0]}:-default}})"
        )
    return out, tuple(dict.fromkeys(names))
