"""The ``-f`` formats: how a cell's answer is shown (markdown, text, json, code, html).

`extract_code` and `extract_json` are usable on their own::

    >>> extract_json('Sure!\\n```json\\n{"a": 1}\\n```')
    {'a': 1}
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab import render

if TYPE_CHECKING:
    from orchlab.types import LLMResponse

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)


class AnswerFormatError(ValueError):
    """The answer is not in the asked format (``-f json`` on text that is not JSON)."""


def extract_code(text: str) -> tuple[str, str | None]:
    """``(code, language)``: the first fenced block (closed or cut off), else the whole text."""
    match = _FENCE.search(text)
    if match is None:
        return text.strip("\n"), None
    return match.group(2).rstrip(), match.group(1) or None


def extract_json(text: str) -> Any:
    """The JSON value in an answer: the whole text, a fenced block, or the first ``{...}``/``[...]``."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as first:
        error = first
    candidates = [m.group(2) for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    for i, ch in enumerate(stripped):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(stripped, i)
            except ValueError:
                continue
            return value
    preview = stripped if len(stripped) <= 80 else stripped[:77] + "..."
    raise AnswerFormatError(f"the answer is not JSON ({error.msg} at line {error.lineno}): {preview!r}")


@dataclass
class Answer:
    """A response shown in one ``-f`` format, with the footer. IPython displays it."""

    response: LLMResponse
    format: str = "markdown"

    def body(self) -> tuple[dict[str, Any], Any]:
        """``(data, value)``: the mime bundle, and the value the format extracts (code, JSON)."""
        r = self.response
        if self.format == "text":
            return {"text/plain": render.to_text(r)}, r.content
        if self.format == "code":
            code, lang = extract_code(r.content)
            fenced = f"```{lang or ''}\n{code}\n```"
            return {
                "text/markdown": render.to_markdown(r, fenced),
                "text/plain": render.to_text(r, code),
            }, code
        if self.format == "json":
            value = extract_json(r.content)
            pretty = render.pretty_json(value)
            return {
                "text/markdown": render.to_markdown(r, f"```json\n{pretty}\n```"),
                "text/plain": render.to_text(r, pretty),
            }, value
        if self.format == "html":
            return {"text/html": render.to_html(r, r.content), "text/plain": render.to_text(r)}, r.content
        return {"text/markdown": render.to_markdown(r), "text/plain": render.to_text(r)}, r.content

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        data, _ = self.body()
        return data, {"orchlab": render.metadata(self.response)}


def raw_answer(response: LLMResponse, problem: str) -> dict[str, Any]:
    """The answer as it came, for when the asked format failed (shown before the error)."""
    text = render.to_text(response)
    return {
        "text/plain": text,
        "text/html": f"<pre>{html.escape(response.content)}</pre>"
        f"<div style='opacity:.7;font-size:85%'>{html.escape(render.footer(response))}</div>"
        f"<div style='color:#b00'>{html.escape(problem)}</div>",
    }
