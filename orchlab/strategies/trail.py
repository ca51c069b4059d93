"""The decision trail as text (``response.decision.explain()``)."""

from __future__ import annotations

from orchlab.types import Attempt, Decision

LATENCY_WIDTH = len("999999 ms")


def _cost(value: float | None) -> str:
    if value is None:
        return "?"
    if value == 0:
        return "$0"
    return f"${value:.6f}"


def _tokens(a: Attempt) -> str:
    if a.usage.total_tokens:
        return f"{a.usage.input_tokens}/{a.usage.output_tokens}"
    return "?" if a.outcome == "cancelled" else "-"


def _note(a: Attempt) -> str:
    parts = []
    if a.error:
        parts.append(f"{a.error_type or 'error'}: {a.error}")
    if a.note:
        parts.append(a.note)
    text = "; ".join(parts)
    return text if len(text) <= 90 else text[:87] + "..."


def format_trail(decision: Decision) -> str:
    """A table of every attempt and a header saying what won and why."""
    head = [f"strategy: {decision.strategy}"]
    if decision.task_type:
        head.append(f"task: {decision.task_type}")
    head.append(f"winner: {decision.winner or '-'}")
    lines = ["  ".join(head), f"why: {decision.rationale}"]
    if decision.scores:
        shown = ", ".join(f"{k}={v:.3g}" for k, v in decision.scores.items())
        lines.append(f"scores: {shown}")
    rows = [("#", "stage", "target", "outcome", "latency", "tokens", "cost", "score", "note")]
    for i, a in enumerate(decision.attempts, 1):
        rows.append(
            (
                str(i),
                a.stage or "-",
                f"{a.provider}:{a.model}",
                a.outcome,
                f"{a.latency_s * 1000:.0f} ms",
                _tokens(a),
                "-" if a.outcome == "error" and not a.usage.total_tokens else _cost(a.cost_usd),
                "-" if a.confidence is None else f"{a.confidence:.2f}",
                _note(a),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    # a fixed width for the one volatile column: a slow call does not shift the others
    widths[4] = max(widths[4], LATENCY_WIDTH)
    for r in rows:
        cells = [r[c].rjust(widths[c]) if c in (0, 4) else r[c].ljust(widths[c]) for c in range(len(widths))]
        lines.append(("  ".join(cells) + "  " + r[-1]).rstrip())
    total = decision.total_cost_usd
    counted = [a for a in decision.attempts if a.outcome != "error" or a.usage.total_tokens]
    known = sum(a.cost_usd for a in counted if a.cost_usd is not None)
    tin = sum(a.usage.input_tokens for a in decision.attempts)
    tout = sum(a.usage.output_tokens for a in decision.attempts)
    cost = _cost(total) if total is not None else f"unknown (known part {_cost(known)})"
    lines.append(f"total: {len(decision.attempts)} attempts, tokens {tin}/{tout}, cost {cost}")
    for run in decision.tools:
        mark = "error" if run.result.is_error else "ok"
        result = run.result.content if len(run.result.content) <= 60 else run.result.content[:57] + "..."
        lines.append(
            f"tool  step {run.step}  {run.call.name}({run.call.raw_arguments})  {mark}  "
            f"{run.latency_s * 1000:.0f} ms  -> {result}"
        )
    return "\n".join(lines)
