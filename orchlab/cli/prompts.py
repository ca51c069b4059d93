"""``orchlab prompt``: MLflow's prompt registry (`orchlab.tracking.prompts`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchlab.cli.common import (
    ConfigOpt,
    EnvOpt,
    JsonOpt,
    LocalUrlOpt,
    client,
    emit,
    local_only,
    options,
    print_json,
)
from orchlab.errors import PromptError

app = typer.Typer(
    help="Prompts in MLflow's registry: list, show, edit, sync from a file, import many "
    "(local only: not with --url / ORCHLAB_URL).",
    no_args_is_help=True,
)


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
    url: LocalUrlOpt = None,
) -> None:
    """A prompt's template."""
    from orchlab.tracking.prompts import load_prompt

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "prompt", "the local config's MLflow prompt registry")
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
    url: LocalUrlOpt = None,
) -> None:
    """Register the file's text as the next version of NAME."""
    from orchlab.tracking.prompts import register_prompt

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "prompt", "the local config's MLflow prompt registry")
    try:
        template = from_.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"--from {from_}: {exc.strerror}") from None
    prompt = register_prompt(name, template, commit_message=message, client=client(opts))
    if opts.json:
        print_json({"name": prompt.name, "version": prompt.version})
    else:
        print(f"{prompt.name}@{prompt.version}")


@app.command("list")
def list_(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """Every registered prompt with its latest version."""
    from orchlab.tracking.prompts import list_prompts

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "prompt", "the local config's MLflow prompt registry")
    rows = [
        {
            "name": p.name,
            "version": p.version,
            "variables": ", ".join(sorted(p.variables)),
            "aliases": ", ".join(p.aliases),
            "message": p.commit_message,
        }
        for p in list_prompts(client=client(opts))
    ]
    emit(rows, opts, title="prompts")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a YAML or JSON mapping: name -> template")],
    message: Annotated[str | None, typer.Option(help="the versions' commit message")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """Register each template of FILE as the next version of its name."""
    from orchlab.tracking.prompts import register_prompt

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "prompt", "the local config's MLflow prompt registry")
    templates = read_templates(file)
    llm = client(opts)
    rows = []
    for name, template in templates.items():
        try:
            prompt = register_prompt(
                name, template, commit_message=message or f"imported from {file.name}", client=llm
            )
        except PromptError as exc:
            raise PromptError(f"{file}: {name}: {exc}") from None
        rows.append({"name": prompt.name, "version": prompt.version})
    emit(rows, opts, title="imported prompts")


def read_templates(file: Path) -> dict[str, Any]:
    """A YAML/JSON file's ``{name: template}`` (a template: a string or a list of messages)."""
    import yaml

    try:
        text = file.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"{file}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PromptError(f"{file}{where}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or not data:
        raise PromptError(
            f"{file}: write a mapping of prompt name -> template (e.g. summarise: 'Sum up {{{{text}}}}')"
        )
    bad = [str(k) for k, v in data.items() if not isinstance(v, str | list)]
    if bad:
        raise PromptError(f"{file}: {', '.join(bad)}: a template is a string or a list of messages")
    return {str(k): v for k, v in data.items()}


@app.command("edit")
def edit(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name (its latest version), name@version or name:v1")],
    message: Annotated[str | None, typer.Option(help="the new version's commit message")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: LocalUrlOpt = None,
) -> None:
    """Open a template in $EDITOR; a changed text is registered as the next version."""
    import os
    import shlex
    import subprocess
    import tempfile

    import yaml

    from orchlab.tracking.prompts import load_prompt, register_prompt

    opts = options(ctx, config, env, json_, url)
    local_only(opts, "prompt", "the local config's MLflow prompt registry")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise PromptError("orchlab prompt edit needs an editor: set EDITOR (e.g. EDITOR=nano)")
    llm = client(opts)
    prompt = load_prompt(prompt_ref(ref), client=llm)
    is_text = isinstance(prompt.template, str)
    before = (
        prompt.template
        if isinstance(prompt.template, str)
        else yaml.safe_dump(prompt.template, allow_unicode=True, sort_keys=False)
    )
    with tempfile.TemporaryDirectory(prefix="orchlab-prompt-") as tmp:
        path = Path(tmp) / f"{prompt.name}.{'txt' if is_text else 'yaml'}"
        path.write_text(before, encoding="utf-8")
        try:
            done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except OSError as exc:
            raise PromptError(f"EDITOR={editor!r} could not be started: {exc.strerror}") from None
        if done.returncode != 0:
            raise PromptError(f"EDITOR={editor!r} exited with {done.returncode}; nothing registered")
        after = path.read_text(encoding="utf-8")
    if after == before:
        if opts.json:
            print_json({"name": prompt.name, "version": prompt.version, "changed": False})
        else:
            print(f"{prompt.ref}: unchanged")
        return
    template: Any = after
    if not is_text:
        try:
            template = yaml.safe_load(after)
        except yaml.YAMLError as exc:
            raise PromptError(f"the edited {prompt.ref} is not valid YAML: {exc}") from None
    new = register_prompt(
        prompt.name, template, commit_message=message or f"edited from version {prompt.version}", client=llm
    )
    if opts.json:
        print_json({"name": new.name, "version": new.version, "changed": True})
    else:
        print(new.ref)
