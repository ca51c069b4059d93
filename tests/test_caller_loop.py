"""Async calls run on the caller's own event loop (`orchlab.loop`): no hop to the engine thread for
an adapter that runs on any loop, one SDK client per loop closed when that loop ends, and the
caller's cancel reaching the provider's connection. An adapter that does not run on any loop
still hops to the engine loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orchlab.calls import CallRecord
from orchlab.loop import run_async
from orchlab.orchestrator import Orchestrator
from orchlab.providers import registry
from orchlab.providers.base import Provider
from orchlab.types import EmbeddingRequest, Embeddings, LLMResponse, ModelRequest, StreamChunk, Usage
from tests.servers.anthropic_wire import AnthropicWireServer
from tests.servers.openai_wire import OpenAIWireServer
from tests.test_strategies_race import DropWatch

ROOT = Path(__file__).resolve().parents[1]
HI = [{"role": "user", "content": "hi"}]
MakeClient = Callable[..., Orchestrator]


class Where(Provider):
    """Answers with nothing but notes where each call ran: (thread, running loop)."""

    requires_key = False
    seen: ClassVar[list[tuple[threading.Thread, asyncio.AbstractEventLoop]]] = []

    async def complete(self, request: ModelRequest) -> LLMResponse:
        self.seen.append((threading.current_thread(), asyncio.get_running_loop()))
        return LLMResponse(content="here", provider=self.name, model=request.model, usage=Usage(1, 1))

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        self.seen.append((threading.current_thread(), asyncio.get_running_loop()))
        yield StreamChunk(delta="here")
        yield StreamChunk(response=LLMResponse(content="here", provider=self.name, model=request.model))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        import numpy as np

        self.seen.append((threading.current_thread(), asyncio.get_running_loop()))
        vectors = np.ones((len(request.texts), 2), dtype=np.float32)
        return Embeddings(vectors=vectors, provider=self.name, model=request.model)


class AnyLoop(Where):
    runs_on_any_loop = True


@pytest.fixture
def where(client_for: MakeClient) -> Iterator[Orchestrator]:
    Where.seen = []
    registry.register("where", Where)
    registry.register("anyloop", AnyLoop)
    try:
        yield client_for(
            """
            project: t
            providers:
              pinned: {type: where}
              free: {type: anyloop}
            roles:
              pinned: {provider: pinned, model: m}
              free: {provider: free, model: m}
              vectors.pinned: {provider: pinned, model: m, kind: embedding}
              vectors.free: {provider: free, model: m, kind: embedding}
            """
        )
    finally:
        registry.unregister("where")
        registry.unregister("anyloop")


async def test_arun_and_async_streams_run_on_the_callers_loop_and_thread(where: Orchestrator) -> None:
    here = (threading.current_thread(), asyncio.get_running_loop())
    assert (await where.arun("free", HI)).content == "here"
    assert [d async for d in where.stream("free", HI)] == ["here"]
    assert (await where.acomplete("hi", role="free")).content == "here"
    assert Where.seen == [here, here, here]


async def test_an_adapter_that_does_not_run_on_any_loop_is_awaited_on_the_engine_loop(
    where: Orchestrator,
) -> None:
    assert (await where.arun("pinned", HI)).content == "here"
    assert [d async for d in where.stream("pinned", HI)] == ["here"]
    assert [t.name for t, _ in Where.seen] == ["orchlab-engine", "orchlab-engine"]
    assert all(loop is not asyncio.get_running_loop() for _, loop in Where.seen)


async def test_aembed_runs_on_the_callers_loop_and_a_pinned_adapter_on_the_engine_loop(
    where: Orchestrator,
) -> None:
    here = (threading.current_thread(), asyncio.get_running_loop())
    assert len(await where.aembed("vectors.free", ["a", "b"])) == 2
    assert len(await where.aembed("vectors.pinned", ["a"])) == 1
    assert Where.seen[0] == here
    assert Where.seen[1][0].name == "orchlab-engine"
    assert Where.seen[1][1] is not asyncio.get_running_loop()


def test_sync_calls_stay_off_the_callers_loop(where: Orchestrator) -> None:
    """``run`` and a sync stream inside a running loop (a Jupyter kernel) cannot use that loop."""

    async def cell() -> None:
        assert where.run("free", HI).content == "here"
        assert list(where.stream("free", HI)) == ["here"]

    asyncio.run(cell())
    assert [t.name for t, _ in Where.seen] == ["orchlab-engine", "orchlab-engine"]


# --- one SDK client per loop, closed with its loop --------------------------------------------


@pytest.fixture
def openai_client(
    openai_server: OpenAIWireServer, client_for: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> Orchestrator:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", "sk-test")
    return client_for(
        f"""
        project: t
        providers:
          oa: {{type: openai, api_base: "{openai_server.base_url}", max_retries: 0}}
        models:
          "oa:m": {{input_price_per_mtok: 1000, output_price_per_mtok: 1000}}
        roles:
          r: {{provider: oa, model: m, params: {{max_tokens: 10}}}}
        budgets: {{session_usd: 1.0}}
        """
    )


def test_two_loops_in_sequence_each_use_and_close_their_own_sdk_client(
    openai_client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    provider = openai_client.provider("oa")
    used: list[Any] = []

    async def main() -> None:
        for _ in range(2):
            assert (await openai_client.arun("r", HI)).content == "echo: hi"
        used.append(provider.client)  # type: ignore[attr-defined]

    asyncio.run(main())
    asyncio.run(main())  # a client bound to the first (closed) loop would fail here
    assert used[0] is not used[1]
    assert used[0].is_closed() and used[1].is_closed()  # closed as each loop shut down
    assert len(openai_server.requests) == 4


def test_a_sync_close_inside_the_loop_that_holds_a_client_does_not_deadlock(
    openai_client: Orchestrator,
) -> None:
    """A notebook cell's ``client.close()`` blocks the kernel loop whose client it closes: that
    client is closed on the loop once the cell lets it run."""
    provider = openai_client.provider("oa")

    async def kernel() -> None:
        await openai_client.arun("r", HI)
        sdk = provider.client  # type: ignore[attr-defined]
        openai_client.close()  # a sync cell: this loop is blocked until it returns
        assert not sdk.is_closed()  # it cannot have run yet

        async def next_cell() -> None:
            while not sdk.is_closed():
                await asyncio.sleep(0)

        await asyncio.wait_for(next_cell(), 5)

    asyncio.run(kernel())


async def test_sync_run_and_arun_on_one_kernel_loop_keep_their_clients_apart(
    client_for: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anthropic's ``run`` goes through the engine loop: its client there is not the caller's."""
    monkeypatch.setenv("ORCH_AUTH_AN_API_KEY", "sk-ant-test")
    with AnthropicWireServer() as server:
        client = client_for(
            f"""
            project: t
            providers:
              an: {{type: anthropic, api_base: "{server.url}", max_retries: 0}}
            roles:
              r: {{provider: an, model: claude-test, params: {{max_tokens: 10}}}}
            """
        )
        provider = client.provider("an")
        for _ in range(2):
            assert client.run("r", HI).content  # blocks this loop, as a notebook cell's run() does
            assert (await client.arun("r", HI)).content

        async def engine_client() -> Any:
            return provider.client  # type: ignore[attr-defined]

        mine, engines = provider.client, await run_async(engine_client())  # type: ignore[attr-defined]
        assert mine is not engines
        assert len(server.requests) == 4


