"""Feedback on a thread's answer: the store's row and the MLflow assessment, from one call."""

from __future__ import annotations

from pathlib import Path

import pytest

import orchlab
from orchlab.errors import TrackingError
from orchlab.store.values import Feedback
from tests.store_support import feedback_rows as _feedback_rows
from tests.tracking_support import (  # noqa: F401  (the *_fixture names register fixtures)
    loop_config_fixture,
    store_fixture,
    template_db_fixture,
    trace_info,
    tracking_on_fixture,
)


def test_feedback_right_after_a_call_is_in_the_table_and_in_mlflow(
    loop_config: Path, store: Path, tmp_path: Path
) -> None:
    client = orchlab.get_llm_client(loop_config)
    r = client.thread("rated").run("chat", "What is 2+2?")
    assert r.trace_id is not None and r.message_id is not None
    fb = client.feedback(r.message_id, 5, comment="spot on", user="ann")  # before any flush
    assert isinstance(fb, Feedback) and fb.trace_id == r.trace_id
    assert fb.rating is not None and fb.rating.queued and fb.rating.value == 5
    by_trace = client.feedback(r.trace_id, "down", user="bo")  # a trace id of a stored message
    assert isinstance(by_trace, Feedback) and by_trace.message_id == r.message_id
    # the default store: .orchlab/store.db next to the MLflow store (mlflow.db in the working dir)
    assert client.store.settings.sqlite_path == tmp_path / ".orchlab" / "store.db"
    assert _feedback_rows(client.store) == [
        (r.message_id, "ann", "stars", 5, "spot on"),
        (r.message_id, "bo", "thumbs", 0, None),
    ]
    assert orchlab.flush(timeout=120)
    assessments = trace_info(f"sqlite:///{store}", r.trace_id).assessments
    assert sorted((a.name, a.value, a.source.source_id, a.rationale) for a in assessments) == [
        ("rating", 5, "ann", "spot on"),
        ("thumbs", False, "bo", None),
    ]


def test_a_rating_mlflow_cannot_take_writes_no_row(
    loop_config: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traced = orchlab.get_llm_client(loop_config)
    r = traced.thread("half").run("chat", "What is 2+2?")
    assert r.trace_id is not None
    monkeypatch.setenv("ORCH_TRACKING", "0")
    untraced = orchlab.get_llm_client(loop_config)  # the same store, tracking off
    with pytest.raises(TrackingError, match="tracking is off for this client"):
        untraced.feedback(r.message_id, 4, user="ann")
    assert _feedback_rows(untraced.store) == []
    assert orchlab.flush(timeout=120)
