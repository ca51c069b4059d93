"""The ``%llm`` line magic's subcommands. Each returns something that displays itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchlab.notebook.args import LineArgs, line_help
from orchlab.notebook.cell import CellUsageError
from orchlab.notebook.session import NotebookSession
from orchlab.render import Table, params_text

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator


FLUSH_TIMEOUT_S = 60.0


class Message:
    """A short confirmation line (plain text everywhere)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def run_command(shell: Any, session: NotebookSession, args: LineArgs) -> Any:
    handler = _HANDLERS[args.command]
    return handler(session, args)


def roles_table(client: Orchestrator) -> Table:
    rows = []
    for role in client.roles():
        spec = client.config.roles[role]
        resolved = client.resolve(role)
        rebound = (resolved.provider, resolved.model) != (spec.provider, spec.model)
        rows.append(
            [
                role,
                resolved.provider,
                resolved.model,
                "session" if rebound else "config",
                params_text(resolved.params.as_dict()),
                spec.description or "",
            ]
        )
    return Table(["role", "provider", "model", "bound by", "params", "description"], rows)


def _roles(session: NotebookSession, args: LineArgs) -> Table:
    return roles_table(session.client)


def config_summary(client: Orchestrator) -> Table:
    c = client.config
    rows = [
        ["file", str(client.config_path) if client.config_path else "(built in Python)"],
        ["project", c.project],
        ["env", c.env],
        ["providers", ", ".join(sorted(c.providers)) or "none"],
        ["roles", ", ".join(client.roles()) or "none"],
    ]
    return Table(["setting", "value"], rows)


def _config(session: NotebookSession, args: LineArgs) -> Table:
    client = session.use_config(args.path) if args.path is not None else session.client
    return config_summary(client)


def _use(session: NotebookSession, args: LineArgs) -> Message:
    assert args.role is not None and args.target is not None  # the parser requires both
    client = session.client
    before = client.resolve(args.role).target
    after = client.rebind(args.role, args.target).target
    return Message(
        f"{args.role}: {before} → {after} (for this session; the YAML is unchanged — "
        "the model picker's Save writes it)"
    )


def _models(session: NotebookSession, args: LineArgs) -> Any:
    """The catalog as a DataFrame: target, tier, local, capabilities, context window, prices."""
    frame = session.client.catalog.frame(
        capability=args.capability, tier=args.tier, max_cost=args.max_cost, local=args.local
    )
    if frame.empty:
        return Message("no model in this config's catalog matches those filters")
    return frame


def _usage(session: NotebookSession, args: LineArgs) -> Any:
    """This session's provider calls by role, provider, model and strategy (``client.usage()``)."""
    return session.client.usage()


def _budget(session: NotebookSession, args: LineArgs) -> Table:
    rows = [
        [
            row["scope"],
            _money(row["limit_usd"]),
            _money(row["spent_usd"]),
            _money(row["reserved_usd"]),
            _money(row["remaining_usd"]),
        ]
        for row in session.client.budgets.summary()
    ]
    return Table(["budget", "limit", "spent", "reserved", "remaining"], rows)


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return "$0" if value == 0 else f"${value:.6f}".rstrip("0").rstrip(".")


def _history(session: NotebookSession, args: LineArgs) -> Any:
    """Past calls from MLflow, newest first (``orchlab.history``)."""
    from orchlab.tracking.history import history

    return history(role=args.role, limit=args.limit, client=session.client)


def _mlflow(session: NotebookSession, args: LineArgs) -> Any:
    """Wait for the traces to be written, then say which store they are in and how to open it."""
    from orchlab.tracking.api import flush
    from orchlab.tracking.ui import ui_hint

    client = session.client
    if client.tracking.settings.enabled:
        flush(timeout=FLUSH_TIMEOUT_S)  # the UI then shows every call made so far
    return ui_hint(client.tracking.settings, args.port)


def _chats(session: NotebookSession, args: LineArgs) -> Table | Message:
    if not len(session.chats):
        return Message("no conversations yet: start one with %%llm --chat NAME")
    return session.chats.table()


def _reset(session: NotebookSession, args: LineArgs) -> Message:
    try:
        names = session.chats.reset(args.name)
    except KeyError as exc:
        raise CellUsageError(exc.args[0]) from None
    return Message(f"forgot {', '.join(names)}" if names else "no conversations to forget")


def _help(session: NotebookSession, args: LineArgs) -> Message:
    from orchlab.notebook.args import cell_parser

    return Message(
        f"{line_help()}\n\n{cell_parser().format_usage().strip()}\n  (%%llm --help for the options)"
    )


_HANDLERS = {
    "roles": _roles,
    "models": _models,
    "usage": _usage,
    "budget": _budget,
    "history": _history,
    "mlflow": _mlflow,
    "config": _config,
    "use": _use,
    "chats": _chats,
    "reset": _reset,
    "help": _help,
}
