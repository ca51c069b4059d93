"""The adapters of one client, each built once, on first use, and closed together."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

from orchlab.loop import on_engine_loop, pump_async, run_async
from orchlab.providers.base import Provider, ProviderSettings
from orchlab.providers.registry import provider_class

if TYPE_CHECKING:
    from orchlab.providers.deployments import Health
    from orchlab.types import EmbeddingRequest, Embeddings, LLMResponse, ModelRequest, StreamChunk


class ProviderPool:
    """Adapters by provider entry name. ``settings_for(name)`` looks the entry (and its key) up;
    a missing key raises there and nothing is cached, so a key set later is picked up. An entry
    with ``deployments:`` is a `orchlab.providers.deployments.DeploymentPool` (cooled down in
    ``health``, the client's `ProviderHealth`)."""

    def __init__(
        self, settings_for: Callable[[str], ProviderSettings], *, health: Health | None = None
    ) -> None:
        self._settings_for = settings_for
        self._health = health
        self._adapters: dict[str, Provider] = {}
        self._hops: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Provider:
        adapter = self._adapters.get(name)
        if adapter is None:
            with self._lock:  # callers on several threads' loops build it once
                adapter = self._adapters.get(name)
                if adapter is None:
                    settings = self._settings_for(name)
                    cls = provider_class(settings.kind, provider=name)
                    if settings.deployments:
                        from orchlab.providers.deployments import pool_class

                        adapter = pool_class(cls, name)(settings, health=self._health)
                    else:
                        adapter = cls(settings)
                    self._adapters[name] = adapter
        return adapter

    __call__ = get

    def here(self, name: str) -> Provider:
        """The adapter to await on the running loop: the adapter itself when it runs on any loop
        (``runs_on_any_loop``: the built-in ones) or this is the engine loop; else a stand-in whose
        ``complete``, ``stream`` and ``embed`` hop to the engine loop, where that adapter always runs."""
        adapter = self.get(name)
        if adapter.runs_on_any_loop or on_engine_loop():
            return adapter
        hop = self._hops.get(name)
        if hop is None:
            hop = self._hops[name] = cast("Provider", _OnEngineLoop(adapter))
        return hop

    async def aclose(self) -> None:
        """Close every adapter built so far and forget them: one that runs on any loop here (it
        reaches its clients on other loops itself), any other on the engine loop."""
        adapters, self._adapters, self._hops = list(self._adapters.values()), {}, {}
        await asyncio.gather(*(a.aclose() if a.runs_on_any_loop else run_async(a.aclose()) for a in adapters))


class _OnEngineLoop:
    """An adapter bound to the engine loop, seen from another loop: ``complete``, ``stream`` and
    ``embed`` run there (a thread hop each way, batches for a stream); anything else is the adapter's."""

    def __init__(self, adapter: Provider) -> None:
        self.adapter = adapter

    async def complete(self, request: ModelRequest) -> LLMResponse:
        return await run_async(self.adapter.complete(request))

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        return pump_async(self.adapter.stream(request))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        return await run_async(self.adapter.embed(request))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.adapter, name)
