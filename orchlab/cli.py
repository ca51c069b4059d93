"""The ``orchlab`` command. ``orchlab serve``: the gateway (`orchlab.serve`) on uvicorn.

Example::

    orchlab serve                                   # the embedded default, on 127.0.0.1:8000
    orchlab serve --config llm_orchestrator.yaml --port 8080 --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchlab.errors import OrchlabError

KEEP_ALIVE_S = 75
"""How long an idle client connection stays open: longer than clients keep theirs (httpx, so the
openai SDK: 5 s; aiohttp: 15 s; a load balancer: often 60 s), so a client never sends on a connection
the gateway is closing at that moment (uvicorn's own 5 s raced the SDK's 5 s: reset connections)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchlab", description="orchlab: roles, not hard-coded models")
    commands = p.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the config's roles over an OpenAI-compatible API")
    serve.add_argument("--config", type=Path, help="the YAML config (default: the embedded local one)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes, one client each (default: 1)"
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off: answers carry x-request-id, and are traced when tracking is on)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return serve(args)
    except OrchlabError as exc:
        print(f"orchlab: {exc}", file=sys.stderr)
        return 2


def serve(args: argparse.Namespace) -> int:
    from orchlab.config.loader import load_config
    from orchlab.serve.app import CONFIG_ENV, require_fastapi

    require_fastapi()
    import uvicorn

    config = args.config.expanduser().resolve() if args.config else None
    load_config(config)  # a config error is reported here, before any worker starts
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    else:
        os.environ.pop(CONFIG_ENV, None)
    uvicorn.run(
        "orchlab.serve.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=None,
    )
    return 0
