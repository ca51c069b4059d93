"""The typer app: global options, one module per command group, exit codes.

Command modules import the library inside their commands, so ``orchlab --help`` loads typer and
the command signatures only, and a command builds only itself (`build`; benchmarks/cli.py).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from orchlab.cli import catalog, feedback, keys, observe, prompts, run, serve, ui
from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, Options, UrlOpt
from orchlab.errors import OrchlabError

HELP = "orchlab: roles, not hard-coded models. `orchlab COMMAND --help` for each command."
COMMANDS: dict[str, Callable[..., Any]] = {
    "run": run.run,
    "chat": run.chat,
    "models": catalog.models,
    "roles": catalog.roles,
    "serve": serve.serve,
    "ui": ui.ui,
}
GROUPS: dict[str, typer.Typer] = {
    "config": catalog.config_app,
    "prompt": prompts.app,
    "observe": observe.app,
    "feedback": feedback.app,
    "keys": keys.app,
}
ORDER = ("run", "chat", "models", "roles", "config", "prompt", "observe", "feedback", "keys", "serve", "ui")
VALUED = ("--config", "--env", "--url")
"""The global options that take a value (the next argument, or ``--opt=value``)."""


def _options(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json: JsonOpt = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False,
    url: UrlOpt = None,
) -> None:
    ctx.obj = Options(config=Path(config) if config else None, env=env, json=json, debug=debug, url=url)


def build(only: str | None = None) -> typer.Typer:
    """The app with every command, or with ``only`` that one (plus the global options).

    typer turns each command's signature into click parameters (type hints evaluated, a pydantic
    adapter per parameter) when the app is built: 0.15 s for all of them, so ``orchlab run`` builds
    ``run`` alone; ``orchlab --help`` and an unknown command get the whole app."""
    app = typer.Typer(
        name="orchlab",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: rendering it with rich doubled `orchlab --help`'s start-up
    )
    app.callback()(_options)
    for name in ORDER if only is None else (only,):
        if name in COMMANDS:
            app.command(name)(COMMANDS[name])
        else:
            app.add_typer(GROUPS[name], name=name)
    return app


def command_name(argv: list[str]) -> str | None:
    """The command ``argv`` names after the global options (None: none, or not a command)."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return None
        if arg in VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS or arg in GROUPS else None
    return None


def run_app(argv: list[str]) -> int:
    """``app`` on ``argv``, with orchlab's exit codes (no global exception hook installed)."""
    from typer._click.exceptions import ClickException  # the click typer vendors

    command = typer.main.get_command(build(command_name(argv)))
    try:
        result = command.main(args=argv, prog_name="orchlab", standalone_mode=False)
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("\ninterrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except OrchlabError as exc:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"orchlab: {exc}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
