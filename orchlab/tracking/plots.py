"""Matplotlib figures of a comparison (built on `matplotlib.figure.Figure`: no GUI backend needed)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def cost_latency(summary: pd.DataFrame, ax: Axes) -> Axes:
    """Each target at (p50 latency, mean cost per call); the bar to the right reaches p95."""
    top = 0.0
    for i, (label, row) in enumerate(summary.iterrows()):
        x, x95, y = _num(row["latency_p50_s"]), _num(row["latency_p95_s"]), _num(row["mean_cost_usd"])
        if x is None:
            continue
        y = 0.0 if y is None else y
        top = max(top, y)
        ax.errorbar([x], [y], xerr=[[0.0], [max(0.0, (x95 or x) - x)]], fmt="o", capsize=3)
        # staggered labels: targets with the same cost (all local: $0) do not overwrite each other
        ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(6, 6 + 12 * (i % 4)), fontsize=9)
    top = top or 1e-6
    ax.set_ylim(-0.05 * top, 1.35 * top)
    ax.set_xlabel("latency p50 (s), bar to p95")
    ax.set_ylabel("mean cost per call (USD)")
    ax.set_title("cost vs latency")
    ax.grid(True, alpha=0.3)
    return ax


def ratings(summary: pd.DataFrame, ax: Axes) -> Axes:
    """Mean star rating per target (thumbs-up rate x 5 where only thumbs were given)."""
    labels = [str(t) for t in summary.index]
    values, notes = [], []
    for _, row in summary.iterrows():
        stars, up = _num(row.get("mean_rating")), _num(row.get("thumbs_up_rate"))
        if stars is not None:
            values.append(stars)
            notes.append(f"{stars:.1f}")
        elif up is not None:
            values.append(up * 5)
            notes.append(f"{up:.0%} up")
        else:
            values.append(0.0)
            notes.append("unrated")
    bars = ax.bar(labels, values, color="#4C72B0")
    for bar, note in zip(bars, notes, strict=True):
        top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
        ax.annotate(note, top, ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, 5.5)
    ax.set_ylabel("mean rating (1-5)")
    ax.set_title("human ratings")
    ax.tick_params(axis="x", labelrotation=20)
    return ax


def comparison_figure(summary: pd.DataFrame) -> Figure:
    """Cost vs latency beside the ratings, for ``Comparison.summary``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    cost_latency(summary, left)
    ratings(summary, right)
    return fig
