"""The provider interface every adapter implements, and the boundary every adapter runs inside.

One required method, ``complete``. ``stream``, ``list_models``, ``is_available`` and
``context_window`` have honest defaults: a capability the adapter lacks raises
`UnsupportedCapabilityError`, it is never faked; a window the adapter does not set is None.
Each adapter validates its own ``options:`` (from the YAML) with its ``Options`` model.

The boundary: when an adapter class is defined, its ``complete``, ``stream``, ``complete_sync``,
``stream_sync`` and ``list_models`` are wrapped (`Provider.__init_subclass__`), so that for every adapter

- ``timeout_s`` is a deadline for the whole attempt, and a stream's first event and the silence
  between its events are bounded (`orchlab.providers.deadline`);
- whatever the SDK raises becomes an orchlab error (`translate`: the adapter's SDK-specific
  reading first, then `orchlab.providers.translate`'s reading by behaviour);
- the error carries no API key: its message is masked, and the SDK's exception (which holds the
  request's headers) is replaced on ``__cause__`` by a masked `ScrubbedCause`, ``__context__``
  cleared.

Adapters therefore let SDK exceptions propagate; they raise orchlab errors only for what they
find wrong themselves (a malformed answer, a tool call, a stream that ends without a finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from orchlab.auth import Secret
from orchlab.errors import (
    ConfigValidationError,
    MissingDependencyError,
    OrchlabError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ScrubbedCause,
    UnsupportedCapabilityError,
)
from orchlab.loop import iterate_sync, run_sync
from orchlab.providers import deadline
from orchlab.providers.registry import missing_dependency
from orchlab.providers.translate import MASK, mask, scrubbed
from orchlab.providers.translate import translate as translate_by_behaviour
from orchlab.types import EmbeddingRequest, Embeddings, LLMResponse, ModelRequest, StreamChunk

__all__ = ["MASK", "DiscoveredModel", "NoOptions", "Provider", "ProviderSettings"]


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """A provider entry after resolution: the key is resolved and wrapped in a `Secret`."""

    name: str
    kind: str
    api_base: str | None = None
    api_key: Secret | None = None
    timeout_s: float = 60.0
    max_retries: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    stream_idle_timeout_s: float | None = None
    """The longest silence between two stream events (None: ``timeout_s``)."""
    deployments: tuple[str, ...] = ()
    """Several servers of the same models (a pool: `orchlab.providers.deployments`)."""
    pool: Any = None
    """The entry's ``pool:`` settings (an `orchlab.config.schema.PoolConfig`), or None."""


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    """A model a provider reports (``list_models``), with what the server says about it."""

    id: str
    provider: str
    context_window: int | None = None
    size_bytes: int | None = None
    family: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class Provider(ABC):
    """The base class of every adapter, built in or a plugin (``orchlab.Provider``).

    Implement one method, ``async complete(request) -> LLMResponse``: ``request.model``,
    ``request.messages`` (``role``/``content``) and ``request.params`` (``temperature``,
    ``max_tokens``, ``stop``, ``seed``, ``extra`` for provider-specific keys); fill the response's
    ``usage`` from the provider's answer. The rest has honest defaults:

    - ``stream(request)``: write it as an async generator of `StreamChunk` (text deltas, then one
      chunk carrying the final `LLMResponse`); the default raises `UnsupportedCapabilityError`;
    - ``list_models()``: the default raises `UnsupportedCapabilityError`;
    - ``embed(EmbeddingRequest)``: vectors for a batch of at most ``embed_batch_size`` texts (an
      `Embeddings`); the default raises `UnsupportedCapabilityError`;
    - ``is_available()``: the default asks ``list_models()``; override it with a cheap health check;
    - ``prepare()`` / ``prepare_sync()``: import the SDK and build its client before a call's deadline
      starts (the default builds nothing);
    - ``aclose()``: release clients (the default has none to release).

    Class attributes: ``Options`` (a pydantic model with ``extra="forbid"``: validates the entry's
    ``options:``, available as ``self.options``), ``is_local`` (runs on the user's hardware: priced
    at $0 and preferred by ``local_first``), ``requires_key`` (an entry without a key is refused
    before any call; the key is ``self.settings.api_key``, a `Secret`: ``.reveal()`` it only where
    the client is built), ``default_api_base`` (``self.api_base`` when the YAML gives none) and
    ``kind`` (the built-in type name; a plugin's kind is the name it is registered or installed
    under), ``runs_on_any_loop`` (see below). ``self.name`` is the entry's key, ``self.settings``
    its resolved `ProviderSettings`.

    Event loops: an adapter with ``runs_on_any_loop = True`` is called on the caller's own loop by
    ``arun``, ``async for`` over a stream and the ``a*`` API (several loops over its life:
    ``asyncio.run`` twice, a loop per test), so it keeps nothing bound to one loop; the built-in
    adapters keep one SDK client per loop (`orchlab.loop.PerLoop`). With the default (False) its
    async methods always run on orchlab's engine loop, one thread hop each way from the caller's.

    The boundary (module docstring) wraps ``complete``, ``stream``, ``complete_sync``,
    ``stream_sync`` and ``list_models`` of every subclass: ``timeout_s`` bounds the whole
    ``complete`` (after ``prepare``); whatever the SDK or HTTP library raises becomes an orchlab
    error (an HTTP status error → by status, a timeout or a broken connection → its
    `ProviderError`, an ``ImportError`` → `MissingDependencyError`); the API key is masked out of
    every error. So let exceptions propagate. A stream's first event and the silences inside it
    are bounded only when the adapter reads through ``self.paced(...)`` (``self.paced_sync(...)``
    in a ``stream_sync``) or gives its HTTP client a read timeout (``self.limits(request)``).

    Make it findable by an entry point in the group ``orchlab.providers``, or name it in the YAML
    as ``type: "package.module:Class"`` (`orchlab.providers.registry`).
    """

    kind: ClassVar[str]
    requires_key: ClassVar[bool] = True
    default_api_base: ClassVar[str | None] = None
    is_local: ClassVar[bool] = False
    """Runs on the user's own hardware (priced at $0 unless the YAML gives a price)."""
    runs_on_any_loop: ClassVar[bool] = False
    """Its async methods may run on any event loop, the caller's (see the class docstring)."""
    Options: ClassVar[type[BaseModel]] = NoOptions
    output_mode: ClassVar[Literal["schema", "json", "prompt"]] = "prompt"
    """How a structured answer (``request.output``) is had: ``schema``, the adapter sends the
    schema the provider's native way and generation follows it; ``json``, the provider enforces
    JSON and orchlab puts the schema in the prompt; ``prompt``, orchlab puts it in the prompt.
    Every answer is validated and retried when invalid (`orchlab.output.structured`)."""
    embed_batch_size: ClassVar[int] = 256
    """The most texts one ``embed`` request carries (``client.embed`` splits longer lists)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Put the adapter's ``complete``, ``stream`` (an async generator), ``complete_sync``,
        ``stream_sync`` (a generator) and ``list_models`` inside the boundary (see the module
        docstring), once per definition."""
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "kind"):  # a plugin need not name itself: messages use its registry name
            cls.kind = f"{cls.__module__}:{cls.__qualname__}"
        for name, guard in _GUARDS.items():
            fn = cls.__dict__.get(name)
            if fn is None or getattr(fn, "__orchlab_boundary__", False):
                continue
            if name == "stream" and not inspect.isasyncgenfunction(fn):
                continue
            if name == "stream_sync" and not inspect.isgeneratorfunction(fn):
                continue
            guarded = guard(fn)
            guarded.__orchlab_boundary__ = True  # type: ignore[attr-defined]
            setattr(cls, name, guarded)

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.name = settings.name
        try:
            self.options = self.Options.model_validate(dict(settings.options))
        except ValidationError as exc:
            problems = [
                (f"providers.{self.name}.options." + ".".join(str(p) for p in e["loc"]), e["msg"])
                for e in exc.errors()
            ]
            raise ConfigValidationError(
                "; ".join(f"{key}: {msg}" for key, msg in problems), problems=problems
            ) from None

    @property
    def api_base(self) -> str | None:
        return self.settings.api_base or self.default_api_base

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, api_base={self.api_base!r})"

    # --- the interface ---------------------------------------------------------------------

    @abstractmethod
    async def complete(self, request: ModelRequest) -> LLMResponse:
        """One non-streamed completion; usage is always filled from the provider's answer."""

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        """Text deltas as they arrive; the last chunk carries the final response with usage."""
        raise UnsupportedCapabilityError(
            f"{self.settings.kind} adapter cannot stream", provider=self.name, model=request.model
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Vectors for ``request.texts`` (at most ``embed_batch_size``), usage from the provider."""
        raise UnsupportedCapabilityError(
            f"{self.settings.kind} adapter cannot embed text", provider=self.name, model=request.model
        )

    async def list_models(self) -> list[DiscoveredModel]:
        raise UnsupportedCapabilityError(
            f"{self.settings.kind} adapter cannot list models", provider=self.name
        )

    async def is_available(self) -> bool:
        """True when the provider answers; the default asks it for its models."""
        try:
            await self.list_models()
        except UnsupportedCapabilityError:
            raise
        except ProviderError:
            return False
        return True

    async def aclose(self) -> None:
        """Release clients and connections."""

    # --- set-up before the deadline -----------------------------------------------------------

    def prepare(self) -> None:
        """Build what a call needs before its deadline starts: the SDK's import and client. A first
        call's ``timeout_s`` bounds the provider's answer, not orchlab's set-up (the import alone
        takes seconds on a loaded machine). Called on the event loop the call runs on, before
        ``complete``, ``stream`` and ``embed``; the default has nothing to build."""

    def prepare_sync(self) -> None:
        """`prepare` for the blocking ``complete_sync`` and ``stream_sync``."""

    # --- limits and errors ------------------------------------------------------------------

    def limits(self, request: ModelRequest) -> tuple[float, float]:
        """``(timeout_s, stream_idle_timeout_s)`` for ``request``: the call's deadline (the role's
        ``timeout_s``, else the provider's), and the longest silence inside a stream."""
        timeout_s = request.params.timeout_s or self.settings.timeout_s
        return timeout_s, self.settings.stream_idle_timeout_s or timeout_s

    def paced(self, opening: Awaitable[Any], request: ModelRequest) -> AsyncIterator[Any]:
        """The events of the SDK stream ``opening`` resolves to, within ``request``'s limits: the
        stream and its first event within ``timeout_s``, then no silence longer than
        ``stream_idle_timeout_s``. The SDK stream is closed however the iteration ends."""
        first_s, idle_s = self.limits(request)

        def stalled(phase: str, limit_s: float) -> ProviderTimeoutError:
            return self.timeout_error(request.model, limit_s, phase=phase)

        return deadline.paced(opening, first_s=first_s, idle_s=idle_s, stalled=stalled)

    def paced_sync(self, opening: Callable[[], Any], request: ModelRequest) -> Iterator[Any]:
        """`paced` for a blocking SDK stream (``opening()`` opens it), in the caller's thread: the
        SDK's HTTP client must carry `deadline.EVENT_HOOKS` for a limit to cut a blocked read."""
        first_s, idle_s = self.limits(request)

        def stalled(phase: str, limit_s: float) -> ProviderTimeoutError:
            return self.timeout_error(request.model, limit_s, phase=phase)

        return deadline.paced_sync(opening, first_s=first_s, idle_s=idle_s, stalled=stalled)

    def translate(
        self, exc: BaseException, model: str | None, timeout_s: float | None = None
    ) -> ProviderError:
        """The orchlab error for an SDK or transport exception. Adapters read their SDK's own
        errors first (error events inside streams, error bodies) and call this for the rest."""
        return translate_by_behaviour(
            exc,
            provider=self.name,
            model=model,
            api_base=self.api_base,
            timeout_s=timeout_s or self.settings.timeout_s,
        )

    def timeout_error(
        self, model: str | None, limit_s: float, *, phase: str = "call"
    ) -> ProviderTimeoutError:
        """The error for a limit hit: ``phase`` is ``call`` (the attempt's deadline), ``first`` (a
        stream's first event) or ``idle`` (silence inside a stream)."""
        if phase == "idle":
            message = f"the stream from {self.api_base} was silent for {limit_s:g}s (stream_idle_timeout_s)"
        elif phase == "first":
            message = f"no first stream event within {limit_s:g}s (timeout_s) from {self.api_base}"
        else:
            message = f"no answer within {limit_s:g}s (timeout_s) from {self.api_base}"
        error = ProviderTimeoutError(message, provider=self.name, model=model)
        error.limit_s = limit_s
        return error

    def tool_call_error(self, tools: Sequence[str], model: str | None) -> UnsupportedCapabilityError:
        """The error for an answer that calls tools orchlab cannot represent (not functions: an
        OpenAI custom tool, a provider's built-in tool); an answer whose call is hidden in ``raw``
        would read as an empty reply."""
        named = ", ".join(dict.fromkeys(tools))  # in order, once each
        return UnsupportedCapabilityError(
            f"the model answered with a call to the tool(s) {named}, which are not function tools: "
            "orchlab maps function calls only (orchlab.Tool, @orchlab.tool)",
            provider=self.name,
            model=model,
        )

    def unfinished_stream(self, model: str | None, parts: Sequence[str]) -> ProviderError:
        """The error for a stream that ended without saying it was done (no finish reason): cut
        short after some text, a `ProviderConnectionError` (retryable); with no text at all, the
        server sent nothing this adapter can read, a `ProviderResponseError`."""
        received = sum(len(p) for p in parts)
        where = f"the stream from {self.api_base} ended without a finish reason"
        if received:
            return ProviderConnectionError(
                f"{where} after {received} characters of text: the answer is cut short",
                provider=self.name,
                model=model,
            )
        return ProviderResponseError(
            f"{where} and without any text: the server sent no stream this adapter can read "
            "(an HTML page, a body that is not a stream, keep-alives only, or nothing)",
            provider=self.name,
            model=model,
        )

    def _key(self) -> str:
        """The API key in clear text ("" when the provider has none): for building SDK clients."""
        return self.settings.api_key.reveal() if self.settings.api_key else ""

    def _boundary_error(
        self, exc: Exception, model: str | None, limit_s: float, *, deadline_hit: bool = False
    ) -> Exception:
        """What the boundary raises for ``exc``: a deadline hit, an orchlab error as it is, a missing SDK
        (`MissingDependencyError`), or the
        translation of an SDK exception; in every case scrubbed of the API key."""
        if deadline_hit:
            error: Exception = self.timeout_error(model, limit_s)
            error.__cause__ = None
        elif isinstance(exc, OrchlabError):
            error = exc
        elif isinstance(exc, ImportError):
            # the SDK, imported lazily on first use, is not installed: name the extra to install
            error = missing_dependency(self, exc)
            error.__cause__ = exc
        else:
            error = self.translate(exc, model, limit_s)
            if error is not exc:
                error.__cause__ = exc
        return _scrub(error, (self._key(),))

    def context_window(self) -> int | None:
        """The context window this adapter loads its models with, when it sets one (llama.cpp's
        ``n_ctx``, Ollama's ``num_ctx``); None: each model's own, as the catalog knows it."""
        return None

    # --- sync twins --------------------------------------------------------------------------

    def complete_sync(self, request: ModelRequest) -> LLMResponse:
        return run_sync(self.complete(request))

    def stream_sync(self, request: ModelRequest) -> Iterator[StreamChunk]:
        """`stream` for synchronous code. The default drives ``stream`` on the engine loop and
        takes its chunks over in batches; an adapter with a blocking SDK client overrides it as a
        generator (read through `paced_sync`) so that a sync stream never leaves the caller's
        thread."""
        return iterate_sync(self.stream(request))

    def list_models_sync(self) -> list[DiscoveredModel]:
        return run_sync(self.list_models())

    def is_available_sync(self) -> bool:
        return run_sync(self.is_available())


