"""`Evaluation`: what `evaluate` returns (results per item and target, summary, plot, MLflow runs)."""

from __future__ import annotations

import base64
import html
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchlab.evaluation.scorers import EvalScorer, Verdict
from orchlab.evaluation.stats import pareto_front, quantile, wilson_interval
from orchlab.evaluation.targets import strategy_name

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.evaluation.targets import EvalTarget
    from orchlab.tracking.plots import ComparisonFigure


def _escalated(record: Mapping[str, Any], policy: Mapping[str, Any]) -> bool | None:
    if policy.get("logic") != "cascade":
        return None
    stages = [str(a.get("stage") or "") for a in record.get("attempts") or []]
    return any(s.startswith("cascade ") and not s.startswith("cascade 1") for s in stages)


def _agreement(record: Mapping[str, Any], policy: Mapping[str, Any]) -> float | None:
    if policy.get("logic") != "vote":
        return None
    value = (record.get("scores") or {}).get("agreement")
    return None if value is None else float(value)


# --- the evaluation ----------------------------------------------------------------------


# --- the result --------------------------------------------------------------------------


class Evaluation:
    """The outcome of `evaluate`: ``results`` (item x target), ``summary`` (per target), ``plot()``."""

    def __init__(
        self, name: str, targets: list[EvalTarget], items: list[dict[str, Any]], scorers: list[EvalScorer]
    ) -> None:
        self.name = name
        self.evaluation_id = uuid.uuid4().hex[:12]
        self.targets = targets
        self.items = items
        self.scorers = scorers
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        """Per target, per item id: what was recorded (answer, attempts, cost, latency)."""
        self.policies: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.runs: dict[str, str] = {}
        self.experiment_id: str | None = None
        self.tracking_uri: str | None = None
        self.warmup: dict[str, float] = {}
        """Per target: the untimed warm-up call's seconds (model loading stays out of the latencies)."""
        self.replayed_from: str | None = None

    @property
    def primary(self) -> str:
        return self.scorers[0].name

    def add(self, t: EvalTarget, records: list[dict[str, Any]], *, replayed: bool = False) -> None:
        policy = self.policies.get(t.label, {})
        if not replayed:
            self.records[t.label] = {str(r["item"]): r for r in records}
        questions = {item["id"]: item for item in self.items}
        for r in records:
            item = questions[r["item"]]
            verdicts: dict[str, Verdict] = r.get("verdicts") or {}
            row = {
                "item": r["item"],
                "target": t.label,
                "question": str(item["inputs"].get("question", "")),
                "expected": item["expectations"].get("expected_response"),
                "answer": r.get("answer"),
                "passed": verdicts[self.primary].passed if self.primary in verdicts else None,
                **{s.name: verdicts[s.name].passed if s.name in verdicts else None for s in self.scorers},
                "error": r.get("error"),
                "latency_s": r.get("latency_s"),
                "cost_usd": r.get("cost_usd"),
                "calls": r.get("calls", len(r.get("attempts") or []) or (0 if r.get("error") else 1)),
                "escalated": r["escalated"] if "escalated" in r else _escalated(r, policy),
                "agreement": r["agreement"] if "agreement" in r else _agreement(r, policy),
                "trace_id": r.get("trace_id"),
                "missing": bool(r.get("missing", False)),
            }
            self.rows.append(row)

    @property
    def results(self) -> pd.DataFrame:
        """One row per item x target: the answer, each scorer's verdict, latency, cost, calls."""
        import pandas as pd

        from orchlab.frames import readable

        return readable(pd.DataFrame(self.rows))

    def stats(self, label: str) -> dict[str, Any]:
        rows = [r for r in self.rows if r["target"] == label]
        scored = [r for r in rows if not r["missing"]]
        n = len(scored)
        passed = sum(1 for r in scored if r["passed"])
        low, high = wilson_interval(passed, n)
        latencies = [r["latency_s"] for r in scored if r["latency_s"] is not None]
        costs = [r["cost_usd"] for r in scored if r["cost_usd"] is not None]
        escalated = [r["escalated"] for r in scored if r["escalated"] is not None]
        agreement = [r["agreement"] for r in scored if r["agreement"] is not None]
        out: dict[str, Any] = {
            "n": n,
            "accuracy": passed / n if n else None,
            "ci_low": low,
            "ci_high": high,
        }
        for s in self.scorers[1:]:
            out[s.name] = sum(1 for r in scored if r[s.name]) / n if n else None
        out.update(
            {
                "errors": sum(1 for r in scored if r["error"]),
                "mean_cost_usd": sum(costs) / len(costs) if costs else None,
                "total_cost_usd": sum(costs) if costs else None,
                "unpriced": n - len(costs),
                "latency_p50_s": quantile(latencies, 0.5),
                "latency_p95_s": quantile(latencies, 0.95),
                "mean_calls": sum(r["calls"] for r in scored) / n if n else None,
                "escalation_rate": sum(escalated) / len(escalated) if escalated else None,
                "agreement": sum(agreement) / len(agreement) if agreement else None,
            }
        )
        if self.replayed_from is not None:
            out["missing"] = len(rows) - n
        return out

    @property
    def summary(self) -> pd.DataFrame:
        """One row per target: n, accuracy (the first scorer) with its 95% Wilson interval, the other
        scorers' pass rates, errors, mean/total cost, p50/p95 latency, calls per item, escalation
        rate (cascades), mean agreement (votes), and its MLflow run."""
        import pandas as pd

        frame = pd.DataFrame([{"target": t.label, **self.stats(t.label)} for t in self.targets])
        if self.runs:
            frame["run_id"] = [self.runs.get(t.label) for t in self.targets]
        return frame.set_index("target")

    def params_of(self, t: EvalTarget) -> dict[str, str]:
        return {
            "target": t.target or "-",
            "strategy": strategy_name(t.strategy),
            "prompt": t.prompt or "{question}",
            "system": t.system or "-",
            "params": json.dumps(dict(t.params), sort_keys=True),
            "policy": json.dumps(self.policies.get(t.label, {}), sort_keys=True),
            "items": str(len(self.items)),
            "scorers": ",".join(s.name for s in self.scorers),
            "evaluation": self.name,
        }

    def plot(self, x: str = "auto") -> ComparisonFigure:
        """Accuracy (with its 95% interval) against mean cost per item, one point per target, the
        Pareto front joined. ``x``: ``cost``, ``latency`` (p50), or ``auto`` (cost, unless every
        target cost $0, as on a local model: latency then, and the title says so)."""
        from orchlab.evaluation.figure import accuracy_figure

        return accuracy_figure(self.summary, x)

    def pareto(self, x: str = "auto") -> pd.DataFrame:
        """Per target: the x measure (``plot``'s), accuracy, and whether it is on the Pareto front."""
        import pandas as pd

        from orchlab.evaluation.figure import x_column

        summary = self.summary
        column = x_column(summary, x)
        pairs = [(float(c), float(a)) for c, a in zip(summary[column], summary["accuracy"], strict=True)]
        return pd.DataFrame(
            {column: summary[column], "accuracy": summary["accuracy"], "on_front": pareto_front(pairs)},
            index=summary.index,
        )

    def __repr__(self) -> str:
        size = f"{len(self.items)} items x {len(self.targets)} targets"
        return f"Evaluation({self.name!r}, {size})\n{self.summary}"

    def _repr_html_(self) -> str:
        png = base64.b64encode(self.plot()._repr_png_()).decode()
        head = f"<b>{html.escape(self.name)}</b>: {len(self.items)} items x {len(self.targets)} targets"
        if self.replayed_from is not None:
            head += f", replayed from {html.escape(str(self.replayed_from))} (no model called)"
        return f"{head}{self.summary._repr_html_()}<img src='data:image/png;base64,{png}'/>"
