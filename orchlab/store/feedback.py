"""``client.feedback(message_id or trace_id, value, comment=...)``: one call, the feedback row
and the MLflow assessment on the message's trace, both or a clear error.

The row is written in a transaction that commits only after the MLflow rating was accepted (it
goes to the tracking journal, which the drain writes after the call's own trace, so a rating
given right after a call is stored too; `orchlab.flush` waits for it). A rating MLflow refuses
(tracking off for a traced message, an unknown trace) rolls the row back. A message whose call
was not traced has no trace to rate: the row is all there is (``Feedback.rating`` is None).
A trace id with no stored message is rated in MLflow only, as before threads existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchlab.errors import StoreError
from orchlab.store import queries
from orchlab.store.ids import is_ulid
from orchlab.store.values import Feedback

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from orchlab.store.store import Store
    from orchlab.tracking.feedback import Rating
    from orchlab.tracking.observer import Tracking


def message_id_of(target: object) -> str | None:
    """The message a rating is for: a message id, or a response's ``message_id``."""
    if isinstance(target, str):
        return target.strip() if is_ulid(target.strip()) else None
    found = getattr(target, "message_id", None)
    return found if isinstance(found, str) else None


def give_feedback(
    store: Store | None,
    tracking: Tracking,
    target: object,
    value: object,
    *,
    comment: str | None = None,
    user: str | None = None,
) -> Feedback | Rating:
    from orchlab.tracking.feedback import normalize_rating, trace_id_of
    from orchlab.tracking.records import current_user

    name, rated = normalize_rating(value)  # a bad value fails before anything is written
    if comment is not None and not isinstance(comment, str):
        raise StoreError(f"comment must be a string, got {type(comment).__name__}")
    message_id = message_id_of(target)
    if store is None and message_id is None:
        return tracking.feedback(target, value, comment=comment, user=user)
    if message_id is None:
        assert store is not None
        trace_id = trace_id_of(target)
        message = store.message_by_trace(trace_id)
        if message is None:
            return tracking.feedback(target, value, comment=comment, user=user)
    else:
        if store is None:
            raise StoreError(f"{message_id} is a message id but this client has no thread store")
        message = store.message(message_id)
        if message is None:
            raise StoreError(
                f"no message {message_id} in the thread store {store.settings.safe_url} "
                "(thread.messages() lists a thread's messages)"
            )
    if message.role != "assistant":
        raise StoreError(f"message {message.id} is a {message.role} message; rate an answer (assistant)")
    who = user or current_user()
    kind, number = ("thumbs", int(rated)) if name == "thumbs" else ("stars", int(rated))
    found: list[Any] = []

    def both(conn: Connection) -> None:
        found.clear()
        queries.upsert_feedback(
            conn, message_id=message.id, user=who, kind=kind, value=number, comment=comment, tags=None
        )
        if message.trace_id:
            # last in the transaction: if MLflow refuses, the row is rolled back
            found.append(tracking.feedback(message.trace_id, value, comment=comment, user=who))

    store.write(both)
    rating = found[0] if found else None
    return Feedback(message.id, who, kind, rated, comment, message.trace_id, rating)