# --- the boundary ----------------------------------------------------------------------------


def _scrub(error: Exception, secrets: tuple[str, ...], depth: int = 0) -> Exception:
    """``error`` with its message masked, an SDK exception on ``__cause__`` (or ``__context__``)
    replaced by its `ScrubbedCause`, and ``__context__`` cleared. The ``ImportError`` behind a
    `MissingDependencyError` is kept: it names a module, never a request (a copy without its
    context goes on ``__cause__``: Python's own exception is not patched)."""
    if error.args and isinstance(error.args[0], str) and any(secrets):
        error.args = (mask(error.args[0], secrets), *error.args[1:])
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if isinstance(error, MissingDependencyError) and isinstance(cause, ImportError):
        if cause.__context__ is not None or cause.__cause__ is not None:
            kind = ModuleNotFoundError if isinstance(cause, ModuleNotFoundError) else ImportError
            alone = kind(*cause.args, name=cause.name, path=cause.path)
            cause = alone.with_traceback(cause.__traceback__)
    elif cause is not None and not isinstance(cause, ScrubbedCause):
        if isinstance(cause, OrchlabError) and isinstance(cause, Exception) and depth < 8:
            cause = _scrub(cause, secrets, depth + 1)
        else:
            cause = scrubbed(cause, secrets)
    error.__cause__ = cause
    error.__context__ = None
    error.__suppress_context__ = True
    return error


