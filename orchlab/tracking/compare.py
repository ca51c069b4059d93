"""Run a prompt set on several targets and compare them, in a DataFrame, a plot and MLflow's UI.

Example::

    result = orchlab.compare("data/prompts_small.jsonl", ["llm.preprocess", "llm.inference", "cascade"])
    result.summary                       # one row per target: success, latency p50/p95, tokens, cost
    result.rate(0, "llm.inference", 5)   # or client.feedback(trace_id, ...), or the compare view
    result.refresh_ratings()             # ratings given elsewhere (another session) read back
    result.plot()                        # rating vs $ per 1,000 calls (Pareto front), and latency
    result.pareto()                      # the same as a table: which targets are on the front
    result.ui_url()                      # MLflow's compare view of the runs (port: ORCH_MLFLOW_PORT)

A target is a role name, ``"provider:model"``, a logic id (a strategy: ``"cascade"``,
``"ensemble"``, ..., or a logic added with ``register_logic`` or installed as a plugin; on the
default role) or a dict of ``client.complete`` arguments with a ``label``. Each target
gets one MLflow run, ``<target> · <name>`` (params: target, kind, role, provider, model, strategy,
warmup; metrics: success rate, latency p50/p95, tokens, total and mean cost, warm-up time; mean
rating once rated, logged again after each rating given in this process, see `Comparison._rated`);
its calls' traces are linked to it, and the figure of `Comparison.plot` is its ``comparison.png``.

Before timing, each target answers one warm-up call (the first prompt, ``max_tokens=1``, not
traced, not counted in the results): model loading and SDK imports stay out of p50/p95.
``warmup=False`` skips it; ``result.warmup`` has what each one took.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import math
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.config import logic_ids
from orchlab.config.schema import Strategy
from orchlab.errors import InvalidRequestError, OrchlabError, OrchlabWarning
from orchlab.pipeline.cache import CACHE_PARAM, check_mode
from orchlab.tracking.context import TraceLink, linked, untracked
from orchlab.types import Message, to_messages

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.frames import ReadableFrame
    from orchlab.orchestrator import Orchestrator
    from orchlab.tracking.feedback import Rating
    from orchlab.tracking.plots import ComparisonFigure
    from orchlab.tracking.settings import TrackingSettings

STRATEGIES = tuple(s.value for s in Strategy)
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")
RUN_CREATE_TIMEOUT_S = 60.0
WARMUP_PARAMS = {"max_tokens": 1}
FIGURE_ARTIFACT = "comparison.png"


@dataclass(frozen=True)
class Target:
    """What one comparison column runs."""

    label: str
    kind: str
    """``role`` | ``model`` | ``strategy`` | ``custom``."""
    role: str | None = None
    model: str | None = None
    strategy: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptCase:
    id: str
    text: str
    """The last user message (what tables show)."""
    messages: tuple[Message, ...]


# --- inputs ------------------------------------------------------------------------------


def compare_target(client: Orchestrator, spec: object) -> Target:
    """What a compare target names: a role, ``'provider:model'``, a logic id or a dict."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, Mapping):
        options = dict(spec)
        label = options.pop("label", None)
        role, model = options.pop("role", None), options.pop("model", None)
        strategy = options.pop("strategy", None)
        label = label or "/".join(str(x) for x in (role, strategy, model) if x) or "custom"
        return Target(str(label), "custom", role, model, strategy, options)
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidRequestError(
            f"a compare target is a role, 'provider:model', a URN, a strategy or a dict, got {spec!r}"
        )
    spec = spec.strip()
    if spec in client.roles():
        return Target(spec, "role", role=spec)
    if spec.startswith("urn:"):
        from orchlab.strategies.urn import parse_urn

        parse_urn(spec)  # a bad namespace, logic id or param is named now, before any call
        return Target(spec, "role", role=spec)  # answered as run() answers a URN
    if ":" in spec:
        provider = spec.partition(":")[0]
        client.resolver.provider_config(provider)  # UnknownProviderError with suggestions
        return Target(spec, "model", model=spec)
    try:
        logic_ids.check(spec)  # built in, added by register_logic, or installed
    except ValueError as exc:
        raise InvalidRequestError(
            f"compare target {spec!r} is not a role ({', '.join(client.roles()) or 'none defined'}), "
            f"not 'provider:model' and not a logic: {exc}"
        ) from None
    return Target(spec, "strategy", strategy=spec)


def load_prompts(prompts: object) -> list[PromptCase]:
    """A list of strings / message lists / dicts, or a dataset file (``.jsonl``, ``.csv``, ``.txt``)."""
    if isinstance(prompts, str | Path):
        return _read_dataset(_find_dataset(prompts))
    if not isinstance(prompts, Sequence) or not prompts:
        raise InvalidRequestError("prompts must be a non-empty list of prompts or a dataset file path")
    return [_case(item, i) for i, item in enumerate(prompts)]


