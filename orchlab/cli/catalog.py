"""``orchlab models``, ``orchlab roles``, ``orchlab config check`` and ``orchlab config show``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, UrlOpt, client, emit, options, print_json
from orchlab.errors import ConfigError, InvalidRequestError, OrchlabError

MODEL_COLUMNS = (
    "target",
    "tier",
    "local",
    "capabilities",
    "context_window",
    "input_per_mtok",
    "output_per_mtok",
)


def models(
    ctx: typer.Context,
    capability: Annotated[str | None, typer.Option(help="chat, embedding, tools, vision, ...")] = None,
    tier: Annotated[str | None, typer.Option(help="fast, standard or advanced")] = None,
    max_cost: Annotated[float | None, typer.Option(help="USD per call of 1000 tokens in and 500 out")] = None,
    local: Annotated[bool | None, typer.Option("--local/--remote", help="only local or only remote")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """The models this config reaches, with prices (USD per million tokens) and context."""
    opts = options(ctx, config, env, json_, url)
    if opts.url:
        from orchlab.cli.remote import Gateway

        if any(v is not None for v in (capability, tier, max_cost, local)):
            raise InvalidRequestError(
                "--capability, --tier, --max-cost and --local filter the local catalog only, "
                "not a gateway's models (--url / ORCHLAB_URL)",
                parameter="url",
            )
        emit(Gateway(opts.url).models(), opts, columns=("target", "owned_by"), title="models")
        return
    infos = client(opts).catalog.list_models(capability=capability, tier=tier, max_cost=max_cost, local=local)
    emit([info.as_row() for info in infos], opts, columns=MODEL_COLUMNS, title="models")


def roles(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """What each role resolves to now (provider, model, strategy); with --url, a gateway's roles."""
    opts = options(ctx, config, env, json_, url)
    if opts.url:
        from orchlab.cli.remote import Gateway

        emit(
            Gateway(opts.url).roles(),
            opts,
            columns=("role", "target", "strategy", "description"),
            title="roles",
        )
        return
    llm = client(opts)
    rows: list[dict[str, Any]] = []
    for name in llm.roles():
        spec = llm.config.roles[name]
        row: dict[str, Any] = {"role": name, "strategy": _strategy(spec), "target": None, "kind": None}
        try:
            if spec.select is not None and not llm.is_rebound(name):
                row["target"] = llm.selection(name).chosen.target
            else:
                row["target"] = llm.binding(name).target
            row["kind"] = llm.role_kind(name)
        except OrchlabError as exc:  # a role that cannot resolve now says why, the others still show
            row["problem"] = str(exc).splitlines()[0]
        rows.append(row)
    columns = ["role", "target", "strategy", "kind"] + (
        ["problem"] if any("problem" in r for r in rows) else []
    )
    emit(rows, opts, columns=columns, title="roles")


def _strategy(spec: Any) -> str | None:
    if spec.strategy is not None:
        return str(spec.strategy)
    if spec.candidates:
        return "candidates"
    if spec.fallbacks:
        return "fallback"
    if spec.select is not None:
        return "select"
    return None


config_app = typer.Typer(help="Check or show a config file (local only).", no_args_is_help=True)


@config_app.command("check")
def check(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="the YAML (default: --config, else embedded)")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate a config: every problem with its line; exit 1 when there is one.

    Local only: it reads the YAML file here (--url / ORCHLAB_URL play no part; a gateway's
    config is checked where it runs, or read with `orchlab --url URL roles`)."""
    from orchlab.config.loader import check_env, load_config

    opts = options(ctx, config, env, json_)
    path = file or opts.config
    source = str(path) if path is not None else "the embedded default config"
    try:
        loaded = load_config(path)
        if opts.env is not None:
            check_env(loaded, opts.env, source=source)
    except ConfigError as exc:
        problems = getattr(exc, "problems", None) or [("", str(exc))]
        if opts.json:
            print_json(
                {"ok": False, "file": source, "message": str(exc), "problems": [list(p) for p in problems]}
            )
        else:
            print(f"orchlab: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if opts.json:
        print_json({"ok": True, "file": source, "roles": sorted(loaded.roles)})
    else:
        print(f"{source}: ok ({len(loaded.roles)} roles)")


@config_app.command("show")
def show(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="the YAML (default: --config, else embedded)")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print a config file as written (default: the embedded one; a start for your own:
    ``orchlab config show > llm_orchestrator.yaml``)."""
    from orchlab.config.loader import default_config_path, read_config_text

    opts = options(ctx, config, None, json_)
    path = file or opts.config or default_config_path()
    text = read_config_text(Path(path).expanduser())
    if opts.json:
        print_json({"file": str(path), "text": text})
    else:
        sys.stdout.write(text)
