"""The ``%%llm`` cell magic and the ``%llm`` line magic. Thin: parse, call, translate errors.

Bad options raise IPython's ``UsageError`` with the usage line. A failed call (provider, auth,
budget, config) raises `LLMCallError`, a ``UsageError`` whose ``_render_traceback_`` makes IPython
show one line naming the error, role and target, not a traceback into orchlab.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from orchlab.notebook.session import NotebookSession, get_session


class LLMCallError(UsageError):
    """A ``%%llm`` call failed (provider, auth, budget, config): one message, no traceback.

    The library's error is on ``__cause__`` (``%debug`` reaches it); IPython shows only the message.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m{self}\x1b[0m"]


@magics_class
class OrchlabMagics(Magics):
    def __init__(self, shell: Any, session: NotebookSession | None = None) -> None:
        super().__init__(shell)
        self._session = session

    @property
    def session(self) -> NotebookSession:
        """The session given, else the process's (so tests and widgets can swap it)."""
        return self._session if self._session is not None else get_session()

    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """%%llm [options]: the cell is the prompt. %llm SUBCOMMAND: roles, models, use, ... (%llm help)."""
        from orchlab.errors import OrchlabError
        from orchlab.notebook.args import ArgsError
        from orchlab.notebook.cell import CellError, CellUsageError, describe_error
        from orchlab.notebook.interpolate import InterpolationError

        failure: UsageError
        try:
            if cell is None:
                from orchlab.notebook.args import parse_line_args
                from orchlab.notebook.commands import run_command

                return run_command(self.shell, self.session, parse_line_args(line))
            from orchlab.notebook.args import parse_cell_args
            from orchlab.notebook.cell import run_cell

            run_cell(self.shell, self.session, parse_cell_args(line), cell)
            return None
        except (ArgsError, InterpolationError, CellUsageError) as exc:
            failure = UsageError(str(exc))
        except CellError as exc:
            failure = LLMCallError(str(exc))
            failure.__cause__ = exc.__cause__
        except OrchlabError as exc:  # config and rebind errors outside a call
            failure = LLMCallError(describe_error(exc))
            failure.__cause__ = exc
        # Raised outside the handlers, so IPython's view is not the chain of internal frames.
        raise failure