def test_a_script_that_ran_arun_exits_without_noise(tmp_path: Path, openai_server: OpenAIWireServer) -> None:
    """No "Event loop is closed", no unclosed transport, no "Task was destroyed" at exit."""
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            project: t
            providers:
              oa: {{type: openai, api_base: "{openai_server.base_url}", max_retries: 0}}
            roles:
              r: {{provider: oa, model: m}}
            """
        )
    )
    code = textwrap.dedent(
        """\
        import asyncio, sys
        import orchlab

        client = orchlab.get_llm_client(sys.argv[1])
        for _ in range(2):
            print(asyncio.run(client.arun("r", [{"role": "user", "content": "hi"}])).content)
        """
    )
    env = {**os.environ, "ORCH_AUTH_OA_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code, str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: hi\necho: hi\n"
    assert done.stderr == ""


# --- cancel -------------------------------------------------------------------------------------


async def test_cancelling_the_callers_task_drops_the_upstream_request_and_releases_the_budget(
    openai_client: Orchestrator, openai_server: OpenAIWireServer
) -> None:
    watch = DropWatch(openai_server, hold_s=10.0)
    records: list[CallRecord] = []

    class Seen:
        def call_finished(self, record: CallRecord) -> None:
            records.append(record)

    openai_client.observers.add(Seen())
    task = asyncio.create_task(openai_client.arun("r", HI))
    while not watch.received:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(watch.dropped.wait, 5)
    assert [a.outcome for r in records for a in r.context.attempts] == ["cancelled"]
    assert openai_client.budgets.reserved_usd() == 0.0
    assert len(watch.received) == 1  # sent once, held, then dropped by the cancel


@pytest.mark.slow
async def test_cancelling_arun_on_the_local_model_stops_its_generation(
    client_for: MakeClient, gguf_path: Path
) -> None:
    """The in-process model generates in a worker thread of the caller's loop; the caller's
    cancel stops it at the next token."""
    client = client_for(
        f"""
        project: t
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
        roles:
          r: {{provider: local, model: gemma-3-270m, params: {{temperature: 0, max_tokens: 200}}}}
        """
    )
    local = client.provider("local")
    generate = local._generate  # type: ignore[attr-defined]
    tokens: list[str] = []
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()

    def spy(request: Any, cancel: threading.Event, on_text: Any = None) -> Any:
        try:
            return generate(request, cancel, tokens.append)
        finally:
            loop.call_soon_threadsafe(ended.set)

    await client.arun("r", [{"role": "user", "content": "warm up"}])  # load the model first
    local._generate = spy  # type: ignore[attr-defined]
    task = asyncio.create_task(client.arun("r", [{"role": "user", "content": "Write a long story."}]))
    while not tokens:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(ended.wait(), 5)
    assert 0 < len(tokens) < 200  # stopped early, after real tokens
