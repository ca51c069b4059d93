"""`Thread`: a persisted conversation. Each call sends the last ``context_depth`` messages of the
thread's current branch before the new ones, and stores the new messages and the answer.

For example:

    t = client.thread("review")                 # by name (made on first use) or by id
    r = t.run("llm.inference", "Summarise the diff")
    r.message_id                                # the stored answer: rate it with client.feedback
    t.run("llm.inference", "shorter")           # sees the previous exchange

Memory is injected here, at the thread, not by a pipeline pass: a pass runs once per provider
*attempt* and may only refuse or answer a request, never rewrite it; the history must be read
once per *call* (a race of three candidates would read it three times) and the answer written
after the call, which only the caller knows ended. The pipeline's passes then see the whole
prompt (the context-window and budget passes count the injected history, as they should).

A message is written once. The user's messages and the answer are written together, in one
transaction, when the answer is complete (a failed call writes nothing); their parent is the
head the history was read from, so a call made from an older message (``parent_id=``), or two
processes answering the same head at once, fork a branch instead of rewriting anything, and the
thread's head moves to the newest answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from orchlab.store.ids import new_ulid
from orchlab.store.queries import now
from orchlab.store.values import StoredMessage, ThreadInfo, text_parts
from orchlab.types import LLMResponse, Message, ResponseStream, StreamChunk, to_messages

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from orchlab.orchestrator import Orchestrator, ParamsOverride
    from orchlab.store.store import Store


@dataclass(frozen=True, slots=True)
class Turn:
    """One call in the making: where it hangs in the thread, and what is sent."""

    parent_id: str | None
    new: tuple[Message, ...]
    sent: tuple[Message, ...]
    started: datetime


class Thread:
    """A conversation stored in the client's store (`orchlab.store`); build it with ``client.thread``."""

    def __init__(
        self,
        client: Orchestrator,
        store: Store,
        info: ThreadInfo,
        *,
        context_depth: int,
        system: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.info = info
        self.context_depth = context_depth
        """How many messages of the branch are sent before the new ones."""
        self.system = system
        """A system message sent first with every call (not stored)."""

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str | None:
        return self.info.name

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"Thread({self.id}{name}, context_depth={self.context_depth})"

    # --- calls ------------------------------------------------------------------------------

    def run(
        self,
        role: str,
        content: object,
        params_override: ParamsOverride = None,
        *,
        parent_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> LLMResponse:
        """Send the branch's last messages and ``content``; store both and the answer.

        ``content``: a string (a user message), messages, or a registered prompt
        (`orchlab.load_prompt`) rendered with ``variables``. ``parent_id``: continue from that
        message instead of the thread's head (an edit or a retry: a new branch).
        """
        turn = self._turn(content, parent_id, variables)
        return self._save(turn, self.client.run(role, list(turn.sent), params_override))

    async def arun(
        self,
        role: str,
        content: object,
        params_override: ParamsOverride = None,
        *,
        parent_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> LLMResponse:
        """`run` for async code."""
        turn = self._turn(content, parent_id, variables)
        return self._save(turn, await self.client.arun(role, list(turn.sent), params_override))

    def stream(
        self,
        role: str,
        content: object,
        params_override: ParamsOverride = None,
        *,
        parent_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> ResponseStream:
        """`run`, streamed: the answer is stored when the stream ends (``.response.message_id``)."""
        turn = self._turn(content, parent_id, variables)
        inner = self.client.stream(role, list(turn.sent), params_override)

        async def chunks() -> AsyncIterator[StreamChunk]:
            async for delta in inner:
                yield StreamChunk(delta)
            assert inner.response is not None
            yield StreamChunk(response=self._save(turn, inner.response))

        return ResponseStream(chunks())

    def begin(self, content: object, *, parent_id: str | None = None) -> Turn:
        """For a caller that makes the call itself (``%%llm --chat`` with a strategy or a stream):
        ``turn.sent`` is what to send; `finish` stores the exchange."""
        return self._turn(content, parent_id, None)

    def finish(self, turn: Turn, response: LLMResponse) -> LLMResponse:
        """Store ``turn``'s messages and ``response``; the response with its ``message_id``."""
        return self._save(turn, response)

    # --- reads ------------------------------------------------------------------------------

    def history(self, depth: int | None = None) -> list[StoredMessage]:
        """The last ``depth`` (default: ``context_depth``) messages of the current branch."""
        return self.store.current_branch(self.id, self.context_depth if depth is None else depth)[1]

    def messages(self) -> pd.DataFrame:
        """Every message of the thread, every branch, oldest first."""
        import pandas as pd

        rows = [
            {
                "id": m.id,
                "parent_id": m.parent_id,
                "role": m.role,
                "content": m.text,
                "created_at": m.created_at,
                "target": f"{m.provider}:{m.model}" if m.provider else None,
                "llm_role": m.llm_role,
                "input_tokens": m.input_tokens,
                "output_tokens": m.output_tokens,
                "cost_usd": m.cost_usd,
                "trace_id": m.trace_id,
            }
            for m in self.store.messages(self.id)
        ]
        columns = [
            "id",
            "parent_id",
            "role",
            "content",
            "created_at",
            "target",
            "llm_role",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "trace_id",
        ]
        return pd.DataFrame(rows, columns=columns)

    def restart(self) -> None:
        """Start a new branch from nothing: later calls send no history (nothing is deleted)."""
        self.store.set_head(self.id, None)

    # --- the turn -------------------------------------------------------------------------------

    def _turn(self, content: object, parent_id: str | None, variables: Mapping[str, Any] | None) -> Turn:
        started = now()
        new = tuple(to_messages(self._new_messages(content, variables)))
        if parent_id is None:
            head, history = self.store.current_branch(self.id, self.context_depth)
        else:
            parent = self.store.message(parent_id)
            if parent is None or parent.thread_id != self.id:
                from orchlab.errors import StoreError

                raise StoreError(f"no message {parent_id!r} in thread {self.id} to continue from")
            head, history = parent_id, self.store.branch(parent_id, self.context_depth)
        system = (Message("system", self.system),) if self.system else ()
        sent = (*system, *(m.as_message() for m in history), *new)
        return Turn(head, new, sent, started)

    def _new_messages(self, content: object, variables: Mapping[str, Any] | None) -> object:
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        render = getattr(content, "render", None)
        if callable(render) and hasattr(content, "template") and hasattr(content, "uri"):
            # a registered prompt: rendered here, and its template kept as the store's snapshot
            template = content.template
            self.store.put_prompt_version(
                str(getattr(content, "name", "")),
                str(getattr(content, "version", "")),
                template if isinstance(template, str) else json.dumps(template),
                str(content.uri),
            )
            return render(**dict(variables or {}))
        return content

    def _save(self, turn: Turn, response: LLMResponse) -> LLMResponse:
        prompt = next(((m.prompt, m.version) for m in turn.new if getattr(m, "prompt", "")), (None, None))  # type: ignore[attr-defined]
        said = [(m.role, m.content) for m in turn.new]
        rows = exchange_rows(self.id, turn.parent_id, said, turn.started, response, prompt)
        self.store.append(rows, head=rows[-1]["id"])
        return replace(response, message_id=rows[-1]["id"])


def exchange_rows(
    thread_id: str,
    parent_id: str | None,
    said: Sequence[tuple[str, str]],
    started: datetime,
    response: LLMResponse,
    prompt: tuple[str | None, str | None] = (None, None),
) -> list[dict[str, Any]]:
    """The rows of one exchange: each new message (``(role, text)``, chained by ``parent_id``),
    then the answer with its provider, model, tokens, cost, latency, trace and prompt version."""
    rows: list[dict[str, Any]] = []
    parent = parent_id
    for role, text in said:
        rows.append(_row(thread_id, parent, role, text, started))
        parent = rows[-1]["id"]
    answer = _row(thread_id, parent, "assistant", response.content, now())
    answer.update(
        provider=response.provider,
        model=response.model,
        llm_role=response.role,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cost_usd=response.cost_usd,
        latency_s=response.latency_s,
        finish_reason=response.finish_reason,
        trace_id=response.trace_id,
        prompt_name=prompt[0],
        prompt_version=prompt[1],
    )
    rows.append(answer)
    return rows


def _row(thread_id: str, parent_id: str | None, role: str, text: str, at: datetime) -> dict[str, Any]:
    return {
        "id": new_ulid(),
        "thread_id": thread_id,
        "parent_id": parent_id,
        "role": role,
        "content": text_parts(text),
        "created_at": at,
    }
