"""Figures of a comparison: quality against cost per 1,000 calls with the Pareto front, and latency.

Built on `matplotlib.figure.Figure` (no GUI backend, no pyplot). `ComparisonFigure` shows itself as
a PNG wherever IPython displays it (JupyterLab, nbconvert), so ``result.plot()`` as the last line
of a cell draws the picture rather than printing ``<Figure size ...>``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, FuncFormatter

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

QUALITY = {
    "mean_rating": "mean rating (1-5)",
    "thumbs_up_rate": "thumbs-up rate",
    "success_rate": "success rate",
}
PNG_DPI = 100
FRONT_COLOR = "#2a7ab0"
OTHER_COLOR = "#9a9a9a"
FRONT_LABEL = "Pareto front: best quality for the money"
OTHER_LABEL = "another target is as good for less"


class ComparisonFigure(Figure):
    """A matplotlib Figure that displays itself as a PNG (``_repr_png_``), with or without pyplot."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=PNG_DPI)
        return buffer.getvalue()


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def pick_quality(summary: pd.DataFrame, quality: str = "auto") -> str:
    """``auto``: mean rating where any target is rated with stars, else thumbs-up rate, else success."""
    if quality != "auto":
        if quality not in QUALITY:
            from orchlab.errors import InvalidRequestError

            raise InvalidRequestError(f"quality={quality!r}: use 'auto' or one of {list(QUALITY)}")
        return quality
    for column in ("mean_rating", "thumbs_up_rate"):
        if any(_num(v) is not None for v in summary[column]):
            return column
    return "success_rate"


@dataclass(frozen=True)
class Point:
    target: str
    cost_per_1k: float | None
    """Dollars per 1,000 calls (None: some calls had no known price)."""
    quality: float | None
    on_front: bool = False


def pareto_points(summary: pd.DataFrame, quality: str) -> list[Point]:
    """One point per target; ``on_front``: no other target is at least as good for at most the cost
    (and strictly better in one of the two)."""
    raw = []
    for label, row in summary.iterrows():
        cost = _num(row["mean_cost_usd"])
        raw.append((str(label), None if cost is None else cost * 1000, _num(row[quality])))
    placed = [(c, q) for _, c, q in raw if c is not None and q is not None]

    def dominated(c: float, q: float) -> bool:
        return any(c2 <= c and q2 >= q and (c2 < c or q2 > q) for c2, q2 in placed)

    return [Point(t, c, q, c is not None and q is not None and not dominated(c, q)) for t, c, q in raw]


class DollarFormatter(Formatter):
    """``$0``, ``$0.002``, ``$0.004`` ...: as many decimals as the tick step needs (2 at least), no
    scientific notation and no offset."""

    def __init__(self) -> None:
        self.ticks: list[float] = []

    def set_locs(self, locs: Any) -> None:
        self.ticks = [float(v) for v in locs]
        super().set_locs(locs)

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x < 0:
            return ""
        if x == 0:
            return "$0"
        steps = [b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False) if b > a]
        step = min(steps) if steps else abs(x)
        decimals = max(2, math.ceil(-math.log10(step) - 1e-9)) if step < 1 else 2
        return f"${x:,.{decimals}f}"


def quality_vs_cost(summary: pd.DataFrame, ax: Axes, quality: str = "auto") -> Axes:
    """Quality (y) against $ per 1,000 calls (x), one point per target, the Pareto front joined."""
    quality = pick_quality(summary, quality)
    points = pareto_points(summary, quality)
    placed = [
        (p.target, p.cost_per_1k, p.quality, p.on_front)
        for p in points
        if p.cost_per_1k is not None and p.quality is not None
    ]
    front = sorted((c, q) for _, c, q, on in placed if on)
    if len(front) > 1:
        ax.plot(
            [c for c, _ in front], [q for _, q in front],
            color=FRONT_COLOR, linewidth=1.2, zorder=1,
        )  # fmt: skip
    labelled: set[bool] = set()
    for i, (target, cost, value, on_front) in enumerate(placed):
        legend = None if on_front in labelled else FRONT_LABEL if on_front else OTHER_LABEL
        labelled.add(on_front)
        color = FRONT_COLOR if on_front else OTHER_COLOR
        ax.scatter([cost], [value], s=60, color=color, zorder=2, label=legend)
        # staggered labels: targets at the same point (all local: $0) do not overwrite each other
        ax.annotate(
            target, (cost, value), textcoords="offset points",
            xytext=(7, 4 - 11 * (i % 3)), fontsize=9, color="black" if on_front else "#555",
        )  # fmt: skip
    top_cost = max((cost for _, cost, _, _ in placed), default=0.0)
    span = top_cost or 1.0
    ax.set_xlim(-0.08 * span, 1.35 * span if top_cost else span)
    ax.xaxis.set_major_formatter(DollarFormatter())
    if quality == "mean_rating":
        ax.set_ylim(0.5, 5.5)
    else:
        ax.set_ylim(-0.05, 1.1)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}" if 0 <= v <= 1 else ""))
    ax.set_xlabel("$ per 1,000 calls")
    ax.set_ylabel(QUALITY[quality])
    ax.set_title("quality vs cost")
    ax.grid(True, alpha=0.3)
    if placed:
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    shown = {target for target, *_ in placed}
    missing = [p.target for p in points if p.target not in shown]
    if missing:
        why = "unrated or unpriced" if quality != "success_rate" else "unpriced"
        ax.text(
            0.01, 0.01, f"not shown ({why}): {', '.join(missing)}",
            transform=ax.transAxes, fontsize=8, color="#a00", va="bottom",
        )  # fmt: skip
    return ax


def latency(summary: pd.DataFrame, ax: Axes) -> Axes:
    """p50 latency per target (bar) with a whisker to p95."""
    labels, p50, extra = [], [], []
    for label, row in summary.iterrows():
        mid, high = _num(row["latency_p50_s"]), _num(row["latency_p95_s"])
        labels.append(str(label))
        p50.append(mid or 0.0)
        extra.append(max(0.0, (high or mid or 0.0) - (mid or 0.0)))
    ys = list(range(len(labels)))
    ax.barh(ys, p50, xerr=[[0.0] * len(ys), extra], color="#7fa7c9", capsize=3)
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel("latency p50 (s), whisker to p95; warm-up call excluded")
    ax.set_title("latency")
    ax.grid(True, axis="x", alpha=0.3)
    return ax


def comparison_figure(summary: pd.DataFrame, quality: str = "auto") -> ComparisonFigure:
    """Quality vs cost per 1,000 calls (with the Pareto front) beside latency, for ``Comparison.summary``."""
    fig = ComparisonFigure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    quality_vs_cost(summary, left, quality)
    latency(summary, right)
    return fig
