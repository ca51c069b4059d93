"""``orchlab serve``: the gateway (`orchlab.serve`) on uvicorn.

Example::

    orchlab serve                                   # the embedded default, on 127.0.0.1:8000
    orchlab serve --config llm_orchestrator.yaml --port 8080 --workers 2
"""

from __future__ import annotations

import enum
import os
import sys
from typing import Annotated

import typer

from orchlab.cli.common import ConfigOpt, options
from orchlab.errors import OrchlabError

KEEP_ALIVE_S = 75
"""How long an idle client connection stays open: longer than clients keep theirs (httpx, so the
openai SDK: 5 s; aiohttp: 15 s; a load balancer: often 60 s), so a client never sends on a connection
the gateway is closing at that moment (uvicorn's own 5 s raced the SDK's 5 s: reset connections)."""


class LogLevel(enum.StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def serve(
    ctx: typer.Context,
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="address to bind (loopback only by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes, one client each")] = 1,
    log_level: Annotated[LogLevel, typer.Option()] = LogLevel.info,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log",
            help="log a line per request (off: answers carry x-request-id; traced when tracking is on)",
        ),
    ] = False,
) -> None:
    """Serve the config's roles over an OpenAI-compatible API."""
    from orchlab.config.loader import load_config
    from orchlab.serve.app import CONFIG_ENV, require_fastapi

    opts = options(ctx, config)
    try:
        require_fastapi()
        path = opts.config.expanduser().resolve() if opts.config else None
        load_config(path)  # a config error is reported here, before any worker starts
    except OrchlabError as exc:
        print(f"orchlab: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    import uvicorn

    if path is not None:
        os.environ[CONFIG_ENV] = str(path)
    else:
        os.environ.pop(CONFIG_ENV, None)
    uvicorn.run(
        "orchlab.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.value,
        access_log=access_log,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=None,
    )
