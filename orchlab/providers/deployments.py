"""Pools: one provider entry served by several deployments of the same models.

::

    providers:
      gpu-pool:
        type: ollama                     # or vllm, or any OpenAI-compatible kind
        deployments: ["http://gpu1:11434", "http://gpu2:11434", "http://gpu3:11434"]
        pool: {balance: least_outstanding, cooldown_after: 1, cooldown_s: 30, health_check_s: 15}

Each request goes to one deployment: ``least_outstanding`` (the default) takes the one with the
fewest requests in flight (ties: the lower recent latency); ``latency`` draws one with a chance
in proportion to 1 / ((requests in flight + 1) x recent mean latency). A deployment not
measured yet is tried first.

A deployment that fails with a retryable error (connection refused or reset, 5xx, 429, a
timeout) is cooled down by the client's `ProviderHealth` (key ``"<entry>@<url>"``) after
``cooldown_after`` such failures in a row, for ``cooldown_s``; the request moves to another
deployment at once (each deployment is tried at most once per request; a stream moves only
before its first token). When every deployment is cooling down or marked down, they are tried
anyway. A background check (every ``health_check_s``, on orchlab's daemon engine thread, each
check bounded by 5 s) asks each deployment for its models (``/api/tags``, ``/v1/models``) and marks
it up or down; it stops when the client is closed or dropped, and never keeps a process alive.

Counters per deployment: `DeploymentPool.stats`, ``client.usage(by="deployment")`` and the
``orchlab.deployment`` attribute of each attempt's span.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from orchlab import logs
from orchlab.errors import AllAttemptsFailedError, ConfigValidationError, ProviderError
from orchlab.providers.base import DiscoveredModel, Provider, ProviderSettings

if TYPE_CHECKING:
    import concurrent.futures

    from orchlab.types import LLMResponse, ModelRequest, StreamChunk

CHECK_TIMEOUT_S = 5.0
_ALPHA = 0.2  # weight of the newest latency in the moving average


class Health(Protocol):
    """What a pool needs of the client's `orchlab.strategies.health.ProviderHealth`."""

    def failure(self, provider: str, error: str, *, after: int, cooldown_s: float) -> bool: ...

    def success(self, provider: str) -> None: ...

    def cooling(self, provider: str) -> float | None: ...


class _OwnHealth:
    """Cooldowns for a pool built without a client: the same rule as the client's
    `ProviderHealth` (which the client passes in), on the monotonic clock."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def failure(self, provider: str, error: str, *, after: int, cooldown_s: float) -> bool:
        count = self._failures.get(provider, 0) + 1
        if count >= after and cooldown_s > 0:
            self._failures[provider] = 0
            self._until[provider] = time.monotonic() + cooldown_s
            return True
        self._failures[provider] = count
        return False

    def success(self, provider: str) -> None:
        self._failures.pop(provider, None)
        self._until.pop(provider, None)

    def cooling(self, provider: str) -> float | None:
        left = self._until.get(provider, 0.0) - time.monotonic()
        return left if left > 0 else None


@dataclass(slots=True, eq=False)
class Deployment:
    """One server of a pool and its counters."""

    url: str
    key: str
    """Its key in the client's `ProviderHealth` (``"<entry>@<url>"``)."""
    adapter: Provider
    outstanding: int = 0
    requests: int = 0
    """Requests sent to it (moved ones included)."""
    ok: int = 0
    errors: int = 0
    moved: int = 0
    """Requests moved to another deployment after this one failed them."""
    latency_s: float | None = None
    """Moving average of its successful requests' latency."""
    up: bool = True
    """What the last health check said."""
    checked_at: float | None = None


