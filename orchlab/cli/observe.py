"""``orchlab observe``: tables from the thread store and from MLflow's history of calls."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from orchlab.cli.common import (
    ConfigOpt,
    EnvOpt,
    JsonOpt,
    LocalUrlOpt,
    client,
    emit,
    local_only,
    options,
    records,
)
from orchlab.errors import InvalidRequestError

app = typer.Typer(
    help="Usage, prompts, providers and errors over time, from the local thread store and MLflow "
    "history (local only: not with --url / ORCHLAB_URL).",
    no_args_is_help=True,
)

Since = Annotated[str | None, typer.Option(help="7d, 12h, 30m or an ISO date")]


def since_time(value: str | None) -> datetime | None:
    """``"7d"`` → seven days ago (UTC); an ISO date as written; None: all time."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(
            f"--since {value!r}: 7d, 12h, 30m or an ISO date", parameter="since"
        ) from None


@app.command("usage")
def usage(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option(help="thread, user, day (store); role, model, provider (MLflow)")
    ] = "day",
    since: Since = None,
    role: Annotated[str | None, typer.Option(help="only this role (MLflow history)")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """Calls, tokens and cost: from the thread store (by thread/user/day) or MLflow (by role/model/...)."""
    opts = options(ctx, config, env, json_, url)
    local_only(opts, "observe", "the local thread store and MLflow history")
    llm = client(opts)
    if by in ("thread", "user", "day") and since is None and role is None:
        frame = llm.store.usage(by)
    else:
        from orchlab.tracking.history import usage_history

        frame = usage_history(by, since=since_time(since), role=role, client=llm)
    emit(records(frame), opts, title="usage")


@app.command("errors")
def errors(
    ctx: typer.Context,
    since: Since = None,
    role: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """The failed calls recorded in MLflow, newest first."""
    from orchlab.tracking.history import history

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "observe", "the local thread store and MLflow history")
    frame = history(role=role, status="ERROR", since=since_time(since), limit=limit, client=client(opts))
    emit(records(frame), opts, title="errors")


@app.command("prompts")
def prompts(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="version (prompt and version), prompt, or role")] = "version",
    since: Since = None,
    role: Annotated[str | None, typer.Option(help="only this role")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """Calls and ratings per registered prompt version (MLflow history)."""
    from orchlab.tracking.history import history

    keys = {"version": ["prompt", "version"], "prompt": ["prompt"], "role": ["prompt", "version", "role"]}
    if by not in keys:
        raise InvalidRequestError(f"--by {by!r}: use version, prompt or role", parameter="by")
    opts = options(ctx, config, env, json_, url)
    local_only(opts, "observe", "the local thread store and MLflow history")
    frame = history(role=role, since=since_time(since), limit=None, client=client(opts))
    frame = frame[frame["prompt_name"].notna()]
    rows: list[dict[str, object]] = []
    if not frame.empty:
        # a call made from two prompts counts for each of them
        pairs = frame.assign(
            _pv=[
                list(zip(str(n).split(","), str(v).split(","), strict=False))
                for n, v in zip(frame["prompt_name"], frame["prompt_version"], strict=True)
            ]
        ).explode("_pv")
        pairs["prompt"] = [p[0] for p in pairs["_pv"]]
        pairs["version"] = [p[1] for p in pairs["_pv"]]
        pairs["_error"] = pairs["status"].eq("error")
        pairs["_up"] = pairs["thumbs"].eq(True)
        pairs["_down"] = pairs["thumbs"].eq(False)
        pairs["rating"] = pairs["rating"].astype("float")
        grouped = pairs.groupby(keys[by], dropna=False).agg(
            calls=("trace_id", "count"),
            errors=("_error", "sum"),
            rated=("rating", "count"),
            mean_rating=("rating", "mean"),
            thumbs_up=("_up", "sum"),
            thumbs_down=("_down", "sum"),
            cost_usd=("cost_usd", "sum"),
            p50_latency_s=("latency_s", "median"),
        )
        rows = records(grouped.reset_index())
    emit(rows, opts, title="prompts")


@app.command("providers")
def providers(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="provider, model, role or day")] = "provider",
    since: Since = None,
    role: Annotated[str | None, typer.Option(help="only the calls of this role")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """Per provider: calls (every attempt), error rate, p50/p95 latency, failovers (MLflow history)."""
    from orchlab.tracking.history import attempt_history

    keys = {
        "provider": ["provider"],
        "model": ["provider", "model"],
        "role": ["provider", "role"],
        "day": ["provider", "day"],
    }
    if by not in keys:
        raise InvalidRequestError(f"--by {by!r}: use provider, model, role or day", parameter="by")
    opts = options(ctx, config, env, json_, url)
    local_only(opts, "observe", "the local thread store and MLflow history")
    frame = attempt_history(role=role, since=since_time(since), client=client(opts))
    rows: list[dict[str, object]] = []
    if not frame.empty:
        frame = frame.assign(
            day=frame["time"].dt.strftime("%Y-%m-%d"),
            _error=frame["outcome"].eq("error"),
            latency_s=frame["latency_s"].astype("float"),
        )
        frame["role"] = frame["role"].fillna("-")
        grouped = frame.groupby(keys[by], dropna=False).agg(
            calls=("trace_id", "count"),
            errors=("_error", "sum"),
            p50_latency_s=("latency_s", "median"),
            p95_latency_s=("latency_s", lambda s: s.quantile(0.95)),
            failovers=("failover", "sum"),
        )
        grouped.insert(2, "error_rate", grouped["errors"] / grouped["calls"])
        rows = records(grouped.reset_index().sort_values(keys[by], kind="stable"))
    emit(rows, opts, title="providers")
