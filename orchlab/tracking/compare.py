"""Run a prompt set on several targets and compare them, in a DataFrame, a plot and MLflow's UI.

For example:

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
import datetime as dt
import sys
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchlab.errors import InvalidRequestError, OrchlabWarning
from orchlab.pipeline.cache import CACHE_PARAM, check_mode
from orchlab.tracking.compare_inputs import PromptCase, Target, compare_target, load_prompts
from orchlab.tracking.comparison import Comparison, Warmup
from orchlab.tracking.context import TraceLink, linked, untracked

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.tracking.settings import TrackingSettings


WARMUP_PARAMS = {"max_tokens": 1}


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
