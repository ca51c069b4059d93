"""``orchlab feedback rate|show``: ratings in MLflow and the thread store (`Orchestrator.feedback`);
``rate`` with ``--url`` through a gateway's ``POST /feedback``."""

from __future__ import annotations

from typing import Annotated

import typer

from orchlab.cli.common import (
    ConfigOpt,
    EnvOpt,
    JsonOpt,
    LocalUrlOpt,
    UrlOpt,
    client,
    emit,
    local_only,
    options,
    print_json,
)
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
    target: Annotated[str, typer.Argument(help="a message id or a trace id (a message id with --url)")],
    rating: Annotated[str, typer.Argument(help="up, down or 1-5")],
    comment: Annotated[str | None, typer.Option(help="why")] = None,
    user: Annotated[
        str | None, typer.Option(help="who rates (default: the config's user; with --url: the key's)")
    ] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Rate an answer: thumbs up/down or 1-5 stars (with --url: an answer stored by the gateway)."""
    opts = options(ctx, config, env, json_, url)
    value = parse_rating(rating)
    if opts.url:
        from orchlab.cli.remote import Gateway

        rated = Gateway(opts.url).feedback(target, value, comment, user)
        if opts.json:
            print_json({"target": target, "rating": value, "comment": comment, "url": opts.url, **rated})
        else:
            print(f"rated {target}: {rating}")
        return
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
    url: LocalUrlOpt = None,
) -> None:
    """The ratings of a thread's answers, from the local store (not with --url / ORCHLAB_URL)."""
    from orchlab.errors import StoreError

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "feedback show", "the ratings in the local thread store")
    store = client(opts).store
    info = store.thread(thread)
    if info is None:
        raise StoreError(f"no thread {thread!r} in the store")
    rows = store.thread_feedback(info.id)
    columns = ["message_id", "answer", "user", "kind", "value", "comment", "rated_at"]
    emit(rows, opts, columns=columns, title="ratings")
