"""Named conversations for ``%%llm --chat NAME --depth N``: each is a stored thread
(`orchlab.store`), so a chat survives a kernel restart; a call sends its last N exchanges.

For example:

    chats = ChatStore()
    chat = chats.get("review", depth=2, client=client)
    turn = chat.begin("and now?", system=None)     # turn.sent: the last 2 exchanges + the question
    response = chat.finish(turn, client.run("llm.inference", list(turn.sent)))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchlab.render import Table

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.store.thread import Thread, Turn
    from orchlab.types import LLMResponse

DEFAULT_DEPTH = 5


@dataclass
class Chat:
    name: str
    depth: int
    thread: Thread

    def begin(self, prompt: str, *, system: str | None = None) -> Turn:
        """What to send: ``system``, the last ``depth`` exchanges of the thread, ``prompt``."""
        self.thread.context_depth = 2 * self.depth
        self.thread.system = system
        return self.thread.begin(prompt)

    def finish(self, turn: Turn, response: LLMResponse) -> LLMResponse:
        """Store the exchange; the response with its ``message_id`` (what the rating widget rates)."""
        return self.thread.finish(turn, response)


class ChatStore:
    """The notebook's conversations used in this session, by name (their threads are stored)."""

    def __init__(self) -> None:
        self._chats: dict[str, Chat] = {}

    def get(self, name: str, depth: int | None = None, *, client: Orchestrator) -> Chat:
        chat = self._chats.get(name)
        if chat is None or chat.thread.client is not client:
            thread = client.thread(name)
            chat = self._chats[name] = Chat(name, depth or DEFAULT_DEPTH, thread)
        elif depth is not None:
            chat.depth = depth
        return chat

    def __contains__(self, name: object) -> bool:
        return name in self._chats

    def __len__(self) -> int:
        return len(self._chats)

    def names(self) -> list[str]:
        return sorted(self._chats)

    def reset(self, name: str | None = None) -> list[str]:
        """Start one conversation (or all) afresh: the next call sends no history. The stored
        messages stay (a new branch starts); returns the names reset."""
        if name is not None and name not in self._chats:
            known = ", ".join(self.names()) or "none"
            raise KeyError(f"no conversation named {name!r} (conversations: {known})")
        names = self.names() if name is None else [name]
        for n in names:
            self._chats.pop(n).thread.restart()
        return names

    def table(self) -> Table:
        rows = []
        for name in self.names():
            chat = self._chats[name]
            branch = chat.thread.history(2 * chat.depth)
            kept = sum(1 for m in branch if m.role == "assistant")
            turns = chat.thread.store.answers(chat.thread.id)
            last = next((m.text for m in reversed(branch) if m.role == "user"), "")
            rows.append([name, chat.depth, kept, turns, _short(last)])
        return Table(["chat", "depth", "kept", "turns", "last question"], rows)


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
