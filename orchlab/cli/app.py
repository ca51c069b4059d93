"""The typer app: global options, one module per command group, exit codes.

Command modules import the library inside their commands, so ``orchlab --help`` loads typer and
the command signatures only (benchmarks/cli.py).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from orchlab.cli import catalog, feedback, keys, observe, prompts, run, serve, ui
from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, Options, UrlOpt
from orchlab.errors import OrchlabError

app = typer.Typer(
    name="orchlab",
    help="orchlab: roles, not hard-coded models. `orchlab COMMAND --help` for each command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich doubled `orchlab --help`'s start-up
)


@app.callback()
def _options(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json: JsonOpt = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False,
    url: UrlOpt = None,
) -> None:
    ctx.obj = Options(config=Path(config) if config else None, env=env, json=json, debug=debug, url=url)


app.command()(run.run)
app.command()(run.chat)
app.command()(catalog.models)
app.command()(catalog.roles)
app.add_typer(catalog.config_app, name="config")
app.add_typer(prompts.app, name="prompt")
app.add_typer(observe.app, name="observe")
app.add_typer(feedback.app, name="feedback")
app.add_typer(keys.app, name="keys")
app.command()(serve.serve)
app.command()(ui.ui)


def run_app(argv: list[str]) -> int:
    """``app`` on ``argv``, with orchlab's exit codes (no global exception hook installed)."""
    from typer._click.exceptions import ClickException  # the click typer vendors

    command = typer.main.get_command(app)
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
