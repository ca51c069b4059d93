"""Threads over HTTP (issue 15 item 4): ``GET /threads/{id}``, ``POST /feedback``, and the thread
part of ``POST /chat`` (``thread_id``, ``context_depth``) and of ``POST /v1/chat/completions``
(``x-orchlab-thread-id``: the exchange is stored; the thread's history is sent before the
request's messages only when ``x-orchlab-context-depth`` asks, since OpenAI clients send their
own history).

The store is the client's (`orchlab.store`), opened as an `AsyncStore` on the server's loop on
first use and closed with the app. A thread is named by its id (unknown: 404) or by a name (made
on first use, as ``client.thread(name)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError
from starlette.responses import Response

from orchlab.serve.body import decode_json, read_body
from orchlab.serve.errors import HTTPError, bad_request
from orchlab.serve.gateway import Exchange, Gateway, gateway, json_response
from orchlab.serve.openai_wire import _Wire, validation_error

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from orchlab.store.store import AsyncStore
    from orchlab.store.values import StoredMessage, ThreadInfo
    from orchlab.types import LLMResponse

router = APIRouter()
THREAD_HEADER = "x-orchlab-thread-id"
DEPTH_HEADER = "x-orchlab-context-depth"
MESSAGE_HEADER = "x-orchlab-message-id"
_LOCK = asyncio.Lock


async def store_for(request: Request) -> AsyncStore:
    """The app's `AsyncStore` (opened, and migrated, on first use)."""
    state = request.app.state
    lock = getattr(state, "thread_store_lock", None)
    if lock is None:
        lock = state.thread_store_lock = _LOCK()
    async with lock:
        store = getattr(state, "thread_store", None)
        if store is None:
            from orchlab.store.api import settings_of
            from orchlab.store.store import AsyncStore

            store = state.thread_store = await AsyncStore.open(settings_of(gateway(request).client))
    return store


async def close(app: Any) -> None:
    """Close the app's store (the lifespan's shutdown)."""
    store = getattr(app.state, "thread_store", None)
    if store is not None:
        app.state.thread_store = None
        await store.aclose()


def _not_found(what: str, ident: str) -> HTTPError:
    return HTTPError(
        404, f"no {what} {ident!r} in the thread store", param=f"{what}_id", code=f"{what}_not_found"
    )


def caller(claimed: str | None) -> str | None:
    """Who the request is for: the key's user when the gateway checks keys (what the body's
    ``user`` field says is then ignored: anyone can write it), else that field."""
    from orchlab.serve.auth import current_user

    return current_user() or claimed


def _visible(thread: ThreadInfo | None) -> ThreadInfo | None:
    """``thread`` unless a key's user asks for another user's thread (then: as if it did not exist)."""
    from orchlab.serve.auth import current_user

    user = current_user()
    if thread is None or user is None or thread.user == user:
        return thread
    return None


async def find_thread(store: AsyncStore, thread_id: str, *, user: str | None = None) -> ThreadInfo:
    """The thread named by ``thread_id``: an id (unknown, or another key user's: 404) or a name
    (made on first use)."""
    from orchlab.store.ids import is_ulid

    if not thread_id.strip():
        raise bad_request("thread_id must be a thread's id or a non-empty name", param="thread_id")
    stored = await store.thread(thread_id)
    found = _visible(stored)
    if found is not None:
        return found
    if stored is not None:  # another user's: the same answer as an unknown id
        raise _not_found("thread", thread_id)
    if is_ulid(thread_id):
        raise _not_found("thread", thread_id)
    return await store.create_thread(name=thread_id, user=user)


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange of a thread in the making: what is sent, and where it will hang."""

    store: AsyncStore
    thread: ThreadInfo
    parent_id: str | None
    new: tuple[Mapping[str, Any], ...]
    sent: list[Mapping[str, Any]]
    started: datetime

    async def save(self, response: LLMResponse) -> LLMResponse:
        """Store the new messages and the answer (one transaction); the answer's ``message_id``."""
        from orchlab.store.thread import exchange_rows

        said = [(str(m["role"]), str(m.get("content") or "")) for m in self.new]
        rows = exchange_rows(self.thread.id, self.parent_id, said, self.started, response)
        await self.store.append(rows, head=rows[-1]["id"])
        return replace(response, message_id=rows[-1]["id"])


async def begin(
    request: Request,
    thread_id: str,
    messages: Sequence[Mapping[str, Any]],
    depth: int,
    *,
    user: str | None = None,
) -> Turn:
    """A turn of ``thread_id``: the request's system messages, the thread's last ``depth`` messages,
    then the request's other messages (stored after), as `orchlab.store.thread.Thread` sends them."""
    from orchlab.store.queries import now

    started = now()
    store = await store_for(request)
    thread = await find_thread(store, thread_id, user=user)
    head, history = await store.current_branch(thread.id, depth)
    past = [{"role": m.role, "content": m.text} for m in history] if depth else []
    system = [m for m in messages if m.get("role") == "system"]  # first, and never stored
    new = tuple(m for m in messages if m.get("role") != "system")
    return Turn(store, thread, head, new, [*system, *past, *new], started)


