"""The figure of an evaluation: accuracy (95% interval) against cost, one point per target, the
Pareto front joined; a `ComparisonFigure`, so it shows itself as a picture in Jupyter."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from orchlab.errors import InvalidRequestError
from orchlab.evaluation.stats import pareto_front
from orchlab.tracking.plots import (
    FRONT_COLOR,
    FRONT_LABEL,
    OTHER_COLOR,
    OTHER_LABEL,
    ComparisonFigure,
    DollarFormatter,
)

if TYPE_CHECKING:
    import pandas as pd

X_COLUMNS = {"cost": "mean_cost_usd", "latency": "latency_p50_s"}


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def x_column(summary: pd.DataFrame, x: str = "auto") -> str:
    """``cost`` -> mean cost per item; ``latency`` -> p50 latency; ``auto``: cost unless all are $0."""
    if x == "auto":
        costs = [_num(v) for v in summary["mean_cost_usd"]]
        x = "latency" if all(c is None or c == 0 for c in costs) else "cost"
    if x not in X_COLUMNS:
        raise InvalidRequestError(f"x={x!r}: use 'auto', 'cost' or 'latency'")
    return X_COLUMNS[x]


def accuracy_figure(summary: pd.DataFrame, x: str = "auto") -> ComparisonFigure:
    column = x_column(summary, x)
    fig = ComparisonFigure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    placed = []
    for label, row in summary.iterrows():
        xv, acc = _num(row[column]), _num(row["accuracy"])
        if xv is not None and acc is not None:
            placed.append((str(label), xv, acc, _num(row["ci_low"]), _num(row["ci_high"])))
    front = pareto_front([(xv, acc) for _, xv, acc, _, _ in placed])
    line = sorted((xv, acc) for (_, xv, acc, _, _), on in zip(placed, front, strict=True) if on)
    if len(line) > 1:
        ax.plot([p[0] for p in line], [p[1] for p in line], color=FRONT_COLOR, linewidth=1.2, zorder=1)
    labelled: set[bool] = set()
    for i, ((label, xv, acc, low, high), on) in enumerate(zip(placed, front, strict=True)):
        color = FRONT_COLOR if on else OTHER_COLOR
        err = [[acc - low], [high - acc]] if low is not None and high is not None else None
        ax.errorbar([xv], [acc], yerr=err, fmt="o", color=color, capsize=4, zorder=2,
                    label=None if on in labelled else FRONT_LABEL if on else OTHER_LABEL)  # fmt: skip
        labelled.add(on)
        ax.annotate(label, (xv, acc), textcoords="offset points", xytext=(8, 4 - 11 * (i % 3)), fontsize=9)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("accuracy (95% Wilson interval)")
    if column == "mean_cost_usd":
        ax.xaxis.set_major_formatter(DollarFormatter())
        ax.set_xlabel("mean cost per item")
        ax.set_title("accuracy vs cost")
    else:
        ax.set_xlabel("latency p50 per item (s)")
        costs = [_num(v) for v in summary["mean_cost_usd"]]
        why = " (every target cost $0)" if all(c is None or c == 0 for c in costs) else ""
        ax.set_title(f"accuracy vs latency{why}")
    top = max((p[1] for p in placed), default=0.0)
    ax.set_xlim(-0.05 * (top or 1.0), 1.3 * top if top else 1.0)
    ax.grid(True, alpha=0.3)
    if placed:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.8)
    return fig