def _find_dataset(path: str | Path) -> Path:
    p = Path(path).expanduser()
    tried = [p, Path("data") / p]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    if p.suffix.lower() not in DATASET_SUFFIXES:
        raise InvalidRequestError(
            f"prompts={str(path)!r} is neither a dataset file ({', '.join(DATASET_SUFFIXES)}) nor a list; "
            "pass a list of prompt strings to compare a single prompt"
        )
    raise InvalidRequestError(f"dataset file not found: tried {', '.join(str(t) for t in tried)}")


def _read_dataset(path: Path) -> list[PromptCase]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    rows: list[object]
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            loaded = json.loads(text)
            rows = loaded if isinstance(loaded, list) else [loaded]
        elif suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
        else:
            rows = [line for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise InvalidRequestError(f"{path}: not valid {suffix[1:]}: {exc}") from exc
    if not rows:
        raise InvalidRequestError(f"{path}: no prompts in the file")
    try:
        return [_case(row, i) for i, row in enumerate(rows)]
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{path}: {exc}") from None


def _case(item: object, index: int) -> PromptCase:
    case_id = str(index)
    messages: tuple[Message, ...]
    if isinstance(item, str):
        messages = (Message("user", item),)
    elif isinstance(item, Mapping) and ("messages" in item or "prompt" in item or "input" in item):
        case_id = str(item.get("id", index))
        if "messages" in item:
            messages = tuple(to_messages(item["messages"]))
        else:
            text = item.get("prompt", item.get("input"))
            if not isinstance(text, str) or not text.strip():
                raise InvalidRequestError(f"prompt {index}: 'prompt' must be a non-empty string")
            messages = (Message("user", text),)
        if item.get("system"):
            messages = (Message("system", str(item["system"])), *messages)
    else:
        try:
            messages = tuple(to_messages(item))
        except OrchlabError:
            raise InvalidRequestError(
                f"prompt {index}: expected a string, a list of messages, or a dict with 'prompt' or "
                f"'messages', got {type(item).__name__}"
            ) from None
    users = [m.content for m in messages if m.role == "user"]
    return PromptCase(case_id, users[-1] if users else messages[-1].content, messages)


# --- running -----------------------------------------------------------------------------


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.started = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            width = 24
            filled = int(width * self.done / max(1, self.total))
            sys.stderr.write(
                f"\rcompare {self.done}/{self.total} [{'#' * filled}{'.' * (width - filled)}] "
                f"{time.perf_counter() - self.started:.1f}s"
            )
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


async def _call(client: Orchestrator, target: Target, case: PromptCase, params: Mapping[str, Any]) -> Any:
    params = dict(params)
    cache = params.pop(CACHE_PARAM, "off")
    if target.kind == "role":
        assert target.role is not None
        return await client.arun(target.role, case.messages, params or None, cache=cache)
    return await client.acomplete(
        case.messages,
        role=target.role,
        strategy=target.strategy,
        model=target.model,
        cache=cache,
        **{**target.options, **params},
    )


def _cell(case: PromptCase, target: Target) -> dict[str, Any]:
    return {"prompt_id": case.id, "prompt": case.text, "target": target.label}


def compare(
    prompts: object,
    targets: Sequence[object],
    *,
    client: Orchestrator | None = None,
    params: Mapping[str, Any] | None = None,
    concurrency: int = 4,
    progress: bool = True,
    name: str | None = None,
    log_runs: bool = True,
    warmup: bool = True,
    cache: str = "off",
) -> Comparison:
    """Run every prompt on every target (at most ``concurrency`` calls at once), after one warm-up
    call per target (``warmup``); see the module doc. ``cache``: the response cache is off (a
    measurement is never a replay) unless asked (``auto`` or ``force``)."""
    from orchlab.loop import run_sync
    from orchlab.orchestrator import get_llm_client

    if client is None:
        client = get_llm_client()
    if isinstance(targets, str | Mapping) or not targets:
        raise InvalidRequestError("targets must be a non-empty list (roles, 'provider:model', logic ids)")
    parsed = [compare_target(client, t) for t in targets]
    labels = [t.label for t in parsed]
    if len(set(labels)) != len(labels):
        raise InvalidRequestError(f"compare targets must have distinct labels, got {labels}")
    if concurrency < 1:
        raise InvalidRequestError(f"concurrency must be at least 1, got {concurrency}")
    cases = load_prompts(prompts)
    name = name or f"compare {dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}"
    compare_id = uuid.uuid4().hex[:12]
    settings = client.tracking.settings
    runs: dict[str, str] = {}
    experiment_id: str | None = None
    if settings.enabled and log_runs:
        runs, experiment_id = _create_runs(settings, name, compare_id, parsed)

    cells = [(case, target) for case in cases for target in parsed]
    rows: list[dict[str, Any]] = [{} for _ in cells]
    bar = _Progress(len(cells), progress)
    call_params = {**(params or {}), CACHE_PARAM: check_mode(cache, "cache")}

    async def one(i: int, case: PromptCase, target: Target, gate: asyncio.Semaphore) -> None:
        link = TraceLink(
            run_id=runs.get(target.label),
            tags={
                "orchlab.compare": compare_id,
                "orchlab.compare_name": name,
                "orchlab.compare_target": target.label,
            },
        )
        async with gate:
            started = time.perf_counter()
            row = _cell(case, target)
            try:
                with linked(link):
                    r = await _call(client, target, case, call_params)
            except Exception as exc:
                row.update(
                    ok=False,
                    error=f"{type(exc).__name__}: {exc}",
                    latency_s=time.perf_counter() - started,
                    trace_id=getattr(exc, "trace_id", None),
                )
            else:
                winner = r.decision.winner if r.decision is not None else None
                row.update(
                    ok=True,
                    answer=r.content,
                    latency_s=time.perf_counter() - started,
                    input_tokens=r.usage.input_tokens,
                    output_tokens=r.usage.output_tokens,
                    cost_usd=r.cost_usd,
                    provider=r.provider,
                    model=r.model,
                    strategy=r.decision.strategy if r.decision is not None else "single",
                    winner=winner or r.target,
                    trace_id=r.trace_id,
                )
            rows[i] = row
            bar.step()

    warmups: dict[str, Warmup] = {}

    async def warm(target: Target, gate: asyncio.Semaphore) -> None:
        async with gate:
            started = time.perf_counter()
            error = None
            try:
                with untracked():
                    await _call(client, target, cases[0], {**call_params, **WARMUP_PARAMS})
            except Exception as exc:  # the timed calls meet it again and record it
                error = f"{type(exc).__name__}: {exc}"
            warmups[target.label] = Warmup(time.perf_counter() - started, error)

    async def run_all() -> None:
        gate = asyncio.Semaphore(concurrency)
        if warmup:
            await asyncio.gather(*(warm(t, gate) for t in parsed))
            if progress:
                took = ", ".join(f"{t.label} {warmups[t.label].latency_s:.1f} s" for t in parsed)
                sys.stderr.write(f"compare: warmed up each target once, not counted ({took})\n")
        bar.started = time.perf_counter()
        await asyncio.gather(*(one(i, c, t, gate) for i, (c, t) in enumerate(cells)))

    status = "FAILED"
    try:
        run_sync(run_all())
        status = "FINISHED"
    finally:
        result = Comparison(name, compare_id, parsed, cases, rows, runs, experiment_id, settings, client)
        result.warmup = {t.label: warmups[t.label] for t in parsed if t.label in warmups}
        if runs:
            result._log_runs(status=status if status == "FINISHED" else "KILLED")
            if status == "FINISHED":
                result._log_figure()
    if progress and runs:
        print(f"MLflow: {len(runs)} runs in experiment {settings.experiment!r} of {settings.tracking_uri}")
        print(f"compare view: {result.ui_url()}  (start the UI first: %llm mlflow prints the command)")
    return result


def _create_runs(
    settings: TrackingSettings, name: str, compare_id: str, targets: list[Target]
) -> tuple[dict[str, str], str | None]:
    """One MLflow run per target, created now (their ids link the calls' traces)."""
    from orchlab.tracking.store import experiment_id, open_client

    try:
        mlflow_client = open_client(settings)
        exp = experiment_id(mlflow_client, settings)
        out = {}
        for t in targets:
            run = mlflow_client.create_run(
                exp,
                run_name=run_name(t.label, name),
                tags={"orchlab.compare": compare_id, "orchlab.compare_name": name, "orchlab.target": t.label},
            )
            out[t.label] = run.info.run_id
        return out, exp
    except Exception as exc:
        warnings.warn(
            f"orchlab.compare: no MLflow runs ({exc}); the comparison runs and its traces go to the "
            "store, but they are not grouped into runs",
            OrchlabWarning,
            stacklevel=3,
        )
        return {}, None


def run_name(target: str, name: str) -> str:
    """``<target> · <comparison>``: the target first, so MLflow's tables and chart legends, which
    cut long names, still tell the runs apart."""
    return f"{target} · {name}"


# --- the result --------------------------------------------------------------------------


@dataclass(frozen=True)
class Warmup:
    """The one call a target answered before timing started (not in the results)."""

    latency_s: float
    error: str | None = None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


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
            "latency_p50_s": _quantile(latencies, 0.5),
            "latency_p95_s": _quantile(latencies, 0.95),
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
