"""``orchlab observe``: tables from the thread store and from MLflow's history of calls."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, client, emit, options, records
from orchlab.errors import InvalidRequestError

app = typer.Typer(help="Usage, prompts, providers and errors over time.", no_args_is_help=True)

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
) -> None:
    """Calls, tokens and cost: from the thread store (by thread/user/day) or MLflow (by role/model/...)."""
    opts = options(ctx, config, env, json_)
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
) -> None:
    """The failed calls recorded in MLflow, newest first."""
    from orchlab.tracking.history import history

    opts = options(ctx, config, env, json_)
    frame = history(role=role, status="ERROR", since=since_time(since), limit=limit, client=client(opts))
    emit(records(frame), opts, title="errors")