class DeploymentPool(Provider):
    """A provider entry with ``deployments:``: one adapter per deployment, behind one name.
    Built by `orchlab.providers.pool.ProviderPool` (``client.provider(name)`` returns it)."""

    kind = "pool"
    requires_key = False
    runs_on_any_loop = True
    inner: ClassVar[type[Provider]]

    def __init__(  # the base __init__ is not called: each deployment's adapter validates its options
        self, settings: ProviderSettings, *, health: Health | None = None
    ) -> None:
        self.settings = settings
        self.name = settings.name
        pool = settings.pool
        self.balance: str = getattr(pool, "balance", "least_outstanding")
        self.cooldown_after: int = getattr(pool, "cooldown_after", 1)
        self.cooldown_s: float = getattr(pool, "cooldown_s", 30.0)
        self.health_check_s: float = getattr(pool, "health_check_s", 15.0)
        self.health: Health = health if health is not None else _OwnHealth()
        self.deployments: list[Deployment] = [
            Deployment(
                url,
                f"{settings.name}@{url}",
                self.inner(replace(settings, api_base=url, deployments=(), pool=None)),
            )
            for url in settings.deployments
        ]
        self.options = self.deployments[0].adapter.options
        self._lock = threading.Lock()
        self._random = random.Random()
        self._watcher: concurrent.futures.Future[None] | None = None
        if self.health_check_s > 0:
            self._watcher = _start_watching(self)

    def __repr__(self) -> str:
        urls = ", ".join(d.url for d in self.deployments)
        return f"DeploymentPool(name={self.name!r}, kind={self.inner.kind!r}, deployments=[{urls}])"

    @property
    def api_base(self) -> str | None:
        return self.deployments[0].url

    # --- choosing ---------------------------------------------------------------------------

    def _pick(self, tried: list[Deployment]) -> Deployment | None:
        """The deployment for the next try (its request counted as outstanding), or None when
        every deployment was tried."""
        cooling = self.health.cooling
        best: Deployment | None = None
        best_score: tuple[float, float] = (0.0, 0.0)
        fallback: Deployment | None = None
        by_latency = self.balance == "latency"
        weighted: list[Deployment] = []
        with self._lock:
            for d in self.deployments:
                if d in tried:
                    continue
                if not d.up or cooling(d.key) is not None:
                    fallback = fallback or d
                    continue
                latency = d.latency_s or 0.0
                if by_latency and latency:
                    weighted.append(d)
                    continue
                score = (d.outstanding, latency)  # an unmeasured deployment (latency 0) first
                if best is None or score < best_score:
                    best, best_score = d, score
            if best is None and weighted:
                # chance in proportion to speed: 1 / ((in flight + 1) x recent latency); the slower
                # ones keep a share, so their latency stays measured
                weights = [1 / ((d.outstanding + 1) * (d.latency_s or 1.0)) for d in weighted]
                best = self._random.choices(weighted, weights)[0]
            chosen = best or fallback  # all cooling or down: tried anyway
            if chosen is not None:
                chosen.outstanding += 1
                chosen.requests += 1
        return chosen

    def _done(self, d: Deployment, started: float | None) -> None:
        with self._lock:
            d.outstanding -= 1
            if started is not None:
                took = time.perf_counter() - started
                d.ok += 1
                d.latency_s = took if d.latency_s is None else d.latency_s + _ALPHA * (took - d.latency_s)
        if started is not None and self.health.cooling(d.key) is None:
            # a request sent before the deployment failed does not end its cooldown
            self.health.success(d.key)

    def _failed(self, d: Deployment, exc: ProviderError, moved: bool) -> None:
        with self._lock:
            d.outstanding -= 1
            d.errors += 1
            d.moved += moved
        if self.health.failure(d.key, str(exc), after=self.cooldown_after, cooldown_s=self.cooldown_s):
            logs.decision("cooldown", provider=self.name, deployment=d.url, cooldown_s=self.cooldown_s)
        if moved:
            logs.decision("failover", provider=self.name, deployment=d.url, error_type=type(exc).__name__)

    def _exhausted(self, failures: list[tuple[Deployment, ProviderError]], model: str) -> ProviderError:
        last = failures[-1][1]
        if len(failures) == 1:
            return last
        tried = ", ".join(f"{d.url} ({type(e).__name__})" for d, e in failures)
        error = type(last)(
            f"every deployment of {self.name!r} failed this request: {tried}; last: {last}",
            provider=self.name,
            model=model,
            status_code=last.status_code,
            retry_after=last.retry_after,
            retryable=last.retryable,
        )
        error.__cause__ = AllAttemptsFailedError("the deployments' errors", [e for _, e in failures])
        return error

    # --- the interface ------------------------------------------------------------------------

    async def complete(self, request: ModelRequest) -> LLMResponse:
        tries = _Tries(self)
        while (d := tries.next()) is not None:
            try:
                response = await d.adapter.complete(request)
            except ProviderError as exc:
                if tries.failed(d, exc):
                    continue
                break
            except BaseException:
                tries.aborted(d)
                raise
            tries.succeeded(d)
            return tries.served(response, d)
        raise tries.exhausted(request.model)

    def complete_sync(self, request: ModelRequest) -> LLMResponse:
        tries = _Tries(self)
        while (d := tries.next()) is not None:
            try:
                response = d.adapter.complete_sync(request)
            except ProviderError as exc:
                if tries.failed(d, exc):
                    continue
                break
            except BaseException:
                tries.aborted(d)
                raise
            tries.succeeded(d)
            return tries.served(response, d)
        raise tries.exhausted(request.model)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        tries = _Tries(self)
        while (d := tries.next()) is not None:
            began = False
            chunks = cast("AsyncGenerator[StreamChunk, None]", d.adapter.stream(request))
            try:
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        if chunk.response is not None:
                            chunk = replace(chunk, response=tries.served(chunk.response, d))
                        began = began or bool(chunk.delta)
                        yield chunk
            except ProviderError as exc:
                if tries.failed(d, exc, began=began):  # a stream that began is never moved
                    continue
                break
            except BaseException:
                tries.aborted(d)
                raise
            tries.succeeded(d)
            return
        raise tries.exhausted(request.model)

    async def list_models(self) -> list[DiscoveredModel]:
        """The models of the deployments that answer (each listed once); the first error when
        none answers."""
        results = await asyncio.gather(
            *(d.adapter.list_models() for d in self.deployments), return_exceptions=True
        )
        found: dict[str, DiscoveredModel] = {}
        errors = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                errors.append(result)
                continue
            for model in result:
                found.setdefault(model.id, replace(model, provider=self.name))
        if not found and errors:
            raise errors[0]
        return list(found.values())

    async def is_available(self) -> bool:
        """True when any deployment answers its health check."""
        return any(await self.check())

    async def check(self) -> list[bool]:
        """Ask every deployment now (``/api/tags``, ``/v1/models``) and mark it up or down."""
        results = await asyncio.gather(*(_alive(d.adapter) for d in self.deployments))
        now = time.time()
        for d, up in zip(self.deployments, results, strict=True):
            d.up, d.checked_at = up, now
        return list(results)

    def context_window(self) -> int | None:
        return self.deployments[0].adapter.context_window()

    def available(self) -> str | None:
        """None when some deployment may be called; else why none may (all down or cooling)."""
        cooling = self.health.cooling
        if any(d.up and cooling(d.key) is None for d in self.deployments):
            return None
        return f"all {len(self.deployments)} deployments of {self.name!r} are down or cooling down"

    def stats(self) -> list[dict[str, Any]]:
        """One row per deployment: url, up, cooling_s, outstanding, requests, ok, errors, moved,
        latency_ms (moving average)."""
        with self._lock:
            return [
                {
                    "url": d.url,
                    "up": d.up,
                    "cooling_s": self.health.cooling(d.key),
                    "outstanding": d.outstanding,
                    "requests": d.requests,
                    "ok": d.ok,
                    "errors": d.errors,
                    "moved": d.moved,
                    "latency_ms": None if d.latency_s is None else round(d.latency_s * 1000, 3),
                }
                for d in self.deployments
            ]

    async def aclose(self) -> None:
        """Stop the health check and close every deployment's adapter."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(*(d.adapter.aclose() for d in self.deployments))

    @property
    def watching(self) -> bool:
        """Whether the background health check is running."""
        return self._watcher is not None and not self._watcher.done()


for _name in ("complete", "complete_sync", "stream", "list_models"):
    # each deployment's adapter runs inside its own boundary (deadline, error translation, no key
    # in messages); a second one around the pool would only cost time, and cut failovers short
    getattr(DeploymentPool, _name).__orchlab_boundary__ = True


_POOL_CLASSES: dict[type[Provider], type[DeploymentPool]] = {}


class _Tries:
    """One request's walk over a pool's deployments: which one to try next and what each try
    ended in. The pool's three ways of sending (async, sync, stream) share it, so the failover
    rules live here once."""

    def __init__(self, pool: DeploymentPool) -> None:
        self.pool = pool
        self.tried: list[Deployment] = []
        self.failures: list[tuple[Deployment, ProviderError]] = []
        self.started = 0.0

    def next(self) -> Deployment | None:
        d = self.pool._pick(self.tried)
        if d is not None:
            self.tried.append(d)
            self.started = time.perf_counter()
        return d

    def failed(self, d: Deployment, exc: ProviderError, *, began: bool = False) -> bool:
        """Counts the failure; True when the request moves on to another deployment."""
        more = exc.retryable and not began and len(self.tried) < len(self.pool.deployments)
        self.pool._failed(d, exc, moved=more)
        self.failures.append((d, exc))
        return more

    def aborted(self, d: Deployment) -> None:
        self.pool._done(d, None)

    def succeeded(self, d: Deployment) -> None:
        self.pool._done(d, self.started)

    def served(self, response: LLMResponse, d: Deployment) -> LLMResponse:
        moved = tuple(f"{f.url} ({type(e).__name__})" for f, e in self.failures)
        return replace(response, deployment=d.url, moved_from=moved)

    def exhausted(self, model: str) -> ProviderError:
        return self.pool._exhausted(self.failures, model)


def pool_class(inner: type[Provider], provider: str) -> type[DeploymentPool]:
    """The pool class over adapter class ``inner`` (it looks like ``inner``: its kind, is_local)."""
    if inner.default_api_base is None and inner.is_local:  # an in-process model (llama.cpp)
        raise ConfigValidationError(
            f"providers.{provider}.deployments: type {inner.kind!r} runs its model in this process, "
            "not on a server; deployments: is for ollama, vllm and OpenAI-compatible kinds",
            problems=[(f"providers.{provider}.deployments", f"not supported for type {inner.kind!r}")],
        )
    cls = _POOL_CLASSES.get(inner)
    if cls is None:
        attrs = {
            "kind": inner.kind,
            "inner": inner,
            "is_local": inner.is_local,
            "requires_key": inner.requires_key,
            "Options": inner.Options,
            "__module__": __name__,
        }
        cls = _POOL_CLASSES[inner] = cast(
            "type[DeploymentPool]", type(f"{inner.__name__}Pool", (DeploymentPool,), attrs)
        )
    return cls


# --- the background health check ------------------------------------------------------------------


async def _alive(adapter: Provider) -> bool:
    try:
        async with asyncio.timeout(min(adapter.settings.timeout_s, CHECK_TIMEOUT_S)):
            return await adapter.is_available()
    except (Exception, TimeoutError):
        return False


def _start_watching(pool: DeploymentPool) -> concurrent.futures.Future[None]:
    from orchlab.loop import engine_loop

    ref = weakref.ref(pool)
    future = asyncio.run_coroutine_threadsafe(_watch(ref, pool.health_check_s), engine_loop())
    weakref.finalize(pool, future.cancel)  # a client dropped without close() stops it too
    return future


async def _watch(ref: Callable[[], DeploymentPool | None], every_s: float) -> None:
    """Check every deployment every ``every_s``, holding the pool only while checking."""
    while True:
        pool = ref()
        if pool is None:
            return
        await pool.check()
        del pool
        await asyncio.sleep(every_s)
