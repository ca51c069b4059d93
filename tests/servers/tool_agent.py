"""A scripted tool-using "model" that every loopback server plays when a request offers the tools
``get_weather`` and ``add`` (the delegate task of issue 17, the same on every wire format).

Its moves depend only on the tool results the request carries back (each server reads them from
its own wire format), so a final answer that names the right numbers proves that the calls and
their results made the round trip:

1. no results yet: call ``get_weather`` twice at once (Paris, Oslo);
2. two weather results: call ``add`` with the two temperatures;
3. the sum is back: answer in text.
"""

from __future__ import annotations

import json
from typing import Any

TOOLS = ("get_weather", "add")
TEMPS = {"Paris": 21, "Oslo": 14}
FINAL = "Paris is 21 C and Oslo 14 C; together 35."
"""The final answer the task should end with (given the test's tools return TEMPS)."""


def offers_tools(names: list[str]) -> bool:
    return all(name in names for name in TOOLS)


def next_move(results: list[str]) -> list[tuple[str, dict[str, Any]]] | str:
    """The calls to make next (``[(name, arguments)]``), or the final text."""
    weather: dict[str, Any] = {}
    total = None
    for content in results:
        try:
            value = json.loads(content)
        except ValueError:
            continue
        if isinstance(value, dict) and "city" in value:
            weather[value["city"]] = value["temp_c"]
        elif isinstance(value, int):
            total = value
    if not weather:
        return [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    if total is None:
        return [("add", {"a": weather.get("Paris"), "b": weather.get("Oslo")})]
    return f"Paris is {weather['Paris']} C and Oslo {weather['Oslo']} C; together {total}."
