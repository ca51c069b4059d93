"""The provider interface every adapter implements.

One required method, ``complete``. ``stream``, ``list_models``, ``is_available`` and
``context_window`` have honest defaults: a capability the adapter lacks raises
`UnsupportedCapabilityError`, it is never faked; a window the adapter does not set is None.
Each adapter validates its own ``options:`` (from the YAML) with its ``Options`` model, and
turns SDK exceptions into orchlab's errors in ``translate`` (raised through ``failure``, which
keeps the API key out of messages and tracebacks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from orchlab.auth import Secret
from orchlab.errors import (
    ConfigValidationError,
    ProviderError,
    ProviderTimeoutError,
    UnsupportedCapabilityError,
)
from orchlab.loop import iterate_sync, run_sync
from orchlab.providers.registry import missing_dependency
from orchlab.types import LLMResponse, ModelRequest, StreamChunk

MASK = "**********"


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
    kind: ClassVar[str]
    requires_key: ClassVar[bool] = True
    default_api_base: ClassVar[str | None] = None
    is_local: ClassVar[bool] = False
    """Runs on the user's own hardware (priced at $0 unless the YAML gives a price)."""
    Options: ClassVar[type[BaseModel]] = NoOptions

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
            f"{self.kind} adapter cannot stream", provider=self.name, model=request.model
        )

    async def list_models(self) -> list[DiscoveredModel]:
        raise UnsupportedCapabilityError(f"{self.kind} adapter cannot list models", provider=self.name)

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

    # --- errors ----------------------------------------------------------------------------

    def translate(self, exc: Exception, model: str | None, timeout_s: float | None = None) -> Exception:
        """The orchlab error for an SDK or transport exception (the default: ``exc`` itself)."""
        return exc

    def failure(self, exc: Exception, model: str | None, timeout_s: float | None = None) -> Exception:
        """What an adapter raises for ``exc``: `translate`'s error, with the API key masked in its
        message (a server may echo the key back). Raise it ``from self.cause_of(exc)``.

        An ``ImportError`` (the SDK, imported lazily on first use, is not installed) becomes a
        `MissingDependencyError` naming the extra to install, before `translate` would import
        the missing SDK a second time."""
        if isinstance(exc, ImportError):
            return missing_dependency(self, exc)
        error = self.translate(exc, model, timeout_s)
        key = self._key()
        if key and error is not exc and error.args and isinstance(error.args[0], str):
            error.args = (error.args[0].replace(key, MASK), *error.args[1:])
        return error

    def cause_of(self, exc: Exception) -> Exception | None:
        """``exc``, or None when chaining it would carry the API key (a server that echoes it)."""
        key = self._key()
        if key and (key in str(exc) or key in repr(getattr(exc, "body", None))):
            return None
        return exc

    def _key(self) -> str:
        """The API key in clear text ("" when the provider has none): for building SDK clients."""
        return self.settings.api_key.reveal() if self.settings.api_key else ""

    def timeout_error(self, model: str | None, timeout_s: float | None) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"no answer within {timeout_s or self.settings.timeout_s:g}s from {self.api_base}",
            provider=self.name,
            model=model,
        )

    def context_window(self) -> int | None:
        """The context window this adapter loads its models with, when it sets one (llama.cpp's
        ``n_ctx``, Ollama's ``num_ctx``); None: each model's own, as the catalog knows it."""
        return None

    # --- sync twins --------------------------------------------------------------------------

    def complete_sync(self, request: ModelRequest) -> LLMResponse:
        return run_sync(self.complete(request))

    def stream_sync(self, request: ModelRequest) -> Iterator[StreamChunk]:
        return iterate_sync(self.stream(request))

    def list_models_sync(self) -> list[DiscoveredModel]:
        return run_sync(self.list_models())

    def is_available_sync(self) -> bool:
        return run_sync(self.is_available())