def _guard_complete(fn: Callable[[Any, ModelRequest], Awaitable[LLMResponse]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def complete(self: Provider, request: ModelRequest) -> LLMResponse:
        limit_s, _ = self.limits(request)
        scope = None
        try:
            self.prepare()  # before the deadline starts (asyncio.timeout fixes its end when made)
            scope = asyncio.timeout(limit_s)
            async with scope:
                return await fn(self, request)
        except Exception as exc:
            hit = scope is not None and scope.expired()
            error = self._boundary_error(exc, request.model, limit_s, deadline_hit=hit)
        raise error  # outside the handler: the SDK's exception must not become __context__

    return complete


def _guard_stream(fn: Callable[[Any, ModelRequest], AsyncIterator[StreamChunk]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def stream(self: Provider, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        limit_s, _ = self.limits(request)
        try:
            self.prepare()  # before the first event's limit starts
            async with contextlib.aclosing(fn(self, request)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    yield chunk
        except Exception as exc:
            error = self._boundary_error(exc, request.model, limit_s)
        else:
            return
        raise error

    return stream


def _guard_stream_sync(fn: Callable[[Any, ModelRequest], Iterator[StreamChunk]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def stream_sync(self: Provider, request: ModelRequest) -> Iterator[StreamChunk]:
        try:
            self.prepare_sync()  # before the first event's limit starts
            with contextlib.closing(fn(self, request)) as chunks:  # type: ignore[type-var]
                yield from chunks
        except Exception as exc:
            error = self._boundary_error(exc, request.model, max(self.limits(request)))
        else:
            return
        raise error

    return stream_sync


def _guard_sync(fn: Callable[[Any, ModelRequest], LLMResponse]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def complete_sync(self: Provider, request: ModelRequest) -> LLMResponse:
        limit_s, _ = self.limits(request)
        unprepared = None
        try:
            self.prepare_sync()  # before the deadline starts
        except Exception as exc:
            unprepared = self._boundary_error(exc, request.model, limit_s)
        if unprepared is not None:
            raise unprepared  # outside the handler, as below
        with deadline.SyncDeadline(limit_s) as cut:
            try:
                return fn(self, request)
            except Exception as exc:
                error = self._boundary_error(exc, request.model, limit_s, deadline_hit=cut.fired)
        raise error

    return complete_sync


def _guard_embed(fn: Callable[[Any, EmbeddingRequest], Awaitable[Embeddings]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def embed(self: Provider, request: EmbeddingRequest) -> Embeddings:
        limit_s = request.timeout_s or self.settings.timeout_s
        scope = None
        try:
            self.prepare()  # before the deadline starts
            scope = asyncio.timeout(limit_s)
            async with scope:
                return await fn(self, request)
        except Exception as exc:
            hit = scope is not None and scope.expired()
            error = self._boundary_error(exc, request.model, limit_s, deadline_hit=hit)
        raise error

    return embed


def _guard_list(fn: Callable[[Any], Awaitable[list[DiscoveredModel]]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def list_models(self: Provider) -> list[DiscoveredModel]:
        limit_s = self.settings.timeout_s
        scope = asyncio.timeout(limit_s)
        try:
            async with scope:
                return await fn(self)
        except Exception as exc:
            error = self._boundary_error(exc, None, limit_s, deadline_hit=scope.expired())
        raise error

    return list_models


_GUARDS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "complete": _guard_complete,
    "stream": _guard_stream,
    "complete_sync": _guard_sync,
    "stream_sync": _guard_stream_sync,
    "list_models": _guard_list,
    "embed": _guard_embed,
}
