"""``{{ expression }}`` in a cell, filled from the notebook's namespace with Jinja2.

Only Jinja's own markers are special: ``{{ ... }}`` and ``{% ... %}``. Single braces (code,
JSON, ``str.format`` templates) are sent as they are, and a prompt without ``{{``/``{%`` never
touches Jinja at all. ``{# ... #}`` is *not* a comment here (``{#`` occurs in code).

For example:

    >>> interpolate('Summarise {{ df.shape }} and return {"rows": n}', {"df": df})
    'Summarise (3, 2) and return {"rows": n}'
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment


class InterpolationError(ValueError):
    """A ``{{ ... }}`` could not be filled (unknown name, an error in the expression, bad syntax)."""


@lru_cache(maxsize=1)
def _environment() -> Environment:
    from jinja2 import Environment, StrictUndefined

    return Environment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        # Comments are switched off: a '{#' in code must stay text.
        comment_start_string="{#orchlab-no-comments#",
        comment_end_string="#orchlab-no-comments#}",
    )


def needs_interpolation(text: str) -> bool:
    return "{{" in text or "{%" in text


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """``text`` with every ``{{ expr }}`` evaluated against ``namespace`` (the user's variables)."""
    if not needs_interpolation(text):
        return text
    from jinja2 import TemplateSyntaxError, UndefinedError

    try:
        template = _environment().from_string(text)
    except TemplateSyntaxError as exc:
        raise InterpolationError(
            f"line {exc.lineno} of the cell: {(exc.message or '').rstrip('.')}. To send '{{{{' or "
            "'{%' literally, wrap that part in {% raw %}...{% endraw %}"
        ) from None
    try:
        return template.render(dict(namespace))
    except UndefinedError as exc:
        message = exc.message or "undefined"
        if message.endswith("is undefined"):
            message += " in the notebook: define it first, or wrap literal braces in {% raw %}...{% endraw %}"
        raise InterpolationError(f"{{{{ ... }}}}: {message}") from None
    except Exception as exc:
        raise InterpolationError(f"a {{{{ ... }}}} expression raised {type(exc).__name__}: {exc}") from exc
