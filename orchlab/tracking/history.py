"""Reading calls back from MLflow as pandas DataFrames: `history` and `usage_history`.

Both wait until this process's calls are in the store (so a call made a moment ago is there),
then search the client's experiment. Filters on role, model, provider, rating and status run in
MLflow's search (``tag.orchlab.role = ...``, ``feedback.rating >= 4``); time limits too.

For example:

    orchlab.history(role="llm.inference", min_rating=4, since="2026-11-01")
    orchlab.usage_history(by=["role", "model"], since=datetime.timedelta(days=7))

`usage_history` reads the store (every session that wrote to it); ``client.usage()`` counts this
process's calls in memory (every attempt, by provider). A call's tokens and cost in MLflow
include every attempt its strategy made; its provider and model are the answering ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchlab.errors import TrackingError
from orchlab.usage import COLUMNS as USAGE_COLUMNS
from orchlab.usage import KEYS as USAGE_KEYS

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.orchestrator import Orchestrator

HISTORY_COLUMNS = (
    "time",
    "trace_id",
    "role",
    "strategy",
    "provider",
    "model",
    "status",
    "prompt",
    "answer",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "latency_s",
    "rating",
    "thumbs",
    "comment",
    "prompt_name",
    "prompt_version",
    "run_id",
)


def _quote(field: str, value: str) -> str:
    if "'" in value:
        raise TrackingError(f"{field}={value!r}: quotes are not supported in history filters")
    return f"'{value}'"


def _epoch_ms(value: object, field: str) -> int:
    if isinstance(value, dt.timedelta):
        return int((dt.datetime.now(dt.UTC) - value).timestamp() * 1000)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return _epoch_ms(dt.datetime(value.year, value.month, value.day), field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1000)
    if isinstance(value, str):
        try:
            return _epoch_ms(dt.datetime.fromisoformat(value), field)
        except ValueError:
            pass
    raise TrackingError(
        f"{field}={value!r}: use a datetime, a date, an ISO string ('2026-11-01T12:00'), "
        "a timedelta (that long ago) or epoch seconds"
    )


def filter_string(
    *,
    role: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    strategy: str | None = None,
    status: str | None = None,
    prompt_name: str | None = None,
    min_rating: int | None = None,
    since: object = None,
    until: object = None,
) -> str:
    """The MLflow trace search filter for these conditions."""
    parts = []
    for field, value in (
        ("role", role),
        ("model", model),
        ("provider", provider),
        ("strategy", strategy),
        ("status", status),
        ("prompt", prompt_name),
    ):
        if value is not None:
            parts.append(f"tag.`orchlab.{field}` = {_quote(field, str(value))}")
    if min_rating is not None:
        number = isinstance(min_rating, int | float) and not isinstance(min_rating, bool)
        if not number or not 1 <= min_rating <= 5:
            raise TrackingError(f"min_rating must be a number from 1 to 5, got {min_rating!r}")
        parts.append(f"feedback.rating >= {min_rating}")
    if since is not None:
        parts.append(f"trace.timestamp_ms >= {_epoch_ms(since, 'since')}")
    if until is not None:
        parts.append(f"trace.timestamp_ms <= {_epoch_ms(until, 'until')}")
    return " AND ".join(parts)


def latest_assessment(assessments: Sequence[Any], name: str) -> Any:
    found = [a for a in assessments if getattr(a, "name", None) == name and getattr(a, "valid", True)]
    if not found:
        return None
    return max(found, key=lambda a: getattr(a, "create_time_ms", 0) or 0)


def _row(info: Any) -> dict[str, Any]:
    tags = info.tags or {}
    meta = info.trace_metadata or {}
    usage = info.token_usage or {}
    cost = getattr(info, "cost", None)
    if cost is None and meta.get("mlflow.trace.cost"):
        try:
            cost = json.loads(meta["mlflow.trace.cost"])
        except ValueError:
            cost = None
    rating = latest_assessment(info.assessments or [], "rating")
    thumbs = latest_assessment(info.assessments or [], "thumbs")
    comment_from = max(
        (a for a in (rating, thumbs) if a is not None),
        key=lambda a: getattr(a, "create_time_ms", 0) or 0,
        default=None,
    )
    state = getattr(info.state, "value", str(info.state))
    return {
        "time": dt.datetime.fromtimestamp(info.request_time / 1000, dt.UTC),
        "trace_id": info.trace_id,
        "role": tags.get("orchlab.role"),
        "strategy": tags.get("orchlab.strategy"),
        "provider": tags.get("orchlab.provider"),
        "model": tags.get("orchlab.model"),
        "status": tags.get("orchlab.status") or ("ok" if state == "OK" else "error"),
        "prompt": info.request_preview,
        "answer": info.response_preview,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "cost_usd": cost.get("total_cost") if isinstance(cost, dict) else None,
        "latency_s": None if info.execution_duration is None else info.execution_duration / 1000,
        "rating": None if rating is None else rating.value,
        "thumbs": None if thumbs is None else bool(thumbs.value),
        "comment": None if comment_from is None else comment_from.rationale,
        "prompt_name": tags.get("orchlab.prompt"),
        "prompt_version": tags.get("orchlab.prompt_version"),
        "run_id": meta.get("mlflow.sourceRun"),
    }


def trace_infos(
    client: Orchestrator | None,
    *,
    filter_str: str,
    limit: int | None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> list[Any]:
    """Trace infos (no spans), newest first, once this process's records are in the store."""
    from orchlab.tracking.api import reading_client, settings_for
    from orchlab.tracking.store import experiment_id, search_trace_infos

    settings = settings_for(client, tracking_uri=tracking_uri, experiment=experiment)
    mlflow_client = reading_client(settings)
    exp = experiment_id(mlflow_client, settings, create=False)
    if exp is None:
        return []  # nothing was ever traced into that experiment
    return search_trace_infos(
        mlflow_client,
        [exp],
        filter_string=filter_str or None,
        limit=limit,
        run_id=run_id,
        order_by=["timestamp_ms DESC"],
    )


