"""`evaluate`: targets answer a labelled set; accuracy, cost and latency side by side, in MLflow.

Example::

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

import base64
import contextlib
import datetime as dt
import html
import io
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchlab.config import logic_ids
from orchlab.datasets import as_items
from orchlab.errors import InvalidRequestError, OrchlabError
from orchlab.evaluation.replay import POLICY_KEYS, Replayed, policy_of, replay, with_overrides
from orchlab.evaluation.scorers import EvalScorer, Verdict, as_scorer, to_mlflow
from orchlab.evaluation.stats import pareto_front, quantile, wilson_interval
from orchlab.pipeline.cache import CACHE_PARAM, check_mode
from orchlab.strategies.registry import is_logic_object, logic_object_name
from orchlab.strategies.urn import is_urn
from orchlab.tracking.context import untracked

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.orchestrator import Orchestrator
    from orchlab.strategies.logic import Logic
    from orchlab.tracking.plots import ComparisonFigure

TARGET_KEYS = ("label", "target", "strategy", "prompt", "system", "params", "replay_of", *POLICY_KEYS)
RECORD_ATTRIBUTE = "orchlab.eval_record"
WARMUP_PARAMS = {"max_tokens": 1}


class EvaluationItemError(OrchlabError):
    """A target failed on one item (its trace in MLflow is marked as an error; the item counts as wrong)."""


@dataclass(frozen=True)
class EvalTarget:
    label: str
    target: str | None = None
    """A role, ``'provider:model'`` or a URN (None: ``strategy`` on the default role)."""
    strategy: str | Logic | type[Logic] | None = None
    """A logic id, or a logic object the calls use unregistered."""
    prompt: str | None = None
    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    replay_of: str | None = None
    policy: Mapping[str, Any] = field(default_factory=dict)


def eval_target(client: Orchestrator, spec: object) -> EvalTarget:
    """What an evaluate target names (see the module doc)."""
    if isinstance(spec, EvalTarget):
        return spec
    if isinstance(spec, str):
        return EvalTarget(spec, **_where(client, spec))
    if is_logic_object(spec):
        return EvalTarget(logic_object_name(spec), strategy=spec)
    if not isinstance(spec, Mapping):
        raise InvalidRequestError(
            "an evaluate target is a role, 'provider:model', a URN, a logic id, a logic object "
            f"(an orchlab.Logic subclass or instance) or a dict, got {spec!r}"
        )
    unknown = sorted(set(spec) - set(TARGET_KEYS))
    if unknown:
        raise InvalidRequestError(
            f"evaluate target {dict(spec)!r}: unknown key(s) {unknown}; use {', '.join(TARGET_KEYS)}"
        )
    where: dict[str, Any] = {}
    if spec.get("target") is not None:
        where = _where(client, str(spec["target"]))
    strategy = spec.get("strategy")
    if strategy is not None:
        where["strategy"] = strategy if is_logic_object(strategy) else str(strategy)
    named = logic_object_name(strategy) if is_logic_object(strategy) else strategy
    label = spec.get("label") or spec.get("target") or named or spec.get("replay_of")
    if not label:
        raise InvalidRequestError(f"evaluate target {dict(spec)!r} needs a label, target or strategy")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidRequestError(f"evaluate target {label!r}: params must be a dict, got {params!r}")
    return EvalTarget(
        str(label),
        prompt=spec.get("prompt"),
        system=spec.get("system"),
        params=dict(params),
        replay_of=spec.get("replay_of"),
        policy={k: spec[k] for k in POLICY_KEYS if k in spec},
        **where,
    )


def _where(client: Orchestrator, spec: str) -> dict[str, Any]:
    spec = spec.strip()
    if is_urn(spec) or spec in client.roles():
        return {"target": spec}
    if ":" in spec:
        client.resolver.provider_config(spec.partition(":")[0])  # UnknownProviderError, "did you mean"
        return {"target": spec}
    try:
        logic_ids.check(spec)
    except ValueError as exc:
        raise InvalidRequestError(
            f"evaluate target {spec!r} is not a role ({', '.join(client.roles()) or 'none defined'}), "
            f"not 'provider:model', not a URN and not a logic: {exc}"
        ) from None
    return {"strategy": spec}


def _strategy_name(strategy: str | Logic | type[Logic] | None) -> str:
    if strategy is None:
        return "-"
    return strategy if isinstance(strategy, str) else logic_object_name(strategy)


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
            "strategy": _strategy_name(t.strategy),
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
