"""The adapters of one client, each built once, on first use, and closed together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orchlab.providers.base import Provider, ProviderSettings
from orchlab.providers.registry import provider_class


class ProviderPool:
    """Adapters by provider entry name. ``settings_for(name)`` looks the entry (and its key) up;
    a missing key raises there and nothing is cached, so a key set later is picked up."""

    def __init__(self, settings_for: Callable[[str], ProviderSettings]) -> None:
        self._settings_for = settings_for
        self._adapters: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        adapter = self._adapters.get(name)
        if adapter is None:
            settings = self._settings_for(name)
            adapter = provider_class(settings.kind, provider=name)(settings)
            self._adapters[name] = adapter
        return adapter

    __call__ = get

    async def aclose(self) -> None:
        """Close every adapter built so far (each on its own loop hop) and forget them."""
        from orchlab.loop import run_async

        adapters, self._adapters = list(self._adapters.values()), {}
        await asyncio.gather(*(run_async(a.aclose()) for a in adapters))
