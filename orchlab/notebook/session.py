"""The notebook's state: which config its client uses, its rebinds, its conversations.

One `NotebookSession` per IPython shell (`%load_ext orchlab` creates it). Widgets and magics
share it, so a role rebound in the model picker is what the next ``%%llm`` cell uses.

For example:

    from orchlab.notebook import get_session
    client = get_session().client          # the same client the %%llm cells use
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from orchlab.notebook.chats import ChatStore

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.types import LLMResponse

LiveMode = Literal["display", "print", "off"]
PREFERRED_ROLE = "llm.inference"


class NotebookSession:
    def __init__(self, config_path: str | Path | None = None) -> None:
        self.config_path: Path | None = _resolve(config_path)
        self._clients: dict[Path | None, Orchestrator] = {}
        self.chats = ChatStore()
        self.last: LLMResponse | None = None
        self.live_mode: LiveMode | None = None
        """How ``%%llm`` streams: a display that updates (kernels), printed deltas (terminal)."""
        self.live_interval_s = 0.05
        """The least time between two updates of a streaming display."""

    @property
    def client(self) -> Orchestrator:
        """The client for the session's config (built on first use)."""
        return self.client_for(None)

    def client_for(self, config_path: str | Path | None) -> Orchestrator:
        """The client for ``config_path`` (None: the session's own), built once and reused."""
        path = _resolve(config_path) if config_path is not None else self.config_path
        client = self._clients.get(path)
        if client is None:
            from orchlab.orchestrator import get_llm_client

            client = self._clients[path] = get_llm_client(path)
        return client

    def use_config(self, path: str | Path) -> Orchestrator:
        """Make ``path`` the session's config (loaded now, so errors show at once)."""
        resolved = _resolve(path)
        client = self.client_for(resolved)
        self.config_path = resolved
        return client

    def set_client(self, client: Orchestrator) -> None:
        """Use an existing client (e.g. one built in Python) for the magics and widgets."""
        self.config_path = client.config_path
        self._clients[client.config_path] = client

    def default_role(self, client: Orchestrator) -> str:
        """``llm.inference`` when the config has it, else its only role."""
        roles = client.roles()
        if PREFERRED_ROLE in roles:
            return PREFERRED_ROLE
        if len(roles) == 1:
            return roles[0]
        raise LookupError(
            f"this config has no {PREFERRED_ROLE!r} role; name one with -r ROLE "
            f"(roles: {', '.join(roles) or 'none'})"
        )

    def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __repr__(self) -> str:
        return f"NotebookSession(config_path={self.config_path!s}, chats={self.chats.names()!r})"


def _resolve(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser().resolve()


_session: NotebookSession | None = None


def get_session() -> NotebookSession:
    """The process-wide notebook session (one kernel, one session)."""
    global _session
    if _session is None:
        _session = NotebookSession()
    return _session


def set_session(session: NotebookSession | None) -> None:
    global _session
    _session = session
