"""Interrupting a cloud stream: Ctrl-C (a real SIGINT) in a sync ``for`` loop, a cancelled async
consumer. The user sees their own interrupt, the upstream connection is closed at once, and the
attempt is recorded as cancelled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchlab.calls import CallRecord
from orchlab.orchestrator import Orchestrator
from tests.servers.openai_wire import OpenAIWireServer, Reply, stream_chunks

ROOT = Path(__file__).resolve().parents[1]


class DropRecordingServer(OpenAIWireServer):
    """The OpenAI wire server, noting when a client drops a streamed reply before its end."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = threading.Event()

    def _send_stream(self, h: Any, reply: Any) -> None:  # type: ignore[override]
        try:
            super()._send_stream(h, reply)
        except (BrokenPipeError, ConnectionResetError):
            self.dropped.set()
            raise


def slow_stream(n: int = 200, every_s: float = 0.05) -> Reply:
    """A stream of ``n`` one-word deltas, one every ``every_s`` seconds (10 s by default)."""
    pieces = [f"w{i} " for i in range(n)]
    return Reply(stream_chunks=stream_chunks(pieces, model="m", prompt_tokens=1), chunk_delay_s=every_s)


@pytest.fixture
def server() -> Iterator[DropRecordingServer]:
    with DropRecordingServer() as s:
        yield s


def config(base_url: str) -> str:
    return f"""\
        project: t
        providers:
          oa:
            type: openai
            api_base: {base_url}
        roles:
          r:
            provider: oa
            model: m
        """


CHILD = textwrap.dedent(
    """\
    import sys
    import orchlab

    client = orchlab.get_llm_client(sys.argv[1])
    outcomes = []

    class Seen:
        def call_finished(self, record):
            outcomes.extend(a.outcome for a in record.context.attempts)

    client.observers.add(Seen())
    try:
        for delta in client.stream("r", [{"role": "user", "content": "hi"}]):
            print("delta", flush=True)
    except KeyboardInterrupt:
        print("interrupted", outcomes, flush=True)
        sys.stdin.readline()  # stay alive while the parent checks the connection is closed
        raise
    """
)


def test_ctrl_c_in_a_sync_cloud_stream_raises_keyboard_interrupt(
    server: DropRecordingServer, write_config: Callable[[str], Path]
) -> None:
    server.push(slow_stream())
    path = write_config(textwrap.dedent(config(server.base_url)))
    env = {**os.environ, "ORCH_AUTH_OA_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "delta\n"
        proc.send_signal(signal.SIGINT)
        while (line := proc.stdout.readline()) == "delta\n":
            pass
        assert line == "interrupted ['cancelled']\n"
        # the stream's connection is closed while the process still runs (not by its exit)
        assert server.dropped.wait(5)
        assert proc.poll() is None
        proc.stdin.write("\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGINT
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt"
    assert "RuntimeError" not in err
    assert "already running" not in err


async def test_cancelling_an_async_consumer_closes_the_stream(
    server: DropRecordingServer, client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-test")
    server.push(slow_stream())
    client = client_for(config(server.base_url))
    records: list[CallRecord] = []

    class Seen:
        def call_finished(self, record: CallRecord) -> None:
            records.append(record)

    client.observers.add(Seen())
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in client.stream("r", [{"role": "user", "content": "hi"}]):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [a.outcome for r in records for a in r.context.attempts] == ["cancelled"]
    assert await asyncio.to_thread(server.dropped.wait, 5)
