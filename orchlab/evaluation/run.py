"""`evaluate`: targets answer a labelled set; accuracy, cost and latency side by side, in MLflow.

For example:

    result = orchlab.evaluate("tqbpp_core_en", ["llm.inference", "urn:orchlab:ensemble:..."],
                              scorers=["contains", "exact"])
    result.summary            # per target: accuracy with its 95% Wilson interval, cost, p50/p95 latency,
                              # escalation rate (cascades), agreement (votes)
    result.plot()             # accuracy against cost, the Pareto front marked
    orchlab.evaluate("tqbpp_core_en", [{"label": "vote3", "replay_of": "vote5", "voters": 3}],
                     scorers=["contains"], replay=result)     # or replay="<experiment name>"

Each target runs through ``mlflow.genai.evaluate``: the target is its predict function (one trace
per item, carrying orchlab's attempts, tokens and cost), the scorers are MLflow scorers (one
assessment per scorer on each trace), and each target gets its own MLflow run (params: target,
prompt, policy; metrics: the summary's numbers). With tracking off (``ORCH_TRACKING=0``,
``log=False``) the same calls and scorers run in a plain loop and nothing is logged.

A target is a role, ``'provider:model'``, a URN, a logic id (on the default role), a logic object
(an `orchlab.Logic` subclass or instance, on the default role, used for these calls only and never
registered; labelled by its class), or a dict: ``{"label", "target" (any of those) or "strategy"
(an id or a logic object), "prompt" ("{question}" by default, formatted with the item's inputs),
"system" (e.g. "{context}"), "params" (generation params)}``; in replay also ``"replay_of"`` (the
recorded target's label) and a policy: ``voters``, ``threshold``, ``order`` (see
`orchlab.evaluation.replay`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from orchlab.datasets import as_items
from orchlab.errors import InvalidRequestError, OrchlabError
from orchlab.evaluation.replay import Replayed, policy_of, replay, with_overrides
from orchlab.evaluation.scorers import EvalScorer, Verdict, as_scorer, to_mlflow
from orchlab.pipeline.cache import CACHE_PARAM, check_mode
from orchlab.tracking.context import untracked

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

from orchlab.evaluation.result import Evaluation
from orchlab.evaluation.targets import EvalTarget, eval_target

RECORD_ATTRIBUTE = "orchlab.eval_record"
WARMUP_PARAMS = {"max_tokens": 1}


class EvaluationItemError(OrchlabError):
    """A target failed on one item (its trace in MLflow is marked as an error; the item counts as wrong)."""


def _prompt(t: EvalTarget, item: Mapping[str, Any]) -> list[dict[str, str]]:
    inputs = item["inputs"]

    def fill(template: str, what: str) -> str:
        try:
            return template.format_map(inputs)
        except KeyError as exc:
            raise InvalidRequestError(
                f"target {t.label!r}: {what} {template!r} names {exc} but item {item['id']!r} has "
                f"inputs {sorted(inputs)}"
            ) from None

    if t.prompt is not None:
        text = fill(t.prompt, "prompt")
    elif "question" in inputs:
        text = str(inputs["question"])
    elif len(inputs) == 1:
        text = str(next(iter(inputs.values())))
    else:
        raise InvalidRequestError(
            f"target {t.label!r}: item {item['id']!r} has inputs {sorted(inputs)} and no 'question'; "
            "give the target a prompt, e.g. {'prompt': '{text}'}"
        )
    messages = [{"role": "user", "content": text}]
    if t.system is not None:
        messages.insert(0, {"role": "system", "content": fill(t.system, "system")})
    return messages


# --- one call, recorded ------------------------------------------------------------------


def _attempt(a: Any) -> dict[str, Any]:
    return {
        "stage": a.stage,
        "target": f"{a.provider}:{a.model}",
        "outcome": a.outcome,
        "output": a.output,
        "confidence": a.confidence,
        "cost_usd": a.cost_usd,
        "latency_s": a.latency_s,
        "started_at": a.started_at,
        "input_tokens": a.usage.input_tokens,
        "output_tokens": a.usage.output_tokens,
    }


def answer_item(
    client: Orchestrator, t: EvalTarget, item: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """One item answered by one target, untracked (the evaluation's own trace holds it): the record
    replay reads (answer, every attempt, cost, tokens, latency)."""
    messages = _prompt(t, item)
    params = dict(params)
    cache = params.pop(CACHE_PARAM, "off")
    record: dict[str, Any] = {"item": item["id"], "target": t.label}
    started = time.perf_counter()
    try:
        with untracked():
            r = client.complete(
                messages, role=t.target, strategy=t.strategy, cache=cache, **{**params, **t.params}
            )
    except Exception as exc:
        record.update(
            answer=None,
            error=f"{type(exc).__name__}: {exc}",
            latency_s=time.perf_counter() - started,
            cost_usd=None,
            input_tokens=0,
            output_tokens=0,
            attempts=[],
        )
        return record
    decision = r.decision
    record.update(
        answer=r.content,
        error=None,
        latency_s=time.perf_counter() - started,
        cost_usd=r.cost_usd,
        input_tokens=r.usage.input_tokens,
        output_tokens=r.usage.output_tokens,
        strategy=decision.strategy if decision is not None else "single",
        winner=(decision.winner if decision is not None else None) or r.target,
        scores=dict(decision.scores) if decision is not None else {},
        attempts=[_attempt(a) for a in decision.attempts] if decision is not None else [],
    )
    return record


def evaluate(
    dataset: object,
    targets: Sequence[object],
    scorers: Sequence[object] = ("contains",),
    *,
    client: Orchestrator | None = None,
    params: Mapping[str, Any] | None = None,
    concurrency: int = 4,
    name: str | None = None,
    replay: object = None,
    log: bool = True,
    warmup: bool = True,
    progress: bool = True,
    cache: str = "off",
) -> Evaluation:
    """Every item of ``dataset`` answered by every target and scored; see the module doc.

    ``scorers``: `orchlab.evaluation.scorers` objects, built-in names or functions; the first is
    the one ``accuracy`` counts. ``concurrency``: items answered at once per target (one
    in-process model answers one at a time: use 1 there, or latency includes the wait).
    ``replay``: an `Evaluation` or the name of the MLflow experiment it was logged to; nothing is
    called and nothing is logged then. ``cache``: the response cache is off (a measurement is
    never a replay) unless asked (``auto`` or ``force``).
    """
    from orchlab.orchestrator import get_llm_client

    if client is None:
        client = get_llm_client()
    if isinstance(targets, str | Mapping) or not targets:
        raise InvalidRequestError("targets must be a non-empty list (roles, 'provider:model', URNs, dicts)")
    parsed = [eval_target(client, t) for t in targets]
    labels = [t.label for t in parsed]
    if len(set(labels)) != len(labels):
        raise InvalidRequestError(f"evaluate targets must have distinct labels, got {labels}")
    if isinstance(scorers, str | EvalScorer) or not scorers:
        raise InvalidRequestError("scorers must be a non-empty list, e.g. ['contains']")
    checks = [as_scorer(s).bind(client) for s in scorers]
    if len({s.name for s in checks}) != len(checks):
        raise InvalidRequestError(f"scorers must have distinct names, got {[s.name for s in checks]}")
    if concurrency < 1:
        raise InvalidRequestError(f"concurrency must be at least 1, got {concurrency}")
    items = as_items(dataset)
    name = name or f"evaluate {dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}"
    result = Evaluation(name, parsed, items, checks)
    if replay is not None:
        _replay(result, client, replay)
        return result
    for t in parsed:
        for item in items:
            _prompt(t, item)  # a template naming a missing input fails here, before any call
        if t.replay_of is not None or t.policy:
            raise InvalidRequestError(
                f"target {t.label!r}: replay_of / voters / threshold / order apply only with replay="
            )
        result.policies[t.label] = policy_of(_plan(client, t))
    settings = client.tracking.settings
    call_params = {**(params or {}), CACHE_PARAM: check_mode(cache, "cache")}
    if settings.enabled and log:
        _run_logged(result, client, call_params, concurrency, warmup, progress)
    else:
        _run_plain(result, client, call_params, concurrency, warmup, progress)
    return result


def _plan(client: Orchestrator, t: EvalTarget) -> Any:
    from orchlab.strategies.answer import plan_for_target

    return plan_for_target(client, t.target, strategy=t.strategy)


def _warm(result: Evaluation, client: Orchestrator, t: EvalTarget, params: Mapping[str, Any]) -> None:
    started = time.perf_counter()
    answer_item(client, t, result.items[0], {**params, **WARMUP_PARAMS})
    result.warmup[t.label] = time.perf_counter() - started


def _say(enabled: bool, text: str) -> None:
    if enabled:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _run_plain(
    result: Evaluation,
    client: Orchestrator,
    params: Mapping[str, Any],
    concurrency: int,
    warmup: bool,
    progress: bool,
) -> None:
    for t in result.targets:
        if warmup:
            _warm(result, client, t, params)
        started = time.perf_counter()

        def one(item: Mapping[str, Any], t: EvalTarget = t) -> dict[str, Any]:
            record = answer_item(client, t, item, params)
            inputs, expected = item["inputs"], item["expectations"]
            record["verdicts"] = {s.name: s.score(record["answer"], expected, inputs) for s in result.scorers}
            return record

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            records = list(pool.map(one, result.items))
        result.add(t, records)
        _say(progress, f"evaluate: {t.label}: {len(records)} items in {time.perf_counter() - started:.1f} s")


@contextlib.contextmanager
def _mlflow_session(mlflow: Any, uri: str, workers: int) -> Iterator[None]:
    """MLflow's evaluation on our store, ``workers`` items at once, without its trial call of the
    predict function (we trace it ourselves) and without its console summary; undone after."""
    env = {
        "MLFLOW_GENAI_EVAL_MAX_WORKERS": str(workers),
        "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    # MLflow's set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ (for subprocesses):
    # None puts back "nothing set" (variable gone), else the URI the process had
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    os.environ.update(env)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_logged(
    result: Evaluation,
    client: Orchestrator,
    params: Mapping[str, Any],
    concurrency: int,
    warmup: bool,
    progress: bool,
) -> None:
    from orchlab.tracking.store import experiment_id, import_mlflow, open_client

    settings = client.tracking.settings
    mlflow = import_mlflow()
    exp = experiment_id(open_client(settings), settings)
    result.experiment_id = exp
    result.tracking_uri = settings.tracking_uri
    verdicts: dict[str, dict[str, Verdict]] = {}
    lock = threading.Lock()

    def seen(trace_id: str, scorer: str, verdict: Verdict) -> None:
        with lock:
            verdicts.setdefault(trace_id, {})[scorer] = verdict

    ml_scorers = [to_mlflow(s, seen) for s in result.scorers]
    with _mlflow_session(mlflow, settings.tracking_uri, concurrency):
        for t in result.targets:
            if warmup:
                _warm(result, client, t, params)
            records: dict[str, dict[str, Any]] = {}
            predict = _predictor(mlflow, client, t, result.items, params, records, lock)
            traced = mlflow.trace(predict, name=f"evaluate {t.label}", span_type="CHAIN")
            data = [
                {
                    "inputs": item["inputs"],
                    "expectations": item["expectations"],
                    "tags": {"orchlab.item": str(item["id"]), **item["tags"]},
                }
                for item in result.items
            ]
            started = time.perf_counter()
            with mlflow.start_run(
                experiment_id=exp,
                run_name=f"{t.label} · {result.name}",
                tags={"orchlab.evaluate": result.evaluation_id, "orchlab.evaluate_target": t.label},
            ) as run:
                mlflow.log_params(result.params_of(t))
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    mlflow.genai.evaluate(data=data, predict_fn=traced, scorers=ml_scorers)
                ordered = []
                for item in result.items:
                    record = records[str(item["id"])]
                    got = verdicts.get(record.get("trace_id") or "", {})
                    record["verdicts"] = {
                        s.name: got.get(s.name)
                        or s.score(record["answer"], item["expectations"], item["inputs"])
                        for s in result.scorers
                    }
                    ordered.append(record)
                result.add(t, ordered)
                result.runs[t.label] = run.info.run_id
                metrics = {k: v for k, v in result.stats(t.label).items() if isinstance(v, int | float)}
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # no NaN
            took = time.perf_counter() - started
            _say(
                progress,
                f"evaluate: {t.label}: {len(result.items)} items in {took:.1f} s (MLflow run logged)",
            )


def _predictor(
    mlflow: Any,
    client: Orchestrator,
    t: EvalTarget,
    items: list[dict[str, Any]],
    params: Mapping[str, Any],
    records: dict[str, dict[str, Any]],
    lock: threading.Lock,
) -> Callable[..., str]:
    """MLflow's predict function for ``t``: it gets an item's inputs as keyword arguments (the
    trace's inputs), answers it, and puts orchlab's record on the trace's root span."""
    waiting: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        waiting.setdefault(_key(item["inputs"]), []).append(item)

    def predict(**inputs: Any) -> str:
        with lock:
            item = waiting[_key(inputs)].pop(0)
        record = answer_item(client, t, item, params)
        span = mlflow.get_current_active_span()
        if span is not None:
            record["trace_id"] = span.trace_id
            span.set_attributes(
                {
                    RECORD_ATTRIBUTE: json.dumps(record, default=str),
                    "orchlab.item": str(item["id"]),
                    "orchlab.target": t.label,
                    "mlflow.chat.tokenUsage": {
                        "input_tokens": record["input_tokens"],
                        "output_tokens": record["output_tokens"],
                        "total_tokens": record["input_tokens"] + record["output_tokens"],
                    },
                }
            )
        with lock:
            records[str(item["id"])] = record
        if record["error"] is not None:
            raise EvaluationItemError(record["error"])
        return str(record["answer"])

    return predict


def _key(inputs: Mapping[str, Any]) -> str:
    return json.dumps(dict(inputs), sort_keys=True, default=str)


# --- replay ------------------------------------------------------------------------------


def _replay(result: Evaluation, client: Orchestrator, source: object) -> None:
    recorded: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
    for t in result.targets:
        of = t.replay_of or t.label
        if of not in recorded:
            recorded[of] = _recorded(client, source, of)
        policy, records = recorded[of]
        result.policies[t.label] = with_overrides(policy, t.policy, t.label)
        rows = []
        for item in result.items:
            record = records.get(str(item["id"]))
            got: Replayed | None = None if record is None else replay(record, result.policies[t.label])
            if got is None:
                rows.append({"item": item["id"], "target": t.label, "missing": True, "verdicts": {}})
                continue
            row = {
                "item": item["id"],
                "target": t.label,
                "answer": got.answer,
                "error": None if got.answer is not None else (record or {}).get("error"),
                "latency_s": got.latency_s,
                "cost_usd": got.cost_usd,
                "calls": got.attempts,
                "escalated": got.escalated,
                "agreement": got.agreement,
                "trace_id": (record or {}).get("trace_id"),
                "missing": False,
            }
            row["verdicts"] = {
                s.name: s.score(got.answer, item["expectations"], item["inputs"]) for s in result.scorers
            }
            rows.append(row)
        result.add(t, rows, replayed=True)
    result.replayed_from = source if isinstance(source, str) else getattr(source, "name", "an evaluation")


def _recorded(
    client: Orchestrator, source: object, label: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The recorded policy and records (by item id) of target ``label`` in ``source``."""
    if isinstance(source, Evaluation):
        if label not in source.records:
            raise InvalidRequestError(
                f"replay: the evaluation {source.name!r} has no target {label!r} "
                f"(it has {', '.join(source.records)})"
            )
        return dict(source.policies[label]), source.records[label]
    if not isinstance(source, str):
        raise InvalidRequestError(f"replay= takes an Evaluation or an MLflow experiment name, got {source!r}")
    return _recorded_in_mlflow(client, source, label)


def _recorded_in_mlflow(
    client: Orchestrator, experiment: str, label: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    from orchlab.tracking.api import reading_client
    from orchlab.tracking.store import experiment_id_by_name

    settings = client.tracking.settings
    reader = reading_client(settings)
    exp = experiment_id_by_name(reader, experiment, settings.sqlite_path, create=False)
    if exp is None:
        raise InvalidRequestError(f"replay: no MLflow experiment {experiment!r} in {settings.tracking_uri}")
    runs = reader.search_runs(
        [exp],
        filter_string=f"tags.`orchlab.evaluate_target` = '{label}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise InvalidRequestError(f"replay: experiment {experiment!r} has no evaluation of target {label!r}")
    run = runs[0]
    policy = json.loads(run.data.params.get("policy", "{}"))
    records: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        page = reader.search_traces(
            locations=[exp], run_id=run.info.run_id, max_results=500, page_token=token
        )
        for trace in page:
            root = next((s for s in trace.data.spans if s.parent_id is None), None)
            raw = root.get_attribute(RECORD_ATTRIBUTE) if root is not None else None
            if raw:
                record = json.loads(raw) if isinstance(raw, str) else raw
                records[str(record["item"])] = record
        token = page.token
        if not token:
            break
    return policy, records
