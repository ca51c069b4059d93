"""The runtime: `get_llm_client()` and `Orchestrator.run/arun/stream`.

Example::

    import orchlab
    client = orchlab.get_llm_client()          # the embedded default: local model, no keys
    r = client.run("llm.preprocess", [{"role": "user", "content": "What is 2+2?"}])
    print(r.content, r.usage.output_tokens)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from orchlab.budgets import Budgets
from orchlab.calls import CallContext, CallRecord, Observers
from orchlab.config.loader import default_config_path, load_config
from orchlab.config.schema import OrchestratorConfig
from orchlab.costs import Meter, Ticket
from orchlab.loop import iterate_async, iterate_sync, run_async, run_sync
from orchlab.providers.base import Provider
from orchlab.providers.registry import provider_class
from orchlab.resolution import ResolvedLLMConfig, Resolver, parse_target
from orchlab.strategies.health import ProviderHealth
from orchlab.tracking.observer import attach as attach_tracking
from orchlab.types import Attempt, Decision, LLMResponse, ModelRequest, StreamChunk, to_messages
from orchlab.usage import KEYS as USAGE_KEYS
from orchlab.usage import UsageTracker

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.catalog import Catalog
    from orchlab.tracking.feedback import Rating

ParamsOverride = Mapping[str, Any] | None


class Orchestrator:
    """Runs roles against their bound providers. Build it with `get_llm_client`."""

    def __init__(
        self,
        config: OrchestratorConfig,
        *,
        config_path: Path | None = None,
        env: str | None = None,
    ) -> None:
        if env is not None and env != config.env:
            config = config.for_env(env)
        self.config = config
        self.config_path = config_path
        self.resolver = Resolver(config, base_dir=config_path.parent if config_path else None)
        self._providers: dict[str, Provider] = {}
        self._bindings: dict[str, tuple[str, str]] = {}
        self.observers = Observers()
        self.health = ProviderHealth()
        """Cooldowns of failing providers for the fallback strategies (its ``clock`` is swappable)."""
        self.budgets = Budgets.from_config(config)
        """Spending limits (YAML ``budgets:``); change them with ``client.budgets.set(...)``."""
        self.usage_tracker = UsageTracker()
        self.observers.add(self.usage_tracker)
        self.observers.add(self.budgets)
        self.tracking = attach_tracking(self)
        """MLflow tracking (YAML ``tracking:``): every call becomes a trace; rate one with `feedback`."""
        self._meter = Meter(self)
        self._catalog: Catalog | None = None

    def __repr__(self) -> str:
        return (
            f"Orchestrator(project={self.config.project!r}, env={self.config.env!r}, roles={self.roles()!r})"
        )

    # --- roles and providers -----------------------------------------------------------------

    def roles(self) -> list[str]:
        return self.resolver.role_names()

    def resolve(self, role: str) -> ResolvedLLMConfig:
        """The provider, model and params a role runs on now (session rebinds included)."""
        resolved = self.resolver.resolve(role)
        bound = self._bindings.get(role)
        if bound is None:
            return resolved
        return self.resolver.resolve_target(bound[0], bound[1], resolved.params, role=role)

    def rebind(self, role: str, target: str) -> ResolvedLLMConfig:
        """Point ``role`` at ``'provider:model'`` for this session (the YAML is not changed)."""
        self.resolver.resolve(role)
        provider, model = parse_target(target)
        self.resolver.provider_settings(provider)
        self._bindings[role] = (provider, model)
        return self.resolve(role)

    def provider(self, name: str) -> Provider:
        """The adapter instance for a provider entry, built once and reused."""
        adapter = self._providers.get(name)
        if adapter is None:
            settings = self.resolver.provider_settings(name)
            adapter = provider_class(settings.kind)(settings)
            self._providers[name] = adapter
        return adapter

    @property
    def catalog(self) -> Catalog:
        """The models this config reaches, with facts and prices (`orchlab.catalog.Catalog`)."""
        if self._catalog is None:
            from orchlab.catalog import Catalog

            self._catalog = Catalog(self)
        return self._catalog

    def usage(self, by: str | Sequence[str] = USAGE_KEYS) -> pd.DataFrame:
        """Provider calls so far as a DataFrame: calls, errors, tokens, cost, mean latency per group."""
        return self.usage_tracker.frame(by)

    def feedback(
        self,
        response_or_trace_id: object,
        rating: object,
        comment: str | None = None,
        user: str | None = None,
    ) -> Rating:
        """Rate an answer: thumbs (True/False, "up"/"down") or 1-5 stars, stored in MLflow (HUMAN)."""
        return self.tracking.feedback(response_or_trace_id, rating, comment=comment, user=user)

    # --- calls -------------------------------------------------------------------------------

    def run(self, role: str, messages: object, params_override: ParamsOverride = None) -> LLMResponse:
        """Answer ``messages`` with the model bound to ``role`` (works inside Jupyter's loop).

        The sync twin of `arun`: the same steps, but the provider call is the adapter's blocking
        `complete_sync`, so an adapter with a sync SDK (OpenAI) skips the hop to the engine loop.
        A role with a ``strategy:`` (or ``candidates:`` / ``fallbacks:``) runs that strategy.
        """
        if self._uses_strategy(role):
            return run_sync(self._complete(messages, role=role, params=params_override))
        resolved = self.resolve(role)
        request = self._request(resolved, messages, params_override)
        ctx = CallContext(role=role, strategy="single", messages=request.messages)
        try:
            response = self._attempt_sync(ctx, resolved, request)
        except BaseException as exc:
            self._notify(ctx, None, exc)
            raise
        return self._settle(ctx, response)

    async def arun(self, role: str, messages: object, params_override: ParamsOverride = None) -> LLMResponse:
        return await run_async(self._run(role, messages, params_override))

    def stream(self, role: str, messages: object, params_override: ParamsOverride = None) -> ResponseStream:
        """Iterate (sync or async) over text deltas; ``.response`` holds the final answer."""
        resolved = self.resolve(role)
        request = self._request(resolved, messages, params_override)
        return ResponseStream(self._stream(resolved, request))

    async def _run(self, role: str, messages: object, params_override: ParamsOverride) -> LLMResponse:
        if self._uses_strategy(role):
            return await self._complete(messages, role=role, params=params_override)
        resolved = self.resolve(role)
        request = self._request(resolved, messages, params_override)
        ctx = CallContext(role=role, strategy="single", messages=request.messages)
        return await self._finish(ctx, self._attempt(ctx, resolved, request))

    # --- strategies (orchlab.strategies) ----------------------------------------------------

    def complete(
        self,
        prompt: object,
        *,
        role: str | None = None,
        strategy: str | None = None,
        task_type: str | None = None,
        model: str | None = None,
        system: str | None = None,
        candidates: Sequence[str] | None = None,
        scorer: Any = None,
        threshold: float | None = None,
        tier: str | None = None,
        **params: Any,
    ) -> LLMResponse:
        """Answer ``prompt`` (a string or messages), with a strategy when one applies.

        ``strategy`` (an `orchlab.strategies.Strategy` or its value) and ``candidates`` (roles or
        ``'provider:model'``) override the role's YAML; ``model`` replaces the role's model. No
        role and no model: AUTO on the default role. ``**params`` are generation params
        (``max_tokens=16``). ``response.decision.explain()`` shows what happened.
        """
        return run_sync(
            self._complete(
                prompt,
                role=role,
                strategy=strategy,
                task_type=task_type,
                model=model,
                system=system,
                candidates=candidates,
                scorer=scorer,
                threshold=threshold,
                tier=tier,
                params=params,
            )
        )

    async def acomplete(
        self,
        prompt: object,
        *,
        role: str | None = None,
        strategy: str | None = None,
        task_type: str | None = None,
        model: str | None = None,
        system: str | None = None,
        candidates: Sequence[str] | None = None,
        scorer: Any = None,
        threshold: float | None = None,
        tier: str | None = None,
        **params: Any,
    ) -> LLMResponse:
        return await run_async(
            self._complete(
                prompt,
                role=role,
                strategy=strategy,
                task_type=task_type,
                model=model,
                system=system,
                candidates=candidates,
                scorer=scorer,
                threshold=threshold,
                tier=tier,
                params=params,
            )
        )

    def ensemble(
        self,
        prompt: object,
        models: Sequence[str] | None = None,
        mode: str = "vote",
        *,
        role: str | None = None,
        judge: str | None = None,
        aggregator: str | None = None,
        system: str | None = None,
        normalizer: Any = None,
        **params: Any,
    ) -> LLMResponse:
        """Ask several models (``models``, else the role's candidates) and combine the answers.

        ``mode``: ``vote`` | ``chain`` | ``judge`` | ``fuse`` (`orchlab.strategies.EnsembleMode`).
        """
        return run_sync(
            self._complete(
                prompt,
                role=role,
                strategy="ensemble",
                candidates=models,
                mode=mode,
                judge=judge,
                aggregator=aggregator,
                system=system,
                normalizer=normalizer,
                params=params,
            )
        )

    async def aensemble(
        self,
        prompt: object,
        models: Sequence[str] | None = None,
        mode: str = "vote",
        *,
        role: str | None = None,
        judge: str | None = None,
        aggregator: str | None = None,
        system: str | None = None,
        normalizer: Any = None,
        **params: Any,
    ) -> LLMResponse:
        return await run_async(
            self._complete(
                prompt,
                role=role,
                strategy="ensemble",
                candidates=models,
                mode=mode,
                judge=judge,
                aggregator=aggregator,
                system=system,
                normalizer=normalizer,
                params=params,
            )
        )

    async def _complete(self, prompt: object, **kwargs: Any) -> LLMResponse:
        from orchlab.strategies.engine import complete

        return await complete(self, prompt, **kwargs)

    def _uses_strategy(self, role: str) -> bool:
        spec = self.config.roles.get(role)
        return spec is not None and bool(spec.strategy or spec.candidates or spec.fallbacks)

    def _request(
        self, resolved: ResolvedLLMConfig, messages: object, params_override: ParamsOverride
    ) -> ModelRequest:
        return ModelRequest(
            model=resolved.model,
            messages=tuple(to_messages(messages)),
            params=resolved.params.merged(params_override),
        )

    async def _finish(self, ctx: CallContext, answer: Awaitable[LLMResponse]) -> LLMResponse:
        """Await the answer; on success attach the trail (`_settle`), on failure report it."""
        try:
            response = await answer
        except BaseException as exc:
            self._notify(ctx, None, exc)
            raise
        return self._settle(ctx, response)

    def _settle(self, ctx: CallContext, response: LLMResponse) -> LLMResponse:
        """Attach the decision trail (a strategy may have set its own) and tell the observers."""
        if response.decision is None:
            winner = ctx.attempts[-1] if ctx.attempts else None
            response.decision = Decision(
                strategy=ctx.strategy,
                task_type=ctx.task_type,
                attempts=ctx.attempts,
                winner=f"{winner.provider}:{winner.model}" if winner else None,
                rationale=f"role {ctx.role!r} is bound to {response.target}",
            )
        self._notify(ctx, response, None)
        return response

    def _notify(self, ctx: CallContext, response: LLMResponse | None, error: BaseException | None) -> None:
        self.observers.notify(CallRecord(ctx, response, error, time.time()))

    async def _attempt(
        self,
        ctx: CallContext,
        resolved: ResolvedLLMConfig,
        request: ModelRequest,
        *,
        stage: str | None = None,
    ) -> LLMResponse:
        """One call to one provider, recorded in ``ctx``: the unit every strategy is built from."""
        attempt = self._new_attempt(ctx, resolved, request, stage)
        started = time.perf_counter()
        ticket: Ticket | None = None
        try:
            ticket = await self._meter.preflight(ctx, resolved, request)
            response = await self.provider(resolved.provider).complete(request)
        except asyncio.CancelledError:
            attempt.outcome = "cancelled"
            self._meter.release(ticket)
            raise
        except Exception as exc:
            attempt.error, attempt.error_type = str(exc), type(exc).__name__
            self._meter.release(ticket)
            raise
        finally:
            attempt.latency_s = time.perf_counter() - started
        self._meter.charge(ticket, response)
        return self._attempt_ok(attempt, resolved, response)

    def _attempt_sync(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> LLMResponse:
        """`_attempt` for the sync API: the provider's blocking twin, in the caller's thread."""
        attempt = self._new_attempt(ctx, resolved, request, None)
        started = time.perf_counter()
        ticket: Ticket | None = None
        try:
            ticket = self._meter.preflight_sync(ctx, resolved, request)
            response = self.provider(resolved.provider).complete_sync(request)
        except (asyncio.CancelledError, KeyboardInterrupt):
            attempt.outcome = "cancelled"
            self._meter.release(ticket)
            raise
        except Exception as exc:
            attempt.error, attempt.error_type = str(exc), type(exc).__name__
            self._meter.release(ticket)
            raise
        finally:
            attempt.latency_s = time.perf_counter() - started
        self._meter.charge(ticket, response)
        return self._attempt_ok(attempt, resolved, response)

    @staticmethod
    def _new_attempt(
        ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest, stage: str | None
    ) -> Attempt:
        attempt = Attempt(
            provider=resolved.provider,
            model=request.model,
            outcome="error",
            latency_s=0.0,
            stage=stage,
            started_at=time.time(),
            params=request.params.as_dict(),
        )
        ctx.attempts.append(attempt)
        return attempt

    @staticmethod
    def _attempt_ok(attempt: Attempt, resolved: ResolvedLLMConfig, response: LLMResponse) -> LLMResponse:
        response.role = resolved.role
        attempt.outcome = "ok"
        attempt.usage = response.usage
        attempt.cost_usd = response.cost_usd
        attempt.output = response.content
        return response

    async def _stream(self, resolved: ResolvedLLMConfig, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        ctx = CallContext(role=resolved.role, strategy="single", messages=request.messages)
        attempt = Attempt(
            provider=resolved.provider,
            model=request.model,
            outcome="error",
            latency_s=0.0,
            started_at=time.time(),
            params=request.params.as_dict(),
        )
        ctx.attempts.append(attempt)
        parts: list[str] = []
        final: LLMResponse | None = None
        ticket: Ticket | None = None
        try:
            ticket = await self._meter.preflight(ctx, resolved, request)
            # aclosing: a caller that stops early releases the connection at once
            stream = cast(
                "AsyncGenerator[StreamChunk, None]", self.provider(resolved.provider).stream(request)
            )
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    if chunk.response is not None:
                        final = chunk.response
                        self._meter.charge(ticket, final)
                        final.role = resolved.role
                        final.latency_s = time.perf_counter() - ctx.started_perf
                        attempt.outcome, attempt.usage = "ok", final.usage
                        attempt.cost_usd, attempt.output = final.cost_usd, final.content
                        attempt.latency_s = final.latency_s
                        self._settle(ctx, final)
                    else:
                        parts.append(chunk.delta)
                    yield chunk
        except BaseException as exc:
            if final is None:
                self._meter.release(ticket)
                attempt.latency_s = time.perf_counter() - ctx.started_perf
                attempt.output = "".join(parts)
                if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                    attempt.outcome = "cancelled"
                else:
                    attempt.error, attempt.error_type = str(exc), type(exc).__name__
                self._notify(ctx, None, exc)
            raise

    # --- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        await asyncio.gather(*(run_async(p.aclose()) for p in providers))

    def close(self) -> None:
        run_sync(self.aclose())

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResponseStream:
    """A streamed answer: iterate it (``for`` or ``async for``) for text; then read ``.response``."""

    def __init__(self, chunks: AsyncIterator[StreamChunk]) -> None:
        self._chunks = chunks
        self.response: LLMResponse | None = None

    def __iter__(self) -> Iterator[str]:
        for chunk in iterate_sync(self._chunks):
            if chunk.response is not None:
                self.response = chunk.response
            elif chunk.delta:
                yield chunk.delta

    async def __aiter__(self) -> AsyncIterator[str]:
        async for chunk in iterate_async(self._chunks):
            if chunk.response is not None:
                self.response = chunk.response
            elif chunk.delta:
                yield chunk.delta

    def text(self) -> str:
        """Consume the stream and return the whole answer."""
        return "".join(self)


def get_llm_client(config_path: str | Path | None = None, *, env: str | None = None) -> Orchestrator:
    """An `Orchestrator` for ``config_path`` (no path: the embedded offline default)."""
    path = Path(config_path).expanduser().resolve() if config_path else default_config_path()
    return Orchestrator(load_config(path), config_path=path, env=env)
