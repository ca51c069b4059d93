"""The ``orchlab`` command (typer + rich, the ``cli`` extra): the library does the work, the CLI prints.

For example:

    orchlab run llm.preprocess "What is 2+2?"
    echo "Summarise this" | orchlab run llm.inference -s "Be brief" -p temperature=0
    orchlab serve --config llm_orchestrator.yaml --port 8080

Exit codes: 0 ok, 1 an orchlab error (its message, no traceback unless ``--debug``), 2 a usage
error, 130 interrupted. ``import orchlab`` never imports this package, nor typer or rich.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv``: the arguments after the program name; None: ``sys.argv``)."""
    try:
        import typer  # noqa: F401
    except ImportError:
        print("orchlab: the command line needs typer and rich: pip install 'orchlab[cli]'", file=sys.stderr)
        return 1
    from orchlab.cli.app import run_app

    return run_app(list(sys.argv[1:] if argv is None else argv))
