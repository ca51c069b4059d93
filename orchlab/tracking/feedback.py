"""Human ratings, stored as MLflow feedback (HUMAN source) on the call's trace.

Two scales, each its own feedback name so both stay numeric and filterable:

- stars, ``1``-``5`` -> ``rating`` (int; ``feedback.rating >= 4`` works in MLflow searches);
- thumbs, ``True``/``False`` or ``"up"``/``"down"`` -> ``thumbs`` (bool).

A rating goes to the journal like a trace, and the drain writes it after that call's trace, so it
is stored even when it is given the moment the call returns. A rating of any other trace id (an
earlier session, `orchlab.history`) is checked against the store first, so a wrong id fails at
once.

A comparison (`orchlab.compare`, the compare view) watches its answers' trace ids: a rating of
one of them, however given in this process, also updates that comparison's run metrics.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from orchlab.errors import TrackingError
from orchlab.tracking.launch import after_write
from orchlab.tracking.observer import journaled_here
from orchlab.tracking.records import current_user, feedback_payload, scrub

if TYPE_CHECKING:
    from orchlab.tracking.observer import Tracking

THUMBS = "thumbs"
STARS = "rating"
_UP = {"up", "thumbs_up", "+1", "👍", "good", "yes"}
_DOWN = {"down", "thumbs_down", "-1", "👎", "bad", "no"}


class Watcher(Protocol):
    def _rated(self, rating: Rating) -> None: ...


_watchers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_watchers_lock = threading.Lock()


def watch(trace_ids: Iterable[str], watcher: Watcher) -> None:
    """Call ``watcher._rated(rating)`` after each rating of these traces is journaled here (held
    weakly: a comparison nobody holds any more stops watching)."""
    with _watchers_lock:
        for trace_id in trace_ids:
            _watchers[trace_id] = watcher


@dataclass(frozen=True, slots=True)
class Rating:
    """A rating as orchlab journaled it (the drain stores it in MLflow)."""

    trace_id: str
    name: str
    value: bool | int
    comment: str | None
    user: str
    queued: bool
    """True: it is in the journal, and the drain writes it to MLflow (``orchlab.flush()`` waits)."""


def normalize_rating(rating: object) -> tuple[str, bool | int]:
    """``(feedback name, value)`` for a thumbs or star rating; `TrackingError` for anything else."""
    if isinstance(rating, bool):
        return THUMBS, rating
    if isinstance(rating, int) or (isinstance(rating, float) and rating.is_integer()):
        stars = int(rating)
        if 1 <= stars <= 5:
            return STARS, stars
        raise TrackingError(f"a star rating must be 1 to 5, got {rating!r}")
    if isinstance(rating, str):
        word = rating.strip().lower()
        if word in _UP:
            return THUMBS, True
        if word in _DOWN:
            return THUMBS, False
        if word.isdigit():
            return normalize_rating(int(word))
    raise TrackingError(f"unknown rating {rating!r}: use True/False or 'up'/'down' (thumbs), or 1-5 (stars)")


def trace_id_of(response_or_trace_id: object) -> str:
    if isinstance(response_or_trace_id, str):
        trace_id = response_or_trace_id.strip()
    else:
        trace_id = getattr(response_or_trace_id, "trace_id", None) or ""
        if not trace_id:
            raise TrackingError(
                f"{type(response_or_trace_id).__name__} has no trace id: that call was not tracked "
                "(tracking off, ORCH_TRACKING=0, or a call made with logging disabled)"
            )
    if not trace_id.startswith("tr-"):
        raise TrackingError(f"{trace_id!r} is not an MLflow trace id (they look like 'tr-<32 hex digits>')")
    return trace_id


def give_feedback(
    tracking: Tracking,
    response_or_trace_id: object,
    rating: object,
    *,
    comment: str | None = None,
    user: str | None = None,
) -> Rating:
    if not tracking.enabled:
        why = tracking.off_reason or "tracking.enabled: false or ORCH_TRACKING=0"
        raise TrackingError(f"tracking is off for this client ({why}), so there is no trace to rate")
    name, value = normalize_rating(rating)
    trace_id = trace_id_of(response_or_trace_id)
    if comment is not None and not isinstance(comment, str):
        raise TrackingError(f"comment must be a string, got {type(comment).__name__}")
    if comment is not None:
        comment = scrub(comment, tracking.secrets())
    who = user or current_user()
    if not journaled_here(trace_id):
        from orchlab.tracking.api import reading_client
        from orchlab.tracking.store import get_trace_info

        if get_trace_info(reading_client(tracking.settings), trace_id) is None:
            raise TrackingError(
                f"no trace {trace_id} in {tracking.settings.tracking_uri}; rate a response of this "
                "store (orchlab.history() lists them)"
            )
    now_ms = int(time.time() * 1000)
    record = feedback_payload(trace_id, name, value, comment=comment, user=who, time_ms=now_ms)
    tracking.journal.append(record)
    after_write(tracking.journal)
    rated = Rating(trace_id, name, value, comment, who, queued=True)
    with _watchers_lock:
        watcher = _watchers.get(trace_id)
    if watcher is not None:
        watcher._rated(rated)
    return rated
