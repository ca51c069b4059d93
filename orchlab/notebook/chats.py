"""Named conversations for ``%%llm --chat NAME --depth N``: each keeps its last N exchanges.

Example::

    chats = ChatStore()
    chat = chats.get("review", depth=2)
    messages = chat.messages("and now?", system=None)   # the last 2 exchanges + the new question
    chat.add("and now?", "an answer")
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from orchlab.render import Table

DEFAULT_DEPTH = 5


@dataclass
class Chat:
    name: str
    depth: int = DEFAULT_DEPTH
    exchanges: deque[tuple[str, str]] = field(default_factory=deque)
    turns: int = 0
    """Exchanges ever added (the deque keeps only the last ``depth``)."""

    def __post_init__(self) -> None:
        self.exchanges = deque(self.exchanges, maxlen=self.depth)

    def set_depth(self, depth: int) -> None:
        if depth != self.depth:
            self.depth = depth
            self.exchanges = deque(self.exchanges, maxlen=depth)

    def messages(self, prompt: str, *, system: str | None = None) -> list[dict[str, str]]:
        out: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        for question, answer in self.exchanges:
            out.append({"role": "user", "content": question})
            out.append({"role": "assistant", "content": answer})
        out.append({"role": "user", "content": prompt})
        return out

    def add(self, prompt: str, answer: str) -> None:
        self.exchanges.append((prompt, answer))
        self.turns += 1


class ChatStore:
    """The notebook's conversations, by name."""

    def __init__(self) -> None:
        self._chats: dict[str, Chat] = {}

    def get(self, name: str, depth: int | None = None) -> Chat:
        chat = self._chats.get(name)
        if chat is None:
            chat = self._chats[name] = Chat(name, depth or DEFAULT_DEPTH)
        elif depth is not None:
            chat.set_depth(depth)
        return chat

    def __contains__(self, name: object) -> bool:
        return name in self._chats

    def __len__(self) -> int:
        return len(self._chats)

    def names(self) -> list[str]:
        return sorted(self._chats)

    def reset(self, name: str | None = None) -> list[str]:
        """Forget one conversation (or all); returns the names forgotten."""
        if name is None:
            names, self._chats = self.names(), {}
            return names
        if name not in self._chats:
            known = ", ".join(self.names()) or "none"
            raise KeyError(f"no conversation named {name!r} (conversations: {known})")
        del self._chats[name]
        return [name]

    def table(self) -> Table:
        rows = []
        for name in self.names():
            chat = self._chats[name]
            last = chat.exchanges[-1][0] if chat.exchanges else ""
            rows.append([name, chat.depth, len(chat.exchanges), chat.turns, _short(last)])
        return Table(["chat", "depth", "kept", "turns", "last question"], rows)


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
