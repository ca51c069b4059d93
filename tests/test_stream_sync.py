"""A sync ``for`` loop over an OpenAI stream runs on the SDK's blocking client in the caller's
thread (no engine loop, no thread hop), with the same limits, early close and records as the
async stream; the deadline watchdog is not woken for a deadline later than the one it waits for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from orchlab import loop
from orchlab.calls import CallRecord
from orchlab.orchestrator import Orchestrator
from orchlab.providers import deadline
from tests.test_stream_interrupt import DropRecordingServer, config, slow_stream

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[DropRecordingServer]:
    with DropRecordingServer() as s:
        yield s


@pytest.fixture
def client(
    server: DropRecordingServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> Orchestrator:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-test")
    return client_for(config(server.base_url))


def records_of(client: Orchestrator) -> list[CallRecord]:
    records: list[CallRecord] = []

    class Seen:
        def call_finished(self, record: CallRecord) -> None:
            records.append(record)

    client.observers.add(Seen())
    return records


def test_a_sync_stream_never_uses_the_engine_loop(
    client: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_engine_loop() -> None:
        raise AssertionError("a sync OpenAI stream went through the engine loop")

    records = records_of(client)
    stream = client.stream("r", HI)
    with monkeypatch.context() as patch:  # only while streaming: closing the client may use it
        patch.setattr(loop, "engine_loop", no_engine_loop)
        deltas = list(stream)
    assert deltas == ["echo: ", "hi "]
    assert stream.response is not None
    assert (stream.response.content, stream.response.usage.input_tokens) == ("echo: hi ", 1)
    assert stream.response.latency_s > 0
    [record] = records
    [attempt] = record.context.attempts
    assert (attempt.outcome, attempt.output) == ("ok", "echo: hi ")


def test_with_sdk_retries_a_sync_stream_goes_through_the_engine_loop(
    server: DropRecordingServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for ``run()``: the limits must cover the SDK's waits between its retries."""
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-test")
    client = client_for(
        f"""\
        project: t
        providers:
          oa: {{type: openai, api_base: "{server.base_url}", max_retries: 1}}
        roles:
          r: {{provider: oa, model: m}}
        """
    )
    used: list[bool] = []
    real = loop.engine_loop

    def engine_loop() -> object:
        used.append(True)
        return real()

    with monkeypatch.context() as patch:
        patch.setattr(loop, "engine_loop", engine_loop)
        assert client.stream("r", HI).text() == "echo: hi "
    assert used


def test_breaking_out_of_a_sync_stream_closes_the_connection_and_keeps_the_partial_text(
    server: DropRecordingServer, client: Orchestrator
) -> None:
    server.push(slow_stream())
    records = records_of(client)
    for delta in client.stream("r", HI):
        assert delta == "w0 "
        break
    assert server.dropped.wait(5)
    [record] = records
    [attempt] = record.context.attempts
    assert (attempt.outcome, attempt.output) == ("cancelled", "w0 ")


def test_the_watchdog_is_woken_only_for_a_deadline_sooner_than_it_waits_for() -> None:
    watchdog = deadline._Watchdog()
    first = watchdog.arm(time.monotonic() + 60)
    while watchdog._sleeping_until == float("inf"):  # its thread has not gone to sleep yet
        time.sleep(0.001)
    woken: list[bool] = []
    notify = watchdog._cond.notify

    def counting(n: int = 1) -> None:
        woken.append(True)
        notify(n)

    watchdog._cond.notify = counting  # type: ignore[method-assign]
    first.done = True
    for _ in range(20):  # sequential calls: each one ends before the next is armed
        ticket = watchdog.arm(time.monotonic() + 60)
        ticket.done = True
    assert woken == []
    soon = watchdog.arm(time.monotonic() + 0.05)
    assert woken == [True]
    fired = threading.Event()
    while not soon.fired and not fired.wait(0.01):
        pass
    assert soon.fired
