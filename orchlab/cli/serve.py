"""``orchlab serve``: the gateway (`orchlab.serve`) on uvicorn.

For example:

    orchlab serve                                   # the embedded default, on 127.0.0.1:8000
    orchlab serve --config llm_orchestrator.yaml --port 8080 --workers 2

Ctrl-C (SIGINT) stops it with exit code 130, SIGTERM (a supervisor's stop) with 0, each after a
graceful shutdown of every worker.
"""

from __future__ import annotations

import enum
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchlab.cli.common import ConfigOpt, options
from orchlab.errors import OrchlabError

KEEP_ALIVE_S = 75
"""How long an idle client connection stays open: longer than clients keep theirs (httpx, so the
openai SDK: 5 s; aiohttp: 15 s; a load balancer: often 60 s), so a client never sends on a connection
the gateway is closing at that moment (uvicorn's own 5 s raced the SDK's 5 s: reset connections)."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    from orchlab.serve.app import AUTH_ENV, CONFIG_ENV, require_fastapi

    opts = options(ctx, config)
    try:
        require_fastapi()
        path = opts.config.expanduser().resolve() if opts.config else None
        loaded = load_config(path)  # a config error is reported here, before any worker starts
        auth = _auth_mode(loaded.gateway.auth, host)
        line = f"orchlab serve: http://{host}:{port} - {_auth_line(auth, path)}"
    except OrchlabError as exc:
        print(f"orchlab: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    import uvicorn

    if path is not None:
        os.environ[CONFIG_ENV] = str(path)
    else:
        os.environ.pop(CONFIG_ENV, None)
    os.environ[AUTH_ENV] = auth
    print(line, file=sys.stderr)
    config_ = uvicorn.Config(
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
    code = _run(config_)
    if code:
        raise typer.Exit(code)


def _run(config: Any) -> int:
    """Serve until SIGINT (exit code 130, "interrupted") or SIGTERM (0: a supervisor's requested
    stop); 1 when the server could not start (uvicorn has logged why)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    stops: list[int] = []

    class Supervisor(Multiprocess):
        def handle_int(self) -> None:
            stops.append(signal.SIGINT)
            super().handle_int()

        def handle_term(self) -> None:
            stops.append(signal.SIGTERM)
            super().handle_term()

    # one worker: uvicorn's server restores these handlers when it has shut down and re-raises
    # the signal it caught, so they record it (uvicorn.run would turn SIGINT into exit code 0
    # and die of SIGTERM)
    previous = {sig: signal.signal(sig, lambda sig, frame: stops.append(sig)) for sig in STOP_SIGNALS}
    try:
        if config.workers > 1:
            Supervisor(config, sockets=[config.bind_socket()]).run()
        else:
            server = uvicorn.Server(config)
            server.run()
            if not server.started and not stops:
                return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 130 if signal.SIGINT in stops else 0


def _auth_mode(configured: str | None, host: str) -> str:
    """``gateway.auth``, else ``none`` on a loopback address and ``keys`` anywhere else; an open
    gateway off loopback is refused."""
    from orchlab.errors import InvalidRequestError
    from orchlab.serve.auth import is_loopback

    loopback = is_loopback(host)
    auth = configured or ("none" if loopback else "keys")
    if auth == "none" and not loopback:
        raise InvalidRequestError(
            f"gateway.auth is none but --host {host} is not a loopback address: anyone who "
            "reaches it could spend the config's keys. Use gateway.auth: keys (orchlab keys create)."
        )
    return auth


def _auth_line(auth: str, config: Path | None) -> str:
    if auth == "none":
        return "auth: none (open, loopback only; gateway.auth: keys requires API keys)"
    from orchlab.orchestrator import get_llm_client
    from orchlab.store.api import settings_of

    client = get_llm_client(config)
    try:
        where = settings_of(client).safe_url
    finally:
        client.close()
    return f"auth: keys (every request but /healthz and /readyz needs one; keys in {where})"