async def from_headers(request: Request, messages: list[dict[str, Any]], user: str | None) -> Turn | None:
    """The turn ``x-orchlab-thread-id`` asks for (None: no header); history only with
    ``x-orchlab-context-depth``."""
    headers: Headers = request.headers
    thread_id = headers.get(THREAD_HEADER)
    if thread_id is None:
        if headers.get(DEPTH_HEADER) is not None:
            raise bad_request(f"{DEPTH_HEADER} needs {THREAD_HEADER}", param=DEPTH_HEADER)
        return None
    raw = headers.get(DEPTH_HEADER, "0")
    if not raw.isdigit():
        raise bad_request(f"{DEPTH_HEADER} must be a whole number >= 0, got {raw!r}", param=DEPTH_HEADER)
    return await begin(request, thread_id, messages, int(raw), user=caller(user))


def thread_body(thread: ThreadInfo, messages: Sequence[StoredMessage]) -> dict[str, Any]:
    return {
        "id": thread.id,
        "object": "thread",
        "name": thread.name,
        "title": thread.title,
        "user": thread.user,
        "head_id": thread.head_id,
        "created_at": thread.created_at.isoformat(),
        "updated_at": thread.updated_at.isoformat(),
        "messages": [
            {
                "id": m.id,
                "parent_id": m.parent_id,
                "role": m.role,
                "content": m.text,
                "created_at": m.created_at.isoformat(),
                "target": f"{m.provider}:{m.model}" if m.provider else None,
                "usage": None
                if m.input_tokens is None
                else {"input_tokens": m.input_tokens, "output_tokens": m.output_tokens},
                "cost_usd": m.cost_usd,
                "trace_id": m.trace_id,
            }
            for m in messages
        ],
    }


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, request: Request) -> Response:
    ex = Exchange(request, "/threads")
    try:
        store = await store_for(request)
        thread = _visible(await store.thread(thread_id))
        if thread is None:
            raise _not_found("thread", thread_id)
        messages = await store.messages(thread.id)
    except Exception as exc:
        return ex.error(exc)
    return json_response(thread_body(thread, messages), headers=ex.headers())


class FeedbackBody(_Wire):
    message_id: str = Field(min_length=1)
    value: bool | int | str
    comment: str | None = None
    user: str | None = Field(default=None, max_length=256)


@router.post("/feedback")
async def feedback(request: Request) -> Response:
    gw = gateway(request)
    ex = Exchange(request, "/feedback")
    try:
        data = decode_json(await read_body(request, gw.settings))
        if not isinstance(data, dict):
            raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}")
        try:
            body = FeedbackBody.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        out = await _feedback(gw, await store_for(request), body)
    except Exception as exc:
        return ex.error(exc)
    return json_response(out, headers=ex.headers())


async def _feedback(gw: Gateway, store: AsyncStore, body: FeedbackBody) -> dict[str, Any]:
    """The row and the MLflow rating of the message's trace: both (one transaction) or an error."""
    from orchlab.errors import OrchlabError
    from orchlab.store import queries
    from orchlab.tracking.feedback import normalize_rating

    try:
        name, rated = normalize_rating(body.value)
    except OrchlabError as exc:
        raise bad_request(str(exc), param="value") from None
    message = await store.message(body.message_id)
    if message is not None and _visible(await store.thread(message.thread_id)) is None:
        message = None  # another key user's message: the same answer as an unknown one
    if message is None:
        raise _not_found("message", body.message_id)
    if message.role != "assistant":
        raise bad_request(
            f"message {message.id} is a {message.role} message; rate an answer (assistant)",
            param="message_id",
        )
    who = caller(body.user) or "anonymous"
    kind = "thumbs" if name == "thumbs" else "stars"
    tracking = gw.client.tracking

    def both(conn: Any) -> None:
        queries.upsert_feedback(
            conn,
            message_id=message.id,
            user=who,
            kind=kind,
            value=int(rated),
            comment=body.comment,
            tags=None,
        )
        if message.trace_id and tracking.enabled:  # last: if MLflow refuses, the row is rolled back
            tracking.feedback(message.trace_id, body.value, comment=body.comment, user=who)

    await store.write(both)
    return {
        "object": "feedback",
        "message_id": message.id,
        "user": who,
        "kind": kind,
        "value": rated,
        "comment": body.comment,
        "trace_id": message.trace_id,
    }