def history(
    *,
    role: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    strategy: str | None = None,
    status: str | None = None,
    prompt_name: str | None = None,
    min_rating: int | None = None,
    thumbs: bool | None = None,
    since: object = None,
    until: object = None,
    run_id: str | None = None,
    limit: int | None = 100,
    client: Orchestrator | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """Past calls, newest first, one row per call (see `HISTORY_COLUMNS`)."""
    import pandas as pd

    flt = filter_string(
        role=role,
        model=model,
        provider=provider,
        strategy=strategy,
        status=status,
        prompt_name=prompt_name,
        min_rating=min_rating,
        since=since,
        until=until,
    )
    if thumbs is not None:
        flt = " AND ".join(p for p in (flt, f"feedback.thumbs = '{str(bool(thumbs)).lower()}'") if p)
    infos = trace_infos(
        client, filter_str=flt, limit=limit, run_id=run_id, tracking_uri=tracking_uri, experiment=experiment
    )
    frame = pd.DataFrame([_row(i) for i in infos], columns=list(HISTORY_COLUMNS))
    if thumbs is not None:  # the store compares thumbs as text; keep exactly what was asked
        frame = frame[frame["thumbs"] == bool(thumbs)]
    from orchlab.frames import readable  # answers wrapped, thumbs as 👍/👎 when shown

    return readable(frame.reset_index(drop=True))


def usage_history(
    by: str | Sequence[str] = ("role", "model"),
    *,
    since: object = None,
    until: object = None,
    role: str | None = None,
    model: str | None = None,
    client: Orchestrator | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """Calls, errors, tokens, cost, latency and ratings per group, from every call in the store."""
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    unknown = [k for k in keys if k not in USAGE_KEYS]
    if unknown:
        raise TrackingError(f"usage_history(by=...): unknown key(s) {unknown}; use {list(USAGE_KEYS)}")
    frame = history(
        role=role,
        model=model,
        since=since,
        until=until,
        limit=None,
        client=client,
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    # client.usage()'s columns, and what only the store knows
    columns = [*keys, *USAGE_COLUMNS, "p95_latency_s", "mean_rating", "rated"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(
        _error=frame["status"].eq("error"),
        _unpriced=frame["cost_usd"].isna(),
        _key=1,
    )
    for k in keys:
        frame[k] = frame[k].fillna("-")
    grouped = frame.groupby(keys or "_key", dropna=False)
    out = grouped.agg(
        calls=("trace_id", "count"),
        errors=("_error", "sum"),
        input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"),
        cost_usd=("cost_usd", "sum"),
        unpriced_calls=("_unpriced", "sum"),
        mean_latency_s=("latency_s", "mean"),
        p95_latency_s=("latency_s", lambda s: s.quantile(0.95)),
        mean_rating=("rating", "mean"),
        rated=("rating", "count"),
    ).reset_index()
    if not keys:
        out = out.drop(columns=["_key"])
    return out[columns].sort_values("calls", ascending=False, kind="stable").reset_index(drop=True)


ATTEMPT_COLUMNS = ("time", "trace_id", "role", "provider", "model", "outcome", "latency_s", "failover")


def attempt_history(
    *,
    role: str | None = None,
    since: object = None,
    until: object = None,
    limit: int | None = None,
    client: Orchestrator | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per provider call (every attempt of every stored call: winners, losers, failures).

    ``failover`` is True for a failed attempt of a call that another attempt still answered.
    Reads the traces' spans, so it is slower than `history` on a large store."""
    import pandas as pd

    from orchlab.tracking.api import reading_client, settings_for
    from orchlab.tracking.store import SEARCH_PAGE, experiment_id

    settings = settings_for(client, tracking_uri=tracking_uri, experiment=experiment)
    mlflow_client = reading_client(settings)
    exp = experiment_id(mlflow_client, settings, create=False)
    rows: list[dict[str, Any]] = []
    if exp is None:
        return pd.DataFrame(rows, columns=list(ATTEMPT_COLUMNS))
    flt = filter_string(role=role, since=since, until=until) or None
    token, seen = None, 0
    while limit is None or seen < limit:
        page = mlflow_client.search_traces(
            locations=[exp],
            filter_string=flt,
            max_results=SEARCH_PAGE if limit is None else min(SEARCH_PAGE, limit - seen),
            order_by=["timestamp_ms DESC"],
            page_token=token,
            include_spans=True,
        )
        for trace in page:
            seen += 1
            rows.extend(_attempt_rows(trace))
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows, columns=list(ATTEMPT_COLUMNS))


def _attempt_rows(trace: Any) -> list[dict[str, Any]]:
    info = trace.info
    tags = info.tags or {}
    answered = (tags.get("orchlab.status") or "ok") == "ok"
    time = dt.datetime.fromtimestamp(info.request_time / 1000, dt.UTC)
    out = []
    for span in trace.data.spans:
        attrs = span.attributes or {}
        provider = attrs.get("orchlab.provider")
        outcome = attrs.get("orchlab.outcome")
        if span.parent_id is None or provider is None or outcome is None:
            continue  # the call's root span, a tool run
        out.append(
            {
                "time": time,
                "trace_id": info.trace_id,
                "role": tags.get("orchlab.role"),
                "provider": provider,
                "model": attrs.get("orchlab.model"),
                "outcome": outcome,
                "latency_s": attrs.get("orchlab.latency_s"),
                "failover": outcome == "error" and answered,
            }
        )
    return out
