"""The runtime: `get_llm_client()` and `Orchestrator.run/arun/stream`.

For example:

    import orchlab
    client = orchlab.get_llm_client()          # the embedded default: local model, no keys
    r = client.run("llm.preprocess", [{"role": "user", "content": "What is 2+2?"}])
    print(r.content, r.usage.output_tokens)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab import logs
from orchlab.budgets import Budgets
from orchlab.calls import CallContext, Observers
from orchlab.catalog import Catalog
from orchlab.config.loader import check_env, default_config_path, load_config
from orchlab.config.schema import OrchestratorConfig
from orchlab.errors import InvalidRequestError
from orchlab.loop import run_sync, sync_twin
from orchlab.metrics import MetricsObserver, enable_from_env
from orchlab.pipeline.cache import ResponseCache, cache_location, check_mode
from orchlab.pipeline.dispatch import Dispatch
from orchlab.pipeline.observe import Observe
from orchlab.pipeline.passes import default_passes
from orchlab.pipeline.settle import Settle
from orchlab.providers.base import Provider
from orchlab.providers.pool import ProviderPool
from orchlab.redaction import mask_keys_in_logs
from orchlab.resolution import Binding, ResolvedLLMConfig, Resolver, check_params, params_from, parse_target
from orchlab.strategies.health import ProviderHealth
from orchlab.tools.model import NO_TOOLS, ToolOffer
from orchlab.tracking.settings import resolve_settings
from orchlab.types import (
    Embeddings,
    GenerationParams,
    LLMResponse,
    Message,
    ModelRequest,
    ResponseStream,
    check_text,
    to_messages,
)
from orchlab.usage import KEYS as USAGE_KEYS
from orchlab.usage import UsageTracker

if TYPE_CHECKING:
    import pandas as pd

    from orchlab.catalog.select import Selection
    from orchlab.pipeline.embed import Embed
    from orchlab.store.keys import Keys
    from orchlab.store.store import Store
    from orchlab.store.thread import Thread
    from orchlab.store.values import Feedback
    from orchlab.strategies.logic import Logic
    from orchlab.tools.model import ToolRun
    from orchlab.tracking.feedback import Rating
    from orchlab.tracking.observer import Tracking

ParamsOverride = Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A `run`/`arun` call, checked: its format, and the logic's keywords or the plain call."""

    fmt: str | None
    logic: dict[str, Any]
    single: tuple[CallContext, ResolvedLLMConfig, ModelRequest] | None


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
    "risk",
    "complexity",
    "output",
    "format",
    "cache",
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
        self._bindings: dict[str, tuple[str, str]] = {}
        self.health = ProviderHealth()
        """Cooldowns of failing providers (fallback strategies) and of a pool's deployments (its
        ``clock`` is swappable)."""
        self.providers = ProviderPool(self.resolver.provider_settings, health=self.health)
        """The adapters, each built once (``client.provider(name)``)."""
        self.observers = Observers()
        self.budgets = Budgets.from_config(config)
        """Spending limits (YAML ``budgets:``); change them with ``client.budgets.set(...)``."""
        self.usage_tracker = UsageTracker()
        self.observers.add(self.usage_tracker)
        self.observers.add(self.budgets)
        enable_from_env()
        self.observers.add(MetricsObserver(config, self.budgets))  # a no-op while metrics are off
        self._tracking: Tracking | None = None
        base_dir = config_path.parent if config_path is not None else None
        self._tracking_settings = resolve_settings(
            config.tracking, project=config.project, env=config.env, base_dir=base_dir
        )
        if self._tracking_settings.enabled:
            # the observer (journal, drain launcher) is imported only when tracking is on: a
            # one-shot script with tracking off never loads it (issue 13, first call)
            from orchlab.tracking.observer import attach as attach_tracking

            self._tracking = attach_tracking(
                config, self.observers, base_dir=base_dir, keys=self.resolver.configured_keys
            )
        self.catalog = Catalog(
            config,
            provider_config=self.resolver.provider_config,
            providers=self.providers.get,
            rebound=self._bindings.values,
        )
        """The models this config reaches, with facts and prices (`orchlab.catalog.Catalog`)."""
        logs.configure_from_env()
        role_modes = {name: spec.cache for name, spec in config.roles.items() if spec.cache is not None}
        self.cache = ResponseCache(
            config.cache,
            location=lambda: cache_location(config.cache, self._store_url, base_dir),
            role_mode=lambda role: role_modes.get(role) if role is not None else None,
        )
        """The response cache (YAML ``cache:``, `orchlab.pipeline.cache`): a pass of every attempt."""
        self.dispatch = Dispatch(
            catalog=self.catalog,
            providers=self.providers.get,
            passes=default_passes(self.budgets, self.providers.get, cache=self.cache),
            settle=Settle(self.catalog, self.budgets),
            observe=Observe(self.observers),
            providers_here=self.providers.here,
        )
        """The call pipeline: passes, one provider attempt, settle, observe (`orchlab.pipeline`)."""

    @functools.cached_property
    def embedder(self) -> Embed:
        """Embedding calls (`embed`): batches, budgets, cost, observers (`orchlab.pipeline.embed`);
        built on the first embedding call (a chat-only script never imports it)."""
        from orchlab.pipeline.embed import Embed

        return Embed(
            catalog=self.catalog,
            providers=self.providers.here,
            budgets=self.budgets,
            settle=self.dispatch.settle,
            observe=self.dispatch.observe,
        )

    def _store_url(self) -> str:
        """Where the thread store is (the response cache's SQLite file goes beside it)."""
        from orchlab.store.settings import resolve_store_settings

        base_dir = self.config_path.parent if self.config_path is not None else None
        return resolve_store_settings(
            self.config.store, tracking=self._tracking_settings, base_dir=base_dir
        ).url

    @property
    def tracking(self) -> Tracking:
        """MLflow tracking (YAML ``tracking:``): every call becomes a trace; rate one with `feedback`."""
        if self._tracking is None:
            # tracking was off when the client was built: its (disabled) settings, built on first use
            from orchlab.tracking.observer import Tracking

            settings, keys = self._tracking_settings, self.resolver.configured_keys
            self._tracking = Tracking(settings, self.config, keys=keys)
        return self._tracking

    def __repr__(self) -> str:
        return (
            f"Orchestrator(project={self.config.project!r}, env={self.config.env!r}, roles={self.roles()!r})"
        )

    # --- roles and providers -----------------------------------------------------------------

    def roles(self) -> list[str]:
        return self.resolver.role_names()

    def resolve(self, role: str, **call: Any) -> ResolvedLLMConfig:
        """The provider, model, params and key a role runs on now (session rebinds included);
        `AuthError` when that provider's key is missing. A role with ``select:`` shows what its
        rule picks now (``risk=``, ``complexity=``, ``task_type=``, ``tier=`` as a call would
        give them; `selection` says why)."""
        if self._selects(role):
            chosen = self.selection(role, **call).chosen
            params = params_from(self.config.roles[role].params)
            return self.resolver.resolve_target(chosen.provider, chosen.model, params, role=role)
        bound = self.binding(role)
        return self.resolver.resolve_target(bound.provider, bound.model, bound.params, role=role)

    async def aselection(
        self,
        role: str,
        *,
        risk: str | None = None,
        complexity: str | None = None,
        task_type: str | None = None,
        tier: str | None = None,
    ) -> Selection:
        """What the ``select:`` rule of ``role`` picks now: the model, its estimated cost per
        call, the runners-up, what was ruled out and why (`orchlab.catalog.select.Selection`).
        `NoModelMatchesError` when nothing matches."""
        from orchlab.strategies.select import rule_of, select_for

        spec = self.config.roles.get(role)
        if spec is None or spec.select is None:
            self.resolver.binding(role)  # an unknown role: "did you mean"
            raise InvalidRequestError(
                f"role {role!r} names its model: it has no select: rule", parameter="role"
            )
        return await select_for(
            self,
            rule_of(self, role, {}),
            role=role,
            tier=tier,
            risk=risk,
            complexity=complexity,
            task_type=task_type,
            output_tokens=spec.params.max_tokens or None,
        )

    selection = sync_twin(aselection)
    """`aselection`, called from synchronous code (a notebook cell included)."""

    def _selects(self, role: str) -> bool:
        spec = self.config.roles.get(role)
        return spec is not None and spec.select is not None and role not in self._bindings

    def binding(self, role: str) -> Binding:
        """What `resolve` returns, without looking up a key (strategies plan with this: each
        candidate's key is looked up when that candidate is tried)."""
        rebound = self._bindings.get(role)
        spec = self.config.roles.get(role)
        if spec is not None and spec.select is not None:  # no model in the YAML: the catalog picks
            if rebound is None:
                self.resolver.binding(role)  # raises: the role selects its model
            assert rebound is not None
            return Binding(rebound[0], rebound[1], params_from(spec.params), role)
        bound = self.resolver.binding(role)
        if rebound is None:
            return bound
        return Binding(rebound[0], rebound[1], bound.params, role)

    def is_rebound(self, role: str) -> bool:
        """Whether ``role`` was pointed at another target this session (`rebind`)."""
        return role in self._bindings

    def rebind(self, role: str, target: str) -> ResolvedLLMConfig:
        """Point ``role`` at ``'provider:model'`` for this session (the YAML is not changed)."""
        if role not in self.config.roles:
            self.resolver.binding(role)  # UnknownRoleError with "did you mean"
        provider, model = parse_target(target)
        self.resolver.provider_settings(provider)
        self._bindings[role] = (provider, model)
        return self.resolve(role)

    def provider(self, name: str) -> Provider:
        """The adapter instance for a provider entry, built once and reused."""
        return self.providers.get(name)

    def usage(self, by: str | Sequence[str] = USAGE_KEYS) -> pd.DataFrame:
        """Provider calls so far as a DataFrame: calls, errors, tokens, cost, mean latency per group."""
        return self.usage_tracker.frame(by)

    def feedback(
        self,
        response_or_trace_id: object,
        rating: object,
        comment: str | None = None,
        user: str | None = None,
    ) -> Rating | Feedback:
        """Rate an answer: thumbs (True/False, "up"/"down") or 1-5 stars, stored in MLflow (HUMAN).

        An answer of a thread (a response with ``message_id``, a message id, or the trace id of a
        stored message) is also rated in the store's feedback table: both, or an error
        (`orchlab.store.feedback`)."""
        from orchlab.store.api import give_feedback

        return give_feedback(self, response_or_trace_id, rating, comment=comment, user=user)

    # --- threads (orchlab.store) ---------------------------------------------------------------

    def thread(
        self,
        name_or_id: str | None = None,
        *,
        context_depth: int | None = None,
        system: str | None = None,
        user: str | None = None,
        title: str | None = None,
    ) -> Thread:
        """A stored conversation: by name (made on first use), by id, or a new one (None).

        ``thread.run(role, "question")`` sends the last ``context_depth`` messages of the thread
        (YAML ``store.context_depth``, default 10) before the question and stores the exchange."""
        from orchlab.store.api import open_thread

        return open_thread(
            self, name_or_id, context_depth=context_depth, system=system, user=user, title=title
        )

    def threads(self, user: str | None = None) -> pd.DataFrame:
        """The store's threads, most recently updated first."""
        return self.store.threads(user=user)

    @property
    def store(self) -> Store:
        """The thread store (`orchlab.store`): opened, and migrated, on first use."""
        from orchlab.store.api import store_of

        return store_of(self)

    @property
    def keys(self) -> Keys:
        """The gateway's users and API keys in the store (`orchlab.store.keys`)."""
        from orchlab.store.api import store_of
        from orchlab.store.keys import Keys

        return Keys(store_of(self))

    # --- calls ------------------------------------------------------------------------------
    #
    # A call becomes a `CallContext`; each provider call in it is one `Dispatch.attempt`
    # (passes, provider, settle); the call ends in `Observe` (`orchlab.pipeline`). `run` has
    # its own sync fast path through the adapter's blocking `complete_sync` (no hop to the
    # loop thread: the overhead target of benchmarks/overhead.py). A role with a strategy goes
    # to `orchlab.strategies.answer`.

    def run(
        self,
        role: str,
        messages: object,
        params_override: ParamsOverride = None,
        *,
        tools: object = None,
        toolset: str | None = None,
        tool_choice: object = None,
        parallel_tool_calls: bool | None = None,
        output: Any = None,
        format: str | None = None,
        cache: str | bool | None = None,
        **routing: str | None,
    ) -> LLMResponse:
        """Answer ``messages`` with the model bound to ``role`` (works inside Jupyter's loop).

        A role with a ``strategy:`` (or ``candidates:`` / ``fallbacks:`` / ``select:``) runs that
        strategy. ``role`` may also be ``'provider:model'`` or a URN
        (``urn:orchlab:race:candidates=a:m,b:m``, `orchlab.strategies.urn`); ``arun`` and ``stream``
        take the same targets. ``risk=`` / ``complexity=`` (low, medium, high), ``task_type=`` and
        ``tier=`` choose the tier a ``select:`` role asks the catalog for (``routing.tiers``).

        ``tools`` (functions, ``@orchlab.tool``, `orchlab.Tool`, OpenAI's JSON, toolset names) and
        ``toolset`` (a YAML ``toolsets:`` entry; else the role's ``toolset:``) are offered to the
        model; the calls it asks for are in ``response.tool_calls`` (`delegate` runs them).

        ``output=MyModel`` (a pydantic model class) asks for a structured answer:
        ``response.output`` is a validated instance (`orchlab.output.structured`).
        ``format``: ``"raw"``, ``"markdown"``, ``"json"`` or one you added (`orchlab.output.formats`).
        ``cache``: ``auto`` | ``force`` | ``off`` (True / False) for this call's response cache
        (None: the role's ``cache:``, else auto: deterministic requests only; `orchlab.pipeline.cache`).
        """
        call = self._prepare(
            role, messages, params_override, None, tools, toolset, tool_choice, parallel_tool_calls,
            output, format, cache, routing,
        )  # fmt: skip
        if call.single is None:
            return _formatted(run_sync(self._complete(messages, **call.logic)), call.fmt)
        ctx, resolved, request = call.single
        try:
            response = self.dispatch.attempt_sync(ctx, resolved, request)
        except BaseException as exc:
            self.dispatch.observe.failed(ctx, exc)
            raise
        return _formatted(self.dispatch.observe.answered(ctx, response), call.fmt)

    async def arun(
        self,
        role: str,
        messages: object,
        params_override: ParamsOverride = None,
        *,
        tags: Mapping[str, str] | None = None,
        tools: object = None,
        toolset: str | None = None,
        tool_choice: object = None,
        parallel_tool_calls: bool | None = None,
        output: Any = None,
        format: str | None = None,
        cache: str | bool | None = None,
        **routing: str | None,
    ) -> LLMResponse:
        """`run` for async code: the call runs on the caller's own event loop (no thread hop),
        but for an adapter that does not run on any loop (`Provider.runs_on_any_loop`), which
        is awaited on orchlab's engine loop. ``async for`` over `stream` and the ``a*`` API too.
        ``tags`` go on the call's trace (``stream`` takes them too)."""
        call = self._prepare(
            role, messages, params_override, tags, tools, toolset, tool_choice, parallel_tool_calls,
            output, format, cache, routing,
        )  # fmt: skip
        if call.single is None:
            return _formatted(await self._complete(messages, **call.logic), call.fmt)
        ctx, resolved, request = call.single
        response = await self.dispatch.finish(ctx, self.dispatch.attempt(ctx, resolved, request))
        return _formatted(response, call.fmt)

    def _prepare(
        self,
        role: str,
        messages: object,
        params_override: ParamsOverride,
        tags: Mapping[str, str] | None,
        tools: object,
        toolset: str | None,
        tool_choice: object,
        parallel_tool_calls: bool | None,
        output: Any,
        format: str | None,
        cache: str | bool | None,
        routing: Mapping[str, str | None],
    ) -> _Prepared:
        """What `run` and `arun` share: every argument checked before anything is sent, then
        either the logic's keywords (a role with a strategy, or routing keywords) or the plain
        call's context, binding and request."""
        fmt = _check_format(format, output)
        bound = self._refuse_embedding(role)
        params_override, offer = self.offer(
            role, params_override, tools, toolset, tool_choice, parallel_tool_calls
        )
        mode = check_mode(cache)
        json_answer = fmt == "json"
        if routing or self._has_strategy(role):
            logic: dict[str, Any] = dict(
                role=role,
                params=params_override,
                offer=offer,
                output=output,
                cache=mode,
                json_answer=json_answer,
            )
            if tags is not None:
                logic["tags"] = tags
            return _Prepared(fmt, {**logic, **_routing(routing)}, None)
        single = self._single(
            role,
            messages,
            params_override,
            tags,
            offer,
            output,
            cache=mode,
            json_answer=json_answer,
            bound=bound,
        )
        return _Prepared(fmt, {}, single)

    def stream(
        self,
        role: str,
        messages: object,
        params_override: ParamsOverride = None,
        *,
        tags: Mapping[str, str] | None = None,
        tools: object = None,
        toolset: str | None = None,
        tool_choice: object = None,
        parallel_tool_calls: bool | None = None,
        cache: str | bool | None = None,
    ) -> ResponseStream:
        """Iterate (sync or async) over text deltas; ``.response`` holds the final answer.

        A role with a ``strategy:``, ``candidates:`` or ``fallbacks:`` streams its logic: a
        fallback chain or a race streams the first candidate to produce a token (switching only
        before it); cascade, ensemble and auto stream their final answer. ``.response`` then
        carries the whole decision trail and the cost of every attempt (and ``tool_calls``).
        """
        bound = self._refuse_embedding(role)
        params_override, offer = self.offer(
            role, params_override, tools, toolset, tool_choice, parallel_tool_calls
        )
        mode = check_mode(cache)
        if self._has_strategy(role):
            from orchlab.strategies.answer import stream

            return ResponseStream(
                stream(self, messages, role=role, params=params_override, tags=tags, offer=offer, cache=mode)
            )
        ctx, resolved, request = self._single(
            role, messages, params_override, tags, offer, cache=mode, bound=bound
        )
        return ResponseStream(
            self.dispatch.stream(ctx, resolved, request), self.dispatch.stream_sync(ctx, resolved, request)
        )

    # --- tools (orchlab.tools) ---------------------------------------------------------------

    def offer(
        self,
        role: str | None,
        params: ParamsOverride,
        tools: object = None,
        toolset: str | None = None,
        tool_choice: object = None,
        parallel_tool_calls: bool | None = None,
    ) -> tuple[ParamsOverride, ToolOffer]:
        """The call's params without OpenAI's tool keys, and the tools it offers: ``tools`` and
        ``toolset`` (or those keys in ``params``), else the role's ``toolset:``."""
        # the toolsets module (and the function-tool machinery under it) is imported only by a
        # call that has params or tools: a plain run never loads it (issue 13, first call)
        if params is not None:
            from orchlab.tools.toolsets import TOOL_PARAMS, lift_tool_params

            if any(k in params for k in TOOL_PARAMS):
                params, lifted = lift_tool_params(params)  # type: ignore[assignment]
                tools = lifted.get("tools", tools)
                tool_choice = lifted.get("tool_choice", tool_choice)
                parallel_tool_calls = lifted.get("parallel_tool_calls", parallel_tool_calls)  # type: ignore[assignment]
        spec = self.config.roles.get(role) if role is not None else None
        role_toolset = spec.toolset if spec is not None else None
        if (
            tools is None
            and toolset is None
            and tool_choice is None
            and parallel_tool_calls is None
            and role_toolset is None
        ):
            return params, NO_TOOLS
        from orchlab.tools.toolsets import make_offer

        offer, _ = make_offer(
            self.config.toolsets,
            role_toolset,
            tools=tools,
            toolset=toolset,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
        return params, offer

    # --- strategies (orchlab.strategies) ----------------------------------------------------

    async def acomplete(
        self,
        prompt: object,
        *,
        role: str | None = None,
        strategy: str | Logic | type[Logic] | None = None,
        task_type: str | None = None,
        model: str | None = None,
        system: str | None = None,
        candidates: Sequence[str] | None = None,
        scorer: Any = None,
        threshold: float | None = None,
        tier: str | None = None,
        risk: str | None = None,
        complexity: str | None = None,
        output: Any = None,
        format: str | None = None,
        cache: str | bool | None = None,
        **params: Any,
    ) -> LLMResponse:
        """Answer ``prompt`` (a string or messages), with a strategy when one applies.

        ``strategy`` (an `orchlab.strategies.Strategy`, its value, a registered logic id, or a
        `orchlab.Logic` subclass or instance, used for this call only and never registered) and
        ``candidates`` (roles or ``'provider:model'``) override the role's YAML; ``model``
        replaces the role's model. No role and no model: AUTO on the default role. ``**params``
        are generation params (``max_tokens=16``). ``response.decision.explain()`` shows what happened.
        ``output=MyModel``: a structured answer (``response.output``), and ``format``, as for `run`.
        ``complete`` is the same for synchronous code.
        """
        fmt = _check_format(format, output)
        if role is not None:
            self._refuse_embedding(role)
        response = await self._complete(
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
            risk=risk,
            complexity=complexity,
            output=output,
            cache=check_mode(cache),
            json_answer=fmt == "json",
            params=params,
            where="complete()",
            keywords=_COMPLETE_KEYWORDS,
        )
        return _formatted(response, fmt)

    complete = sync_twin(acomplete)
    """`acomplete`, called from synchronous code (a notebook cell included)."""

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
        return await self._complete(
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

    ensemble = sync_twin(aensemble)
    """`aensemble`, called from synchronous code (a notebook cell included)."""

    async def adelegate(
        self,
        task: object,
        *,
        role: str | None = None,
        tools: object = None,
        toolset: str | None = None,
        max_steps: int = 8,
        tool_choice: object = None,
        parallel_tool_calls: bool | None = None,
        system: str | None = None,
        on_tool: Callable[[ToolRun], object] | None = None,
        **params: Any,
    ) -> LLMResponse:
        """Give ``role`` a task and tools: the model is called, the tools it asks for are run (at
        once when it asks for several) and their results sent back, until it answers in text or
        ``max_steps`` model calls are made (`orchlab.tools.delegate`). One trace with a TOOL span
        per tool run; ``response.decision`` holds every step and tool run, ``cost_usd`` their sum.
        ``on_tool(run)`` is told of each tool run as it finishes.
        ``delegate`` is the same for synchronous code."""
        from orchlab.tools.delegate import delegate

        return await delegate(
            self,
            task,
            role=role,
            tools=tools,
            toolset=toolset,
            max_steps=max_steps,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            system=system,
            params=params or None,
            on_tool=on_tool,
        )

    delegate = sync_twin(adelegate)
    """`adelegate`, called from synchronous code (a notebook cell included)."""

    async def _complete(self, prompt: object, **kwargs: Any) -> LLMResponse:
        from orchlab.strategies.answer import complete

        if "offer" not in kwargs:  # complete()/ensemble(): tools come in **params (OpenAI's names)
            kwargs["params"], kwargs["offer"] = self.offer(kwargs.get("role"), kwargs.get("params"))
        return await complete(self, prompt, **kwargs)

    def _has_strategy(self, role: str) -> bool:
        """Whether ``role`` needs a plan: a role with a strategy, a URN or ``'provider:model'``
        (a plain role, or an unknown name for its "did you mean", takes the fast path)."""
        spec = self.config.roles.get(role)
        if spec is not None:
            return spec.has_strategy
        return isinstance(role, str) and ":" in role

    # --- embeddings (orchlab.pipeline.embed) -------------------------------------------------

    def embed(self, role: str, texts: object) -> Embeddings:
        """Vectors for ``texts`` (a list of strings) from the embedding model bound to ``role``
        (``kind: embedding``, or a model the catalog knows as an embedding model; ``role`` may
        also be ``'provider:model'``): an `Embeddings` with a numpy array, usage and cost.

        For example:

            e = client.embed("llm.embedding", ["a cat", "a kitten", "a stock market"])
            e.vectors.shape, e.similarity()[0, 1]
        """
        return run_sync(self._embed(role, texts))

    async def aembed(self, role: str, texts: object) -> Embeddings:
        """`embed` for async code (on the caller's own event loop, as `arun`)."""
        return await self._embed(role, texts)

    async def _embed(self, role: str, texts: object) -> Embeddings:
        batch = _texts(texts)
        if role not in self.config.roles and isinstance(role, str) and ":" in role:
            provider, model = parse_target(role)
            resolved = self.resolver.resolve_target(provider, model, GenerationParams())
            name = None
        else:
            resolved, name = self.resolve(role), role
        if not self._is_embedding(role, resolved.provider, resolved.model):
            raise InvalidRequestError(
                f"{role!r} is a chat role ({resolved.target}), not an embedding role: embed() takes a "
                "role with kind: embedding in the YAML, or bound to a model the catalog knows as an "
                "embedding model; nothing was sent",
                parameter="role",
            )
        ctx = CallContext(role=name, strategy="embedding", messages=tuple(Message("user", t) for t in batch))
        return await self.embedder.call(ctx, resolved, batch)

    def role_kind(self, role: str) -> str:
        """``"embedding"`` or ``"chat"``: the role's ``kind:``, else what the catalog says of its model."""
        bound = self.binding(role)
        return "embedding" if self._is_embedding(role, bound.provider, bound.model) else "chat"

    def _is_embedding(self, role: str, provider: str, model: str) -> bool:
        spec = self.config.roles.get(role)
        if spec is not None and spec.kind is not None:
            return spec.kind == "embedding"
        caps = self.catalog.entry(provider, model).info.capabilities
        return "embedding" in caps and "chat" not in caps

    def _refuse_embedding(self, role: str) -> Binding | None:
        """A chat call on an embedding role: an `InvalidRequestError` before anything is sent.
        The binding it looked up, if it did (the call goes on with it: one lookup per call)."""
        spec = self.config.roles.get(role)
        if spec is None or spec.kind == "chat" or spec.has_strategy:
            return None
        if spec.kind is None and spec.provider is None:
            return None
        bound = self.binding(role)
        if spec.kind is None and not self._is_embedding(role, bound.provider, bound.model):
            return bound
        raise InvalidRequestError(
            f"role {role!r} is an embedding role ({bound.provider}:{bound.model}): it makes vectors, "
            "not answers. Use client.embed(role, texts); nothing was sent",
            parameter="role",
        )

    # --- requests -------------------------------------------------------------------------------

    def _request(
        self,
        resolved: ResolvedLLMConfig,
        messages: object,
        params_override: ParamsOverride,
        offer: ToolOffer = NO_TOOLS,
        output: Any = None,
        json_answer: bool = False,
    ) -> ModelRequest:
        if output is not None:
            from orchlab.output.structured import output_schema

            output = output_schema(output)
        return ModelRequest(
            model=resolved.model,
            messages=tuple(to_messages(messages)),
            params=resolved.params
            if params_override is None
            else resolved.params.merged(check_params(params_override)),
            tools=offer.tools,
            tool_choice=offer.choice,
            parallel_tool_calls=offer.parallel,
            output=output,
            json_answer=json_answer,
        )

    def _single(
        self,
        role: str,
        messages: object,
        params_override: ParamsOverride,
        tags: Mapping[str, str] | None = None,
        offer: ToolOffer = NO_TOOLS,
        output: Any = None,
        *,
        cache: str | None = None,
        json_answer: bool = False,
        bound: Binding | None = None,
    ) -> tuple[CallContext, ResolvedLLMConfig, ModelRequest]:
        """A plain role call: its context, the role's binding (``bound``, when the caller has
        looked it up already: never a ``select:`` role's) and the request."""
        if bound is None:
            resolved = self.resolve(role)
        else:
            resolved = self.resolver.resolve_target(bound.provider, bound.model, bound.params, role=role)
        request = self._request(resolved, messages, params_override, offer, output, json_answer)
        ctx = CallContext(
            role=role, strategy="single", messages=request.messages, tags=dict(tags or {}), cache=cache
        )
        return ctx, resolved, request

    # --- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.providers.aclose()
        self.cache.close()

    def close(self) -> None:
        run_sync(self.aclose())

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ROUTING = ("risk", "complexity", "task_type", "tier")


def _routing(given: Mapping[str, str | None]) -> dict[str, str | None]:
    """A call's routing keywords (risk, complexity, task_type, tier); another name is refused."""
    import difflib

    for name in given:
        if name not in _ROUTING:
            close = difflib.get_close_matches(name, [*_ROUTING, "params_override"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidRequestError(
                f"run() got an unknown keyword {name!r} (routing keywords: {', '.join(_ROUTING)}; "
                f"generation params go in params_override){hint}",
                parameter=name,
            )
    return {k: v for k, v in given.items() if v is not None}


def _texts(texts: object) -> tuple[str, ...]:
    """What ``embed`` takes: a list of strings (a single string is one text)."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, bytes) or not isinstance(texts, Sequence):
        raise InvalidRequestError(
            f"texts must be a list of strings, got {type(texts).__name__}", parameter="texts"
        )
    if not texts:
        raise InvalidRequestError("texts is empty: pass at least one string", parameter="texts")
    for i, text in enumerate(texts):
        check_text(text, f"texts[{i}]")
    return tuple(texts)


def _check_format(format: str | None, output: Any) -> str | None:
    """The format asked for, checked before anything is sent (None: the text as generated)."""
    if format is None or format == "raw":
        return None
    from orchlab.output.formats import check_format

    if output is not None:
        raise InvalidRequestError(
            f"format={format!r} and output= do not combine: output= already gives the parsed answer",
            parameter="format",
        )
    return check_format(format)


def _formatted(response: LLMResponse, fmt: str | None) -> LLMResponse:
    if fmt is None:
        return response
    from orchlab.output.formats import apply_format

    return apply_format(response, fmt)


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
