"""``orchlab keys``: the gateway's API keys (the keys issue).

The slot for ``create|list|revoke``: each command is a thin function here that calls the key module
of `orchlab.store` (imported inside the command, so ``orchlab --help`` stays fast) and prints with
`orchlab.cli.common.emit` (``--json`` for scripts). Registered in `orchlab.cli.app` once it has
commands: typer refuses a group without any.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="The gateway's API keys: create, list, revoke.", no_args_is_help=True)
