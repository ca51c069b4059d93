"""The lean stream paths. A sync ``for`` loop over an OpenAI stream runs on the SDK's blocking
client in the caller's thread (no engine loop, no thread hop), with the same limits, early close
and records as the async stream; the deadline watchdog is not woken for a deadline later than the
one it waits for. An async stream keeps its limits on one loop timer, not one per event."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from orchlab import loop
from orchlab.calls import CallRecord
from orchlab.errors import ProviderTimeoutError
from orchlab.orchestrator import Orchestrator
from orchlab.providers import deadline
from tests.servers.openai_wire import Reply, stream_chunks
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


# --- async streams: one timer per stream --------------------------------------------------------


def limited(
    server: DropRecordingServer, client_for: Callable[..., Orchestrator], **limits: float
) -> Orchestrator:
    fields = ", ".join(f"{k}: {v}" for k, v in limits.items())
    return client_for(
        f"""\
        project: t
        providers:
          oa: {{type: openai, api_base: "{server.base_url}", {fields}}}
        roles:
          r: {{provider: oa, model: m}}
        """
    )


def chunks(*pieces: str) -> list[dict[str, object]]:
    return stream_chunks(list(pieces), model="m", prompt_tokens=1)


@pytest.mark.parametrize("via", ["sync", "async"])
def test_an_idle_limit_shorter_than_the_first_event_limit_cuts_a_silent_stream(
    via: str,
    server: DropRecordingServer,
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-test")
    client = limited(server, client_for, timeout_s=5, stream_idle_timeout_s=0.3)
    server.push(Reply(stream_chunks=chunks("Sunny ", "today."), stall_s=10, stall_after=2))
    got: list[str] = []

    async def consume() -> None:
        async for delta in client.stream("r", HI):
            got.append(delta)

    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as info:
        if via == "sync":
            got.extend(client.stream("r", HI))
        else:
            asyncio.run(consume())
    assert "silent for 0.3s (stream_idle_timeout_s)" in str(info.value)
    assert info.value.limit_s == 0.3
    assert time.perf_counter() - started < 4.0  # the first-event limit (5 s) would be later
    assert got == ["Sunny "]


async def test_an_async_slow_consumer_is_not_an_idle_stream_and_the_first_event_is_bounded(
    server: DropRecordingServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-test")
    client = limited(server, client_for, timeout_s=0.5, stream_idle_timeout_s=0.3)
    server.push(Reply(stream_chunks=chunks("Sunny ", "and ", "warm.")))
    got = []
    async for delta in client.stream("r", HI):
        got.append(delta)
        await asyncio.sleep(0.5)  # longer than both limits: the consumer's time is not counted
    assert "".join(got) == "Sunny and warm."

    server.push(Reply(stream_chunks=chunks("late"), stall_s=10, stall_after=0))
    with pytest.raises(ProviderTimeoutError) as info:
        async for _ in client.stream("r", HI):
            pass
    assert "no first stream event within 0.5s (timeout_s)" in str(info.value)


async def test_an_async_stream_sets_one_timer_not_one_per_event() -> None:
    async def opening() -> AsyncIterator[int]:
        async def events() -> AsyncIterator[int]:
            for i in range(50):
                yield i

        return events()

    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counting(
        when: float, callback: Callable[..., object], *args: object, **kwargs: object
    ) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, callback, *args, **kwargs)  # type: ignore[arg-type]

    loop.call_at = counting  # type: ignore[method-assign]
    try:
        got = [e async for e in deadline.paced(opening(), first_s=60, idle_s=60, stalled=RuntimeError)]
    finally:
        del loop.call_at  # type: ignore[method-assign]
    assert got == list(range(50))
    assert len(timers) == 1
