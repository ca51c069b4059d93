"""``orchlab prompt``: MLflow's prompt registry (`orchlab.tracking.prompts`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, client, options, print_json

app = typer.Typer(help="Prompts in MLflow's registry: show, sync from a file.", no_args_is_help=True)


def prompt_ref(ref: str) -> str:
    """``name:v1`` / ``name:1`` are read as ``name@1``; anything else is passed on."""
    m = re.fullmatch(r"([^:@/]+):v?(\d+)", ref.strip())
    return f"{m.group(1)}@{m.group(2)}" if m else ref


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name, name@version, name:v1 or name@alias")],
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """A prompt's template."""
    from orchlab.tracking.prompts import load_prompt

    opts = options(ctx, config, env, json_)
    prompt = load_prompt(prompt_ref(ref), client=client(opts))
    if opts.json:
        print_json({"name": prompt.name, "version": prompt.version, "template": prompt.template})
    else:
        template = prompt.template
        sys.stdout.write((template if isinstance(template, str) else str(template)).rstrip("\n") + "\n")


@app.command("sync")
def sync(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    from_: Annotated[Path, typer.Option("--from", help="a text file with the template")],
    message: Annotated[str | None, typer.Option(help="the version's commit message")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Register the file's text as the next version of NAME."""
    from orchlab.errors import PromptError
    from orchlab.tracking.prompts import register_prompt

    opts = options(ctx, config, env, json_)
    try:
        template = from_.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"--from {from_}: {exc.strerror}") from None
    prompt = register_prompt(name, template, commit_message=message, client=client(opts))
    if opts.json:
        print_json({"name": prompt.name, "version": prompt.version})
    else:
        print(f"{prompt.name}@{prompt.version}")
