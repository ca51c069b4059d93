"""``orchlab feedback rate|show``: ratings in MLflow and the thread store (`Orchestrator.feedback`)."""

from __future__ import annotations

from typing import Annotated

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, client, emit, options, print_json
from orchlab.errors import InvalidRequestError

app = typer.Typer(help="Rate answers and read the ratings.", no_args_is_help=True)


def parse_rating(value: str) -> str | int:
    """``up``/``down`` (👍/👎) or 1-5 stars."""
    low = value.strip().lower()
    if low in ("up", "down"):
        return low
    if low.isdigit() and 1 <= int(low) <= 5:
        return int(low)
    raise InvalidRequestError(f"rating {value!r}: up, down or 1-5", parameter="rating")


@app.command("rate")
def rate(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="a message id or a trace id")],
    rating: Annotated[str, typer.Argument(help="up, down or 1-5")],
    comment: Annotated[str | None, typer.Option(help="why")] = None,
    user: Annotated[str | None, typer.Option(help="who rates (default: the config's user)")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Rate an answer: thumbs up/down or 1-5 stars."""
    opts = options(ctx, config, env, json_)
    value = parse_rating(rating)
    client(opts).feedback(target, value, comment=comment, user=user)
    if opts.json:
        print_json({"target": target, "rating": value, "comment": comment})
    else:
        print(f"rated {target}: {rating}")


@app.command("show")
def show(
    ctx: typer.Context,
    thread: Annotated[str, typer.Argument(help="a thread id or name")],
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The ratings of a thread's answers."""
    from orchlab.errors import StoreError

    opts = options(ctx, config, env, json_)
    store = client(opts).store
    info = store.thread(thread)
    if info is None:
        raise StoreError(f"no thread {thread!r} in the store")
    rows = store.thread_feedback(info.id)
    columns = ["message_id", "answer", "user", "kind", "value", "comment", "rated_at"]
    emit(rows, opts, columns=columns, title="ratings")
