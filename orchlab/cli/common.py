"""What every command shares: the ``--config``/``--env``/``--json`` options, the client, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from orchlab.orchestrator import Orchestrator

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="the YAML config (default: the embedded local one)"),
]
EnvOpt = Annotated[str | None, typer.Option("--env", help="the config env to use (default: ORCH_ENV)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="ORCHLAB_URL",
        help="a running gateway (orchlab serve) to act on instead of the local config; "
        "its key from ORCHLAB_API_KEY",
    ),
]

LocalUrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="ORCHLAB_URL", hidden=True, help="refused: a local-only command"),
]
"""``--url`` on a command with no gateway endpoint: accepted by the parser only to be refused
with a clear usage error (`local_only`), never silently ignored."""


@dataclass
class Options:
    """The global options (``orchlab --config X run ...``); a command's own ``--config`` wins."""

    config: Path | None = None
    env: str | None = None
    json: bool = False
    debug: bool = False
    url: str | None = None


def options(
    ctx: typer.Context,
    config: Path | None = None,
    env: str | None = None,
    json: bool = False,
    url: str | None = None,
) -> Options:
    base = ctx.find_root().obj if isinstance(ctx.find_root().obj, Options) else Options()
    return Options(
        config=config if config is not None else base.config,
        env=env if env is not None else base.env,
        json=json or base.json,
        debug=base.debug,
        url=url if url is not None else base.url,
    )


def local_only(opts: Options, command: str, reads: str) -> None:
    """A usage error (exit 2) when ``command``, which ``reads`` locally and has no gateway
    endpoint, is given ``--url`` / ``ORCHLAB_URL``: rather than answering from the local store
    while the user believes it is the gateway's."""
    if opts.url:
        raise typer.BadParameter(
            f"orchlab {command} reads {reads}; no gateway endpoint serves it. Run it where that "
            "store is, without --url (unset ORCHLAB_URL)",
            param_hint="'--url' / ORCHLAB_URL",
        )


def client(opts: Options) -> Orchestrator:
    import gc

    from orchlab.orchestrator import get_llm_client

    llm = get_llm_client(opts.config, env=opts.env)
    # Imports, config and client are built and live as long as the process: frozen, the cyclic
    # collector stops scanning their ~70k objects on each collection while the model loads and
    # generates (about 0.03 s CPU of a one-shot `orchlab run`).
    gc.freeze()
    return llm


def console(stderr: bool = False) -> Console:
    """A rich console: colour and widths only on a terminal (plain text when piped)."""
    from rich.console import Console

    return Console(
        stderr=stderr, highlight=False, soft_wrap=not (sys.stderr if stderr else sys.stdout).isatty()
    )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False, indent=2) + "\n")


def records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as JSON-ready dicts (NaN as null)."""
    out = json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))
    return list(out)


def table(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, title: str | None = None
) -> None:
    """``rows`` as a rich table on stdout."""
    from rich.table import Table

    cols = list(columns) if columns is not None else list(rows[0]) if rows else []
    t = Table(title=title)
    for col in cols:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(_cell(row.get(c)) for c in cols))
    console().print(t)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def emit(
    rows: Sequence[Mapping[str, Any]],
    opts: Options,
    columns: Iterable[str] | None = None,
    title: str | None = None,
) -> None:
    """Rows as JSON (``--json``) or a table."""
    if opts.json:
        print_json(list(rows))
    elif not rows:
        console(stderr=True).print(f"no {title or 'rows'}")
    else:
        table(rows, columns, title)
