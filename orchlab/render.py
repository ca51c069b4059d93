"""How a response looks: a footer line, a metadata dict, Markdown and plain-text renderings.

`LLMResponse._repr_mimebundle_` delegates here, so a response reads well in a notebook (Markdown
with a footer, metadata for front ends) and in a terminal (plain text). Imports nothing heavy.

For example:

    >>> footer(response)
    'local · gemma-3-270m · 12 → 8 tokens · $0 · 0.41 s'
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchlab.types import LLMResponse

SEP = " · "


def format_cost(cost_usd: float | None, note: str | None = None) -> str:
    """``$0`` for free (local) calls, 2 significant decimals past the first digit otherwise."""
    if cost_usd is None:
        return "cost unknown" + (f" ({note})" if note else "")
    if cost_usd == 0:
        return "$0"
    if cost_usd >= 0.01:
        return f"${cost_usd:.4f}"
    return f"${cost_usd:.6f}" if cost_usd >= 1e-6 else f"${cost_usd:.2e}"


def format_usd(value: float) -> str:
    """Dollars for tables and axes: ``$0``, ``$12.40``, ``$1,250.00``, two significant digits below
    $1 (``$0.0063``, ``$0.0000025``) — never ``6.3e-06``."""
    if value == 0:
        return "$0"
    sign, value = ("-", -value) if value < 0 else ("", value)
    value = float(f"{value:.2g}") if value < 1 else value  # 0.00999 -> 0.010, not 0.0100
    if value >= 1:
        return f"{sign}${value:,.2f}"
    decimals = max(2, 1 - math.floor(math.log10(value)))
    return f"{sign}${value:.{decimals}f}"


def format_latency(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def format_tokens(response: LLMResponse) -> str:
    u = response.usage
    return f"{u.input_tokens} → {u.output_tokens} tokens"


def strategy_of(response: LLMResponse) -> str | None:
    """The strategy that produced the answer, when it was more than a single bound call."""
    decision = response.decision
    if decision is None or decision.strategy in ("single", ""):
        return None
    label = decision.strategy
    if decision.task_type:
        label += f" ({decision.task_type})"
    return label


def footer(response: LLMResponse) -> str:
    """``provider · model · tokens · cost · latency (· strategy)``."""
    parts = [
        response.provider,
        response.model,
        format_tokens(response),
        format_cost(response.cost_usd, response.cost_note),
        format_latency(response.latency_s),
    ]
    strategy = strategy_of(response)
    if strategy:
        parts.append(strategy)
    return SEP.join(parts)


def metadata(response: LLMResponse) -> dict[str, Any]:
    """What front ends (and tests) can read about a response without parsing its text."""
    decision = response.decision
    return {
        "provider": response.provider,
        "model": response.model,
        "role": response.role,
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "total_tokens": response.usage.total_tokens,
        "cost_usd": response.cost_usd,
        "cost_note": response.cost_note,
        "latency_s": round(response.latency_s, 4),
        "strategy": decision.strategy if decision is not None else None,
        "task_type": decision.task_type if decision is not None else None,
        "finish_reason": response.finish_reason,
        "trace_id": response.trace_id,
        "id": response.id,
    }


def close_fences(markdown: str) -> str:
    """Close an unterminated code fence (a cut-off answer) so the footer is not swallowed by it."""
    return markdown + "\n```" if markdown.count("```") % 2 else markdown


def markdown_footer(response: LLMResponse) -> str:
    return f"<sub>{html.escape(footer(response))}</sub>"


def to_markdown(response: LLMResponse, body: str | None = None) -> str:
    """The answer as Markdown (``body`` replaces the content, e.g. a fenced code block) + footer."""
    text = response.content if body is None else body
    return f"{close_fences(text)}\n\n{markdown_footer(response)}"


def to_text(response: LLMResponse, body: str | None = None) -> str:
    text = response.content if body is None else body
    return f"{text}\n── {footer(response)}"


def to_html(response: LLMResponse, body_html: str) -> str:
    return (
        f'<div class="orchlab-response">{body_html}'
        f'<div style="opacity:.7;font-size:85%;margin-top:.4em">{html.escape(footer(response))}</div></div>'
    )


def mimebundle(response: LLMResponse) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` for IPython's display machinery."""
    data = {"text/markdown": to_markdown(response), "text/plain": to_text(response)}
    return data, {"orchlab": metadata(response)}


# --- small tables (roles, chats) without pandas -----------------------------------------------


class Table:
    """A small table that renders as HTML, Markdown and aligned text (nothing heavy to import)."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None):
        self.columns = list(columns)
        self.rows = [["" if v is None else str(v) for v in row] for row in rows]
        self.title = title

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in self.rows
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
