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
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from orchlab.budgets import Budgets
from orchlab.calls import CallContext, CallRecord, Observers
from orchlab.config.loader import check_env, default_config_path, load_config
from orchlab.config.schema import OrchestratorConfig
from orchlab.costs import Meter, Ticket
from orchlab.errors import InvalidRequestError
from orchlab.loop import run_async, run_sync, sync_twin
from orchlab.providers.base import Provider
from orchlab.providers.registry import provider_class
from orchlab.redaction import mask_keys_in_logs
from orchlab.resolution import Binding, ResolvedLLMConfig, Resolver, check_params, parse_target
from orchlab.strategies.health import ProviderHealth
from orchlab.tracking.observer import attach as attach_tracking
from orchlab.types import (
    Attempt,
    Decision,
    LLMResponse,
    ModelRequest,
    ResponseStream,
    StreamChunk,
    to_messages,
)
from orchlab.usage import KEYS as USAGE_KEYS
from orchlab.usage import UsageTracker

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.catalog import Catalog
    from orchlab.tracking.feedback import Rating

ParamsOverride = Mapping[str, Any] | None
# keyword names of complete() / ensemble(), for "did you mean" on a misspelt one that would
# otherwise land in **params and be sent to the provider
_COMPLETE_KEYWORDS = (
    "role",
    "strategy",
    "task_type",
    "model",
    "system",
    "candidates",
    "scorer",
    "threshold",
    "tier",
)
_ENSEMBLE_KEYWORDS = ("models", "mode", "role", "judge", "aggregator", "system", "normalizer")


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
        mask_keys_in_logs(self.resolver.configured_keys())
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
        """The provider, model, params and key a role runs on now (session rebinds included);
        `AuthError` when that provider's key is missing."""
        bound = self.binding(role)
        return self.resolver.resolve_target(bound.provider, bound.model, bound.params, role=role)

    def binding(self, role: str) -> Binding:
        """What `resolve` returns, without looking up a key (strategies plan with this: each
        candidate's key is looked up when that candidate is tried)."""
        bound = self.resolver.binding(role)
        rebound = self._bindings.get(role)
        if rebound is None:
            return bound
        return Binding(rebound[0], rebound[1], bound.params, role)

    def rebind(self, role: str, target: str) -> ResolvedLLMConfig:
        """Point ``role`` at ``'provider:model'`` for this session (the YAML is not changed)."""
        self.resolver.binding(role)
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

    # --- calls ------------------------------------------------------------------------------
    #
    # One pipeline: a call becomes a `CallContext`; each provider call in it is an `_attempt`
    # (trail record, preflight, provider, cost); the call ends in `_settle` (decision trail,
    # observers) or, on failure, `_notify`. `run` has its own sync fast path through the
    # adapter's blocking `complete_sync` (no hop to the engine loop: the overhead target of
    # benchmarks/overhead.py). A role with a strategy goes to `orchlab.strategies.engine`.

    def run(self, role: str, messages: object, params_override: ParamsOverride = None) -> LLMResponse:
        """Answer ``messages`` with the model bound to ``role`` (works inside Jupyter's loop).

        A role with a ``strategy:`` (or ``candidates:`` / ``fallbacks:``) runs that strategy.
        """
        if self._has_strategy(role):
            return run_sync(self._complete(messages, role=role, params=params_override))
        ctx, resolved, request = self._single(role, messages, params_override)
        try:
            response = self._attempt_sync(ctx, resolved, request)
        except BaseException as exc:
            self._notify(ctx, None, exc)
            raise
        return self._settle(ctx, response)

    async def arun(self, role: str, messages: object, params_override: ParamsOverride = None) -> LLMResponse:
        """`run` for async code."""
        return await run_async(self._arun(role, messages, params_override))

    async def _arun(self, role: str, messages: object, params_override: ParamsOverride) -> LLMResponse:
        if self._has_strategy(role):
            return await self._complete(messages, role=role, params=params_override)
        ctx, resolved, request = self._single(role, messages, params_override)
        return await self._finish(ctx, self._attempt(ctx, resolved, request))

    def stream(self, role: str, messages: object, params_override: ParamsOverride = None) -> ResponseStream:
        """Iterate (sync or async) over text deltas; ``.response`` holds the final answer.

        Strategies do not stream: a role with a ``strategy:``, ``candidates:`` or ``fallbacks:``
        raises `InvalidRequestError` rather than quietly streaming one of its models.
        """
        if self._has_strategy(role):
            strategy = self.config.roles[role].strategy or "fallback"
            raise InvalidRequestError(
                f"role {role!r} runs the {strategy!r} strategy, which cannot stream (streaming "
                f"would skip it and call only the role's own model): use client.run({role!r}, ...) "
                "or client.complete(..., role=...) for the strategy's answer, or stream a role "
                "without strategy:, candidates: or fallbacks:"
            )
        ctx, resolved, request = self._single(role, messages, params_override)
        return ResponseStream(self._stream(ctx, resolved, request))

    # --- strategies (orchlab.strategies) ----------------------------------------------------

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
        """Answer ``prompt`` (a string or messages), with a strategy when one applies.

        ``strategy`` (an `orchlab.strategies.Strategy` or its value) and ``candidates`` (roles or
        ``'provider:model'``) override the role's YAML; ``model`` replaces the role's model. No
        role and no model: AUTO on the default role. ``**params`` are generation params
        (``max_tokens=16``). ``response.decision.explain()`` shows what happened.
        ``complete`` is the same for synchronous code.
        """
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
                where="complete()",
                keywords=_COMPLETE_KEYWORDS,
            )
        )

    complete = sync_twin(acomplete)

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
        """Ask several models (``models``, else the role's candidates) and combine the answers.

        ``mode``: ``vote`` | ``chain`` | ``judge`` | ``fuse`` (`orchlab.strategies.EnsembleMode`).
        ``ensemble`` is the same for synchronous code.
        """
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
                where="ensemble()",
                keywords=_ENSEMBLE_KEYWORDS,
            )
        )

    ensemble = sync_twin(aensemble)

    async def _complete(self, prompt: object, **kwargs: Any) -> LLMResponse:
        from orchlab.strategies.engine import complete

        return await complete(self, prompt, **kwargs)

    def _has_strategy(self, role: str) -> bool:
        spec = self.config.roles.get(role)
        return spec is not None and spec.has_strategy

    # --- the pipeline -------------------------------------------------------------------------

    def _request(
        self, resolved: ResolvedLLMConfig, messages: object, params_override: ParamsOverride
    ) -> ModelRequest:
        return ModelRequest(
            model=resolved.model,
            messages=tuple(to_messages(messages)),
            params=resolved.params
            if params_override is None
            else resolved.params.merged(check_params(params_override)),
        )

    def _single(
        self, role: str, messages: object, params_override: ParamsOverride
    ) -> tuple[CallContext, ResolvedLLMConfig, ModelRequest]:
        """A plain role call: its context, the role's binding and the request."""
        resolved = self.resolve(role)
        request = self._request(resolved, messages, params_override)
        return CallContext(role=role, strategy="single", messages=request.messages), resolved, request

    async def _attempt(
        self,
        ctx: CallContext,
        resolved: ResolvedLLMConfig,
        request: ModelRequest,
        *,
        stage: str | None = None,
    ) -> LLMResponse:
        """One call to one provider, recorded in ``ctx``: the unit every strategy is built from."""
        attempt = self._open(ctx, resolved, request, stage)
        try:
            attempt.ticket = await self._meter.preflight(ctx, resolved, request)
            if request.params.max_tokens == 0:
                return attempt.unsent(resolved.provider, request.model)
            attempt.sent = True
            response = await self.provider(resolved.provider).complete(request)
        except BaseException as exc:
            attempt.failed(exc)
            raise
        return attempt.succeeded(response)

    def _attempt_sync(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> LLMResponse:
        """`_attempt` for `run`: the provider's blocking twin, in the caller's thread."""
        attempt = self._open(ctx, resolved, request, None)
        try:
            attempt.ticket = self._meter.preflight_sync(ctx, resolved, request)
            if request.params.max_tokens == 0:
                return attempt.unsent(resolved.provider, request.model)
            attempt.sent = True
            response = self.provider(resolved.provider).complete_sync(request)
        except BaseException as exc:
            attempt.failed(exc)
            raise
        return attempt.succeeded(response)

    async def _stream(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest
    ) -> AsyncIterator[StreamChunk]:
        """`_attempt` for `stream`: deltas as they come; the last chunk settles the call."""
        attempt = self._open(ctx, resolved, request, None)
        parts: list[str] = []
        try:
            attempt.ticket = await self._meter.preflight(ctx, resolved, request)
            if request.params.max_tokens == 0:
                yield StreamChunk(
                    response=self._settle(ctx, attempt.unsent(resolved.provider, request.model))
                )
                return
            attempt.sent = True
            stream = cast(
                "AsyncGenerator[StreamChunk, None]", self.provider(resolved.provider).stream(request)
            )
            # aclosing: a caller that stops early releases the connection at once
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    if chunk.response is not None:
                        chunk.response.latency_s = time.perf_counter() - ctx.started_perf
                        self._settle(ctx, attempt.succeeded(chunk.response))
                    else:
                        parts.append(chunk.delta)
                    yield chunk
        except BaseException as exc:
            if attempt.record.outcome != "ok":
                attempt.failed(exc, output="".join(parts))
                self._notify(ctx, None, exc)
            raise

    def _open(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, request: ModelRequest, stage: str | None
    ) -> _InFlight:
        record = ctx.new_attempt(
            resolved.provider, request.model, stage=stage, params=request.params.as_dict()
        )
        return _InFlight(self._meter, record, resolved.role)

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


UNSENT_NOTE = "max_tokens=0: an empty answer, nothing was sent"


class _InFlight:
    """One provider call in progress: its trail record, its budget ticket, whether it was sent."""

    __slots__ = ("meter", "record", "role", "sent", "started", "ticket")

    def __init__(self, meter: Meter, record: Attempt, role: str | None) -> None:
        self.meter = meter
        self.record = record
        self.role = role
        self.ticket: Ticket | None = None
        self.sent = False
        self.started = time.perf_counter()

    def succeeded(self, response: LLMResponse) -> LLMResponse:
        """Price the response, settle its reservation, and record it in the trail."""
        assert self.ticket is not None  # the provider answered, so preflight admitted the call
        self.meter.charge(self.ticket, response)
        response.role = self.role
        record = self.record
        record.outcome, record.usage = "ok", response.usage
        record.cost_usd, record.output = response.cost_usd, response.content
        record.latency_s = time.perf_counter() - self.started
        if response.overrun_usd:
            record.overrun_usd = response.overrun_usd
            record.note = f"cost ${response.overrun_usd:.6f} more than its budget reservation"
        return response

    def unsent(self, provider: str, model: str) -> LLMResponse:
        """``max_tokens=0``: the empty answer, given without sending anything (so nothing is
        billed), the same on every provider (their APIs refuse 0 or read it as "no limit")."""
        self.meter.release(self.ticket)
        record = self.record
        record.latency_s = time.perf_counter() - self.started
        record.outcome, record.cost_usd, record.output, record.note = "ok", 0.0, "", UNSENT_NOTE
        return LLMResponse(
            "",
            provider,
            model,
            role=self.role,
            latency_s=record.latency_s,
            finish_reason="length",
            cost_usd=0.0,
            cost_note=UNSENT_NOTE,
        )

    def failed(self, exc: BaseException, *, output: str | None = None) -> None:
        """Record the error, or the cancel (anything that is not an `Exception`: a task's
        cancel, Ctrl-C, a stream closed early), and settle the reservation (`Meter.release`)."""
        record = self.record
        record.latency_s = time.perf_counter() - self.started
        cancelled = not isinstance(exc, Exception)
        if cancelled:
            record.outcome = "cancelled"
        else:
            record.error, record.error_type = str(exc), type(exc).__name__
        if output is not None:
            record.output = output
        self.meter.release(self.ticket, cancelled_after_send=cancelled and self.sent)


def get_llm_client(config_path: str | Path | None = None, *, env: str | None = None) -> Orchestrator:
    """An `Orchestrator` for ``config_path`` (no path: the embedded offline default).

    ``env`` (else the ``ORCH_ENV`` environment variable) picks the config's base env or one of its
    ``envs:`` overlays; any other name is a `ConfigError` listing the envs that exist.
    """
    path = Path(config_path).expanduser().resolve() if config_path else default_config_path()
    config = load_config(path)
    origin = "env="
    if env is None and os.environ.get("ORCH_ENV"):
        env, origin = os.environ["ORCH_ENV"], "ORCH_ENV"
    if env is not None:
        check_env(config, env, source=str(path), origin=origin)
    return Orchestrator(config, config_path=path, env=env)
