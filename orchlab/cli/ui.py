"""``orchlab ui``: MLflow's UI on the configured store, on loopback (`orchlab.tracking.ui`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, client, options


def ui(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="default: ORCH_MLFLOW_PORT, else 5000")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
) -> None:
    """Start MLflow's UI on the config's tracking store; Ctrl-C stops it and its workers."""
    from orchlab.tracking.ui import server_command, ui_base

    settings = client(options(ctx, config, env)).tracking.settings
    command = server_command(settings, port)
    url = ui_base(settings, port)
    if command is None:  # the store is an MLflow server: its UI is already there
        print(url)
        return
    print(f"MLflow UI on {settings.tracking_uri}: {url}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    terminated: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    # SIGTERM (a supervisor's stop) stops the server as Ctrl-C does, then exits with 0
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        # its own process group: stopping it stops the server and every worker it started
        proc = subprocess.Popen(command, shell=True, start_new_session=True)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            _stop_group(proc)
            if terminated:
                return
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code:
        raise typer.Exit(1)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 10 s; a second Ctrl-C or SIGTERM
    meanwhile does not leave it half stopped."""
    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)
