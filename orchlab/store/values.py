"""What the store returns: frozen values, never ORM rows (nothing of SQLAlchemy leaves the store)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchlab.types import Message


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    id: str
    name: str | None
    title: str | None
    user: str | None
    head_id: str | None
    """The current branch's last message (None: nothing yet, or the thread was restarted)."""
    created_at: datetime
    updated_at: datetime
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as stored. ``content`` is a list of parts (``{"type": "text", "text": ...}``)."""

    id: str
    thread_id: str
    parent_id: str | None
    role: str
    content: tuple[Mapping[str, Any], ...]
    created_at: datetime
    provider: str | None = None
    model: str | None = None
    llm_role: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    trace_id: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None

    @property
    def text(self) -> str:
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")

    def as_message(self) -> Message:
        """The message as a provider receives it."""
        return Message(self.role, self.text)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Feedback:
    """One user's rating of one message (updated in place when the user rates it again).

    ``rating`` is the MLflow side (`orchlab.tracking.feedback.Rating`) when the message's call was
    traced; None when it was not (then there is no trace to rate, and the row is all there is).
    """

    message_id: str
    user: str
    kind: str
    """``thumbs`` (stored as 1 or 0) or ``stars`` (1-5)."""
    value: bool | int
    """True/False for thumbs, 1-5 for stars (as `orchlab.tracking.feedback.Rating` has it)."""
    comment: str | None
    trace_id: str | None
    rating: Any = None


def text_parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]
