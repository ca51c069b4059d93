"""`Comparison`: what `compare` returns (results, answers, summary, ratings, plots, MLflow runs)."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.errors import InvalidRequestError, OrchlabWarning
from orchlab.evaluation.stats import quantile

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.frames import ReadableFrame
    from orchlab.orchestrator import Orchestrator
    from orchlab.tracking.compare_inputs import PromptCase, Target
    from orchlab.tracking.feedback import Rating
    from orchlab.tracking.plots import ComparisonFigure
    from orchlab.tracking.settings import TrackingSettings


FIGURE_ARTIFACT = "comparison.png"


# --- the result --------------------------------------------------------------------------


@dataclass(frozen=True)
class Warmup:
    """The one call a target answered before timing started (not in the results)."""

    latency_s: float
    error: str | None = None


class Comparison:
    """The outcome of `compare`: ``results`` (one row per prompt x target), ``answers``, ``summary``."""

    RESULT_COLUMNS = (
        "prompt_id",
        "prompt",
        "target",
        "ok",
        "answer",
        "error",
        "latency_s",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "provider",
        "model",
        "strategy",
        "winner",
        "trace_id",
        "rating",
        "thumbs",
    )

    def __init__(
        self,
        name: str,
        compare_id: str,
        targets: list[Target],
        cases: list[PromptCase],
        rows: list[dict[str, Any]],
        runs: dict[str, str],
        experiment_id: str | None,
        settings: TrackingSettings,
        client: Orchestrator,
    ) -> None:
        self.name = name
        self.compare_id = compare_id
        self.targets = targets
        self.cases = cases
        self.rows = [r for r in rows if r]
        self.runs = runs
        self.experiment_id = experiment_id
        self.settings = settings
        self.client = client
        self.warmup: dict[str, Warmup] = {}
        """Per target: the warm-up call made before timing (empty with ``warmup=False``)."""
        self._lock = threading.Lock()
        self._step = 0
        """The step of the runs' rating metrics: each logging takes the next one (see `_rated`)."""
        from orchlab.tracking.feedback import watch

        watch([r["trace_id"] for r in self.rows if r.get("trace_id")], self)

    # --- tables ----------------------------------------------------------------------------

    @property
    def results(self) -> ReadableFrame:
        import pandas as pd

        from orchlab.frames import readable

        return readable(pd.DataFrame(self.rows, columns=list(self.RESULT_COLUMNS)))

    def table(self, value: str = "answer") -> ReadableFrame:
        """Prompts down, targets across, ``value`` (a results column) in the cells."""
        from orchlab.frames import readable

        frame = self.results
        if value not in frame.columns:
            raise InvalidRequestError(f"no column {value!r}; use one of {list(self.RESULT_COLUMNS)}")
        table = frame.pivot(index=["prompt_id", "prompt"], columns="target", values=value)
        return readable(table.reindex(columns=[t.label for t in self.targets]))

    @property
    def answers(self) -> ReadableFrame:
        return self.table("answer")

    def target_stats(self, label: str) -> dict[str, Any]:
        rows = [r for r in self.rows if r["target"] == label]
        ok = [r for r in rows if r.get("ok")]
        latencies = [r["latency_s"] for r in ok]
        costs = [r["cost_usd"] for r in ok if r.get("cost_usd") is not None]
        tokens = [r["input_tokens"] + r["output_tokens"] for r in ok]
        ratings = [r["rating"] for r in rows if r.get("rating") is not None]
        thumbs = [r["thumbs"] for r in rows if r.get("thumbs") is not None]
        return {
            "target": label,
            "prompts": len(rows),
            "success_rate": len(ok) / len(rows) if rows else None,
            "latency_p50_s": quantile(latencies, 0.5),
            "latency_p95_s": quantile(latencies, 0.95),
            "input_tokens": sum(r["input_tokens"] for r in ok),
            "output_tokens": sum(r["output_tokens"] for r in ok),
            "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
            "total_cost_usd": sum(costs) if costs else (None if ok else 0.0),
            "mean_cost_usd": sum(costs) / len(costs) if costs else None,
            "cost_per_1k_calls_usd": 1000 * sum(costs) / len(costs) if costs else None,
            "unpriced": len(ok) - len(costs),
            "mean_rating": sum(ratings) / len(ratings) if ratings else None,
            "thumbs_up_rate": sum(thumbs) / len(thumbs) if thumbs else None,
            "rated": len(ratings) + len(thumbs),
            "run_id": self.runs.get(label),
        }

    @property
    def summary(self) -> ReadableFrame:
        """One row per target: success rate, latency p50/p95 (warm-up excluded), tokens, cost,
        ratings, MLflow run."""
        import pandas as pd

        from orchlab.frames import readable

        frame = pd.DataFrame([self.target_stats(t.label) for t in self.targets]).set_index("target")
        return readable(frame)

    def pareto(self, quality: str = "auto") -> ReadableFrame:
        """Cost per 1,000 calls against quality per target, and whether it is on the Pareto front
        (no other target is as good for less). ``quality``: ``mean_rating``, ``thumbs_up_rate``,
        ``success_rate``, or ``auto`` (stars if any, else thumbs, else success)."""
        import pandas as pd

        from orchlab.frames import readable
        from orchlab.tracking.plots import pareto_points, pick_quality

        summary = self.summary
        column = pick_quality(summary, quality)
        points = pareto_points(summary, column)
        frame = pd.DataFrame(
            {
                "cost_per_1k_calls_usd": [p.cost_per_1k for p in points],
                column: [p.quality for p in points],
                "on_front": [p.on_front for p in points],
            },
            index=pd.Index([p.target for p in points], name="target"),
        )
        return readable(frame)

    # --- ratings ---------------------------------------------------------------------------

    def _row(self, prompt: int | str, target: str) -> dict[str, Any]:
        for r in self.rows:
            if r["target"] == target and (
                r["prompt_id"] == str(prompt)
                or r["prompt"] == prompt
                or (isinstance(prompt, int) and self.cases[prompt].id == r["prompt_id"])
            ):
                return r
        raise InvalidRequestError(
            f"no result for prompt {prompt!r} on target {target!r} "
            f"(targets: {[t.label for t in self.targets]}, prompts 0..{len(self.cases) - 1})"
        )

    def rate(self, prompt: int | str, target: str, rating: object, comment: str | None = None) -> None:
        """Rate one answer (thumbs or 1-5 stars); stored in MLflow as HUMAN feedback on its trace."""
        row = self._row(prompt, target)
        if not row.get("trace_id"):
            raise InvalidRequestError(f"the answer of {target!r} to prompt {prompt!r} was not traced")
        self.client.feedback(row["trace_id"], rating, comment=comment)  # reaches `_rated`

    def _rated(self, rating: Rating) -> None:
        """A rating of one of these answers was journaled in this process (`rate`, the compare
        view's buttons, ``client.feedback``): its row takes it, and its target's run gets its
        rating metrics again, through the journal like the rating itself.

        Each logging takes the next metric step, under a lock with the row update: MLflow keeps as
        a run's value the metric with the highest (step, timestamp, value), so with one step for
        all, two ratings within a millisecond would leave the larger mean rather than the last.
        The drain writes records in order anyway; the step makes the last value win regardless."""
        with self._lock:
            row = next((r for r in self.rows if r.get("trace_id") == rating.trace_id), None)
            if row is None:
                return
            row["thumbs" if rating.name == "thumbs" else "rating"] = rating.value
            if self.runs.get(row["target"]):
                self._log_runs(ratings_only=True, targets=[row["target"]])

    def refresh_ratings(self) -> pd.DataFrame:
        """Read every rating of these answers back from MLflow (wherever it was given), log the
        per-target rating metrics to the runs, and return the updated summary."""
        from orchlab.tracking.api import stored_trace_infos
        from orchlab.tracking.history import latest_assessment

        if not any(row.get("trace_id") for row in self.rows):
            return self.summary  # nothing was traced (tracking off)
        traced = [row["trace_id"] for row in self.rows if row.get("trace_id")]
        infos = stored_trace_infos(self.settings, traced)
        with self._lock:
            for row in self.rows:
                info = infos.get(row.get("trace_id") or "")
                if info is None:
                    continue
                rating = latest_assessment(info.assessments or [], "rating")
                thumbs = latest_assessment(info.assessments or [], "thumbs")
                row["rating"] = None if rating is None else rating.value
                row["thumbs"] = None if thumbs is None else bool(thumbs.value)
            if self.runs:
                self._log_runs(ratings_only=True)
        if self.runs:
            self._log_figure()
        return self.summary

    def _log_runs(
        self, *, status: str | None = None, ratings_only: bool = False, targets: list[str] | None = None
    ) -> None:
        from orchlab.tracking.journal import journal_for
        from orchlab.tracking.launch import after_write

        journal = journal_for(self.settings)

        now = int(time.time() * 1000)
        if ratings_only:
            self._step += 1
        for t in self.targets:
            run_id = self.runs.get(t.label)
            if run_id is None or (targets is not None and t.label not in targets):
                continue
            s = self.target_stats(t.label)
            metrics = {k: s[k] for k in ("mean_rating", "thumbs_up_rate", "rated")}
            payload: dict[str, Any] = {"kind": "run", "run_id": run_id, "time_ms": now, "step": self._step}
            if not ratings_only:
                metrics.update(
                    {
                        "prompts": s["prompts"],
                        "success_rate": s["success_rate"],
                        "latency_p50_s": s["latency_p50_s"],
                        "latency_p95_s": s["latency_p95_s"],
                        "input_tokens": s["input_tokens"],
                        "output_tokens": s["output_tokens"],
                        "mean_tokens": s["mean_tokens"],
                        "total_cost_usd": s["total_cost_usd"],
                        "mean_cost_usd": s["mean_cost_usd"],
                        "unpriced_calls": s["unpriced"],
                    }
                )
                if t.label in self.warmup:
                    metrics["warmup_s"] = self.warmup[t.label].latency_s
                payload["params"] = self._params(t)
                payload["status"] = status
            payload["metrics"] = metrics
            journal.append(payload)
        after_write(journal)

    def _params(self, t: Target) -> dict[str, str]:
        rows = [r for r in self.rows if r["target"] == t.label and r.get("ok")]

        def one(key: str, fallback: str | None) -> str:
            seen = {str(r.get(key)) for r in rows if r.get(key)}
            return seen.pop() if len(seen) == 1 else ("mixed" if seen else (fallback or "-"))

        params = {
            "target": t.label,
            "kind": t.kind,
            "role": t.role or "-",
            "provider": one("provider", None),
            "model": one("model", t.model),
            "strategy": one("strategy", t.strategy),
            "prompts": str(len(self.cases)),
            "compare_name": self.name,
            # true: one call before timing, not in the metrics (its latency is metric warmup_s)
            "warmup": "true" if t.label in self.warmup else "false",
        }
        params.update({f"option.{k}": str(v) for k, v in t.options.items()})
        return params

    def _log_figure(self) -> None:
        """`plot` as an MLflow artifact (``comparison.png``) on each run, written here: like the
        runs themselves, an explicit MLflow operation of `compare` (the drain writes calls' traces).
        Logged when the comparison ends and again by `refresh_ratings`."""
        from orchlab.tracking.store import open_client

        try:
            with tempfile.TemporaryDirectory(prefix="orchlab-plot-") as tmp:
                path = Path(tmp) / FIGURE_ARTIFACT
                self.plot().savefig(path, format="png")
                client = open_client(self.settings)
                for run_id in self.runs.values():
                    client.log_artifact(run_id, str(path))
        except Exception as exc:
            warnings.warn(
                f"orchlab.compare: the comparison figure was not logged to its MLflow runs ({exc})",
                OrchlabWarning,
                stacklevel=3,
            )

    # --- views -----------------------------------------------------------------------------

    def ui_url(self, base: str | None = None, *, port: int | None = None) -> str:
        """MLflow's compare view of these runs. ``base``: the UI's address; by default the tracking
        server, else ``http://127.0.0.1:PORT`` with ``port``, else ``ORCH_MLFLOW_PORT``, else 5000."""
        from orchlab.tracking.ui import ui_base

        if base is None:
            base = ui_base(self.settings, port)
        runs = json.dumps(list(self.runs.values()), separators=(",", ":"))
        exps = json.dumps([self.experiment_id] if self.experiment_id else [], separators=(",", ":"))
        query = urllib.parse.urlencode({"runs": runs, "experiments": exps}, safe="[],")
        return f"{base.rstrip('/')}/#/compare-runs?{query}"

    def plot(self, quality: str = "auto") -> ComparisonFigure:
        """Quality against $ per 1,000 calls with the Pareto front, beside latency p50/p95.

        A matplotlib Figure that displays itself as a picture in a notebook (``fig.savefig(...)``
        writes it to a file); ``quality`` as in `pareto`."""
        from orchlab.tracking.plots import comparison_figure

        return comparison_figure(self.summary, quality)

    def _timing_note(self) -> str:
        if not self.warmup:
            return "latency includes each target's first call (no warm-up)"
        return "latency excludes one warm-up call per target (made first, not counted)"

    def __repr__(self) -> str:
        size = f"{len(self.cases)} prompts x {len(self.targets)} targets"
        return f"Comparison({self.name!r}, {size}; {self._timing_note()})\n{self.summary}"

    def _repr_html_(self) -> str:
        import html

        url = html.escape(self.ui_url())
        link = f'<p>MLflow: <a href="{url}">{url}</a></p>' if self.runs else ""
        size = f"{len(self.cases)} prompts x {len(self.targets)} targets; {self._timing_note()}"
        return f"<b>{html.escape(self.name)}</b>: {size}{self.summary._repr_html_()}{link}"
