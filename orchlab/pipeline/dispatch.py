"""One provider attempt: passes, the adapter, settle; recorded as one `Attempt` in the trail.

`Dispatch.attempt` is the unit every orchestration logic is built from; `attempt_sync` is its
blocking twin for ``run()`` (no hop to the loop thread: the overhead target of
benchmarks/overhead.py); `attempt_stream` yields its deltas, the last chunk carrying the settled
response; `stream` is a whole streamed call of one attempt. `attempt_stream_sync` and `stream_sync` are
their twins for a sync ``for`` loop, in the caller's thread.
`Dispatch.finish` ends a call: the answer goes to `Observe.answered`, an error to
`Observe.failed`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from orchlab.catalog.tokens import upper_bound
from orchlab.pipeline.inflight import InFlight
from orchlab.pipeline.output import Shaping

if TYPE_CHECKING:
    from orchlab.calls import CallContext
    from orchlab.catalog.catalog import Catalog
    from orchlab.pipeline.observe import Observe
    from orchlab.pipeline.passes import Pass
    from orchlab.pipeline.settle import Settle
    from orchlab.providers.base import Provider
    from orchlab.resolution import ResolvedLLMConfig
    from orchlab.types import LLMResponse, ModelRequest, StreamChunk


class Dispatch:
    """Sends attempts for one client: built from its catalog, provider pool, passes, settle and
    observe (never the client itself)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Callable[[str], Provider],
        passes: Sequence[Pass],
        settle: Settle,
        observe: Observe,
        providers_here: Callable[[str], Provider] | None = None,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.providers_here = providers_here or providers
        """The adapter to await on the running loop (`ProviderPool.here`); ``providers``: for sync code."""
        self.passes = tuple(passes)
        self.settle = settle
        self.observe = observe

    # --- one attempt -----------------------------------------------------------------------

    async def attempt(
        self,
        ctx: CallContext,
        resolved: ResolvedLLMConfig,
        request: ModelRequest,
        *,
        stage: str | None = None,
    ) -> LLMResponse:
        """One call to one provider, recorded in ``ctx`` (a structured one: validated, and
        retried while invalid, each try recorded; `orchlab.pipeline.output`)."""
        if request.output is None:
            return (await self._attempt(ctx, resolved, request, stage))[0]
        shaping = Shaping(request, self._output_mode(resolved))
        while True:
            response, flight = await self._attempt(ctx, resolved, shaping.request, stage)
            shaped = shaping.check(flight, response)
            if shaped is not None:
                return shaped

    async def _attempt(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest, stage: str | None
    ) -> tuple[LLMResponse, InFlight]:
        flight = self._open(ctx, resolved, request, stage)
        try:
            for check in self.passes:
                answer = await check.admit(ctx, flight, request)
                if answer is not None:
                    return self._answered_by_pass(flight, answer), flight
            flight.sent = True
            response = await self.providers_here(resolved.provider).complete(request)
        except BaseException as exc:
            self._failed(flight, exc)
            raise
        return self._succeeded(flight, response), flight

    def attempt_sync(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> LLMResponse:
        """`attempt` for ``run()``: the adapter's blocking twin, in the caller's thread."""
        if request.output is None:
            return self._attempt_sync(ctx, resolved, request)[0]
        shaping = Shaping(request, self._output_mode(resolved))
        while True:
            response, flight = self._attempt_sync(ctx, resolved, shaping.request)
            shaped = shaping.check(flight, response)
            if shaped is not None:
                return shaped

    def _attempt_sync(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> tuple[LLMResponse, InFlight]:
        flight = self._open(ctx, resolved, request, None)
        try:
            for check in self.passes:
                answer = check.admit_sync(ctx, flight, request)
                if answer is not None:
                    return self._answered_by_pass(flight, answer), flight
            flight.sent = True
            response = self.providers(resolved.provider).complete_sync(request)
        except BaseException as exc:
            self._failed(flight, exc)
            raise
        return self._succeeded(flight, response), flight

    def _output_mode(self, resolved: ResolvedLLMConfig) -> str:
        """How the adapter gets a structured answer (`Provider.output_mode`)."""
        return str(getattr(self.providers(resolved.provider), "output_mode", "prompt"))

    async def attempt_stream(
        self,
        ctx: CallContext,
        resolved: ResolvedLLMConfig,
        request: ModelRequest,
        *,
        stage: str | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """`attempt` as deltas as they come; the last chunk carries the settled response."""
        from orchlab.types import StreamChunk

        flight = self._open(ctx, resolved, request, stage)
        parts: list[str] = []
        try:
            for check in self.passes:
                answer = await check.admit(ctx, flight, request)
                if answer is not None:
                    for chunk in self._replayed(ctx, flight, answer):
                        yield chunk
                    return
            flight.sent = True
            flight.pieces = parts
            adapter = self.providers_here(resolved.provider)
            stream = cast("AsyncGenerator[StreamChunk, None]", adapter.stream(request))
            # aclosing: a caller that stops early releases the connection at once
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    if chunk.response is not None:
                        took = time.perf_counter() - ctx.started_perf
                        chunk = StreamChunk(chunk.delta, self._succeeded(flight, chunk.response, took))
                    else:
                        if not parts:
                            chunk = self._first(ctx, flight, chunk)
                        parts.append(chunk.delta)
                    yield chunk
        except BaseException as exc:
            if flight.record.outcome != "ok":
                self._failed(flight, exc, output="".join(parts))
            raise

    async def stream(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> AsyncIterator[StreamChunk]:
        """A whole streamed call of one attempt: the last chunk ends the call (`Observe.answered`)."""
        from orchlab.types import StreamChunk

        answered = False
        try:
            chunks = cast("AsyncGenerator[StreamChunk, None]", self.attempt_stream(ctx, resolved, request))
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if chunk.response is not None:
                        chunk = StreamChunk(chunk.delta, self.observe.answered(ctx, chunk.response))
                        answered = True
                    yield chunk
        except BaseException as exc:
            if not answered:
                self.observe.failed(ctx, exc)
            raise

    def attempt_stream_sync(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> Generator[StreamChunk, None, None]:
        """`attempt_stream` for a sync ``for`` loop, in the caller's thread: the adapter's
        `Provider.stream_sync` (the blocking SDK client where the adapter has one)."""
        from orchlab.types import StreamChunk

        flight = self._open(ctx, resolved, request, None)
        parts: list[str] = []
        try:
            for check in self.passes:
                answer = check.admit_sync(ctx, flight, request)
                if answer is not None:
                    yield from self._replayed(ctx, flight, answer)
                    return
            flight.sent = True
            flight.pieces = parts
            # closing: a caller that stops early releases the connection at once
            with contextlib.closing(self.providers(resolved.provider).stream_sync(request)) as chunks:  # type: ignore[type-var]
                for chunk in chunks:
                    if chunk.response is None:
                        if not parts:
                            chunk = self._first(ctx, flight, chunk)
                        parts.append(chunk.delta)
                        yield chunk
                    else:
                        took = time.perf_counter() - ctx.started_perf
                        yield StreamChunk(chunk.delta, self._succeeded(flight, chunk.response, took))
        except BaseException as exc:
            if flight.record.outcome != "ok":
                self._failed(flight, exc, output="".join(parts))
            raise

    @staticmethod
    def _first(ctx: CallContext, flight: InFlight, chunk: StreamChunk) -> StreamChunk:
        """The attempt's first delta: the time to first token taken, and what the cache did on it."""
        if ctx.first_token_s is None:
            ctx.first_token_s = time.perf_counter() - ctx.started_perf
            ctx.first_cache = None if flight.store is None else "miss"
        if flight.store is None:
            return chunk
        from orchlab.types import StreamChunk

        return StreamChunk(chunk.delta, cache="miss")

    def _replayed(self, ctx: CallContext, flight: InFlight, answer: LLMResponse) -> list[StreamChunk]:
        """A pass's answer to a streamed request, as a stream: a cache hit replays the deltas of
        the stream that stored it (``flight.pieces``), any other answer is one delta; then the
        final chunk. The first chunk says what the cache did."""
        from orchlab.types import StreamChunk

        answer = self._answered_by_pass(flight, answer)
        if not answer.content:
            return [StreamChunk(response=answer, cache=answer.cache)]
        if ctx.first_token_s is None:
            ctx.first_token_s = time.perf_counter() - ctx.started_perf
            ctx.first_cache = answer.cache
        pieces = [p for p in flight.pieces or () if p]
        if "".join(pieces) != answer.content:
            pieces = [answer.content]
        return [
            *(StreamChunk(p, cache=answer.cache if i == 0 else None) for i, p in enumerate(pieces)),
            StreamChunk(response=answer),
        ]

    def stream_sync(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> Iterator[StreamChunk]:
        """`stream` for a sync ``for`` loop, in the caller's thread (`attempt_stream_sync`)."""
        from orchlab.types import StreamChunk

        answered = False
        try:
            with contextlib.closing(self.attempt_stream_sync(ctx, resolved, request)) as chunks:
                for chunk in chunks:
                    if chunk.response is None:
                        yield chunk
                    else:
                        answered = True
                        yield StreamChunk(chunk.delta, self.observe.answered(ctx, chunk.response))
        except BaseException as exc:
            if not answered:
                self.observe.failed(ctx, exc)
            raise

    # --- a whole call ------------------------------------------------------------------------

    async def finish(self, ctx: CallContext, answer: Awaitable[LLMResponse]) -> LLMResponse:
        """Await the answer; on success attach the trail and tell the observers, on failure tell them."""
        try:
            response = await answer
        except BaseException as exc:
            self.observe.failed(ctx, exc)
            raise
        return self.observe.answered(ctx, response)

    # --- the attempt's record ----------------------------------------------------------------

    def _open(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest, stage: str | None
    ) -> InFlight:
        slot = ctx.new_attempt(resolved.provider, request.model, stage=stage, params=request.params.as_dict())
        return InFlight(
            resolved,
            ctx,
            slot,
            self.catalog.entry(resolved.provider, request.model),
            resolved.role if resolved.role is not None else ctx.role,
            ceiling=upper_bound(request.messages, request.tools),
        )

    def _succeeded(
        self, flight: InFlight, response: LLMResponse, latency_s: float | None = None
    ) -> LLMResponse:
        """The response priced and labelled with its role (and ``latency_s`` when given: a
        stream's), its reservation settled, and its end recorded in the trail."""
        charge = self.settle.charge(flight, response)
        response = replace(
            response,
            cache="miss" if flight.store is not None else response.cache,
            role=flight.role,
            cost_usd=charge.cost_usd,
            cost_note=charge.cost_note,
            overrun_usd=charge.overrun_usd,
            latency_s=response.latency_s if latency_s is None else latency_s,
        )
        overrun = (
            {
                "overrun_usd": charge.overrun_usd,
                "note": f"cost ${charge.overrun_usd:.6f} more than its budget reservation",
            }
            if charge.overrun_usd
            else {}
        )
        if response.deployment is not None:  # a pool's server (orchlab.providers.deployments)
            overrun["deployment"] = response.deployment
            if response.moved_from:
                moved = f"moved to {response.deployment} after {', '.join(response.moved_from)} failed"
                overrun["note"] = f"{overrun['note']}; {moved}" if "note" in overrun else moved
        flight.ctx.revise(
            flight.slot,
            outcome="ok",
            usage=response.usage,
            cost_usd=response.cost_usd,
            output=response.content,
            latency_s=time.perf_counter() - flight.started,
            **overrun,
            **({"tool_calls": response.tool_calls} if response.tool_calls else {}),
            **({"cache": response.cache} if response.cache else {}),
        )
        if flight.store is not None:
            flight.store(response, flight.pieces)
        return response

    def _answered_by_pass(self, flight: InFlight, response: LLMResponse) -> LLMResponse:
        """A pass answered: nothing was sent, so the reservation is given back."""
        self.settle.release(flight)
        response = replace(response, latency_s=time.perf_counter() - flight.started)
        flight.ctx.revise(
            flight.slot,
            outcome="ok",
            latency_s=response.latency_s,
            usage=response.usage,
            cost_usd=response.cost_usd,
            output=response.content,
            note=response.cost_note,
            cache=response.cache,
        )
        return response

    def _failed(self, flight: InFlight, exc: BaseException, *, output: str | None = None) -> None:
        """Record the error, or the cancel (anything that is not an `Exception`: a task's
        cancel, Ctrl-C, a stream closed early), and settle the reservation."""
        cancelled = not isinstance(exc, Exception)
        end = (
            {"outcome": "cancelled"}
            if cancelled
            else {"outcome": "error", "error": str(exc), "error_type": type(exc).__name__}
        )
        if output is not None:
            end["output"] = output
        flight.ctx.revise(flight.slot, latency_s=time.perf_counter() - flight.started, **end)
        self.settle.release(flight, cancelled_after_send=cancelled and flight.sent)
