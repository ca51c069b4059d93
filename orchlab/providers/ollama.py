"""Ollama through the official ``ollama`` SDK: the local (or LAN GPU box) path, no key needed.

``api_base`` is the Ollama server (default ``http://localhost:11434``); several servers are
several provider entries, each with its own ``api_base``::

    providers:
      gpu1: {type: ollama, api_base: "http://gpu1:11434", options: {num_ctx: 16384, keep_alive: 30m}}
      laptop: {type: ollama}

How a request is sent to ``/api/chat``: messages keep their roles (Ollama takes ``system``,
``user`` and ``assistant`` as they are); ``temperature``, ``top_p``, ``stop``, ``seed`` and
``max_tokens`` (as ``num_predict``) go into ``options``, with ``num_ctx`` from the provider's
options; ``keep_alive`` comes from the provider's options. ``params.extra`` keys ``format``,
``think``, ``top_logprobs`` and ``keep_alive`` go to the request itself, any other key into
``options`` (``top_k``, ``repeat_penalty``, ``num_gpu``, ...). Usage: ``prompt_eval_count`` in,
``eval_count`` out.

``list_models()`` reads ``/api/tags`` (size, family, parameter size, quantization) and, unless
``options.discover_context`` is off, asks ``/api/show`` for each model's context length.
``is_available()`` is true only when the server answers ``/api/tags`` (within 5 s at most).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from orchlab.errors import (
    ContextLengthExceededError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailableError,
    UnsupportedCapabilityError,
)
from orchlab.loop import PerLoop
from orchlab.providers.base import DiscoveredModel, Provider
from orchlab.providers.http_errors import error_for_status, looks_like_context_overflow
from orchlab.tools.model import ToolCall, new_call_id
from orchlab.types import EmbeddingRequest, Embeddings, LLMResponse, Message, ModelRequest, StreamChunk, Usage

if TYPE_CHECKING:
    import httpx
    from ollama import AsyncClient

AVAILABILITY_TIMEOUT_S = 5.0
# Keys of ``params.extra`` that are fields of the chat request itself, not of its ``options``.
_REQUEST_KEYS = ("format", "think", "top_logprobs", "keep_alive")

# Headers of the last failed HTTP response in this task: the SDK's ResponseError keeps only the
# status and body, and a 429's ``retry-after`` is in the headers.
_error_headers: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "orchlab_ollama_error_headers", default=None
)


class OllamaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_ctx: int | None = Field(
        default=None, gt=0, description="context window Ollama loads the model with (its default when unset)"
    )
    keep_alive: str | int | float | None = Field(
        default=None,
        description="how long the model stays loaded after a call: '10m', '1h', 0 (unload), -1 (forever)",
    )
    discover_context: bool = Field(
        default=True, description="list_models() asks /api/show for each model's context length"
    )


async def _remember_error_headers(response: httpx.Response) -> None:
    if response.status_code >= 400:
        _error_headers.set(dict(response.headers))


class OllamaProvider(Provider):
    kind = "ollama"
    default_api_base: ClassVar[str | None] = "http://localhost:11434"
    requires_key = False
    is_local = True
    Options = OllamaOptions
    output_mode = "schema"
    embed_batch_size = 512

    runs_on_any_loop = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: OllamaOptions
        self._clients: PerLoop[AsyncClient] = PerLoop(self._new_client, _close)

    def prepare(self) -> None:
        self.client  # noqa: B018 - the SDK imported and this loop's client built, before the deadline

    @property
    def client(self) -> AsyncClient:
        """The async SDK client of the running event loop (one per loop, `PerLoop`)."""
        return self._clients.get()

    def _new_client(self) -> AsyncClient:
        import httpx
        from ollama import AsyncClient

        headers = {}
        if self.settings.api_key is not None:  # Ollama behind an authenticating proxy, ollama.com
            headers["authorization"] = f"Bearer {self._key()}"
        return AsyncClient(
            host=self.api_base,
            # No SDK timeout: the boundary's deadline (and a stream's pacing) bound every call,
            # a role's own timeout_s included, which a client-wide timeout could not follow.
            timeout=None,
            headers=headers,
            # The SDK has no retry of its own; the transport retries failed connections.
            transport=httpx.AsyncHTTPTransport(retries=self.settings.max_retries),
            event_hooks={"response": [_remember_error_headers]},
        )

    def request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        p = request.params
        options: dict[str, Any] = {}
        if self.options.num_ctx is not None:
            options["num_ctx"] = self.options.num_ctx
        if p.temperature is not None:
            options["temperature"] = p.temperature
        if p.max_tokens is not None:
            options["num_predict"] = p.max_tokens
        if p.top_p is not None:
            options["top_p"] = p.top_p
        if p.stop:
            options["stop"] = list(p.stop)
        if p.seed is not None:
            options["seed"] = p.seed
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_ollama(request.messages),
        }
        if request.tools or request.tool_choice is not None:
            kwargs.update(self.tools_kwargs(request))
        if self.options.keep_alive is not None:
            kwargs["keep_alive"] = self.options.keep_alive
        if p.logprobs:
            kwargs["logprobs"] = True
        for key, value in p.extra.items():
            if key in _REQUEST_KEYS:
                kwargs[key] = value
            else:
                options[key] = value
        if options:
            kwargs["options"] = options
        if request.output is not None:
            kwargs["format"] = dict(request.output.schema)  # Ollama constrains the answer to it
        elif request.json_answer and "format" not in kwargs:
            kwargs["format"] = "json"  # format="json": Ollama's JSON mode (params.extra's format wins)
        return kwargs

    def tools_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """OpenAI-shaped ``tools``. Ollama has no ``tool_choice``: ``auto`` is its only behaviour,
        ``none`` sends no tools, and ``required`` or a named tool is refused before sending."""
        choice = request.tool_choice
        if choice is not None and choice not in ("auto", "none"):
            raise UnsupportedCapabilityError(
                f"Ollama's chat API has no tool_choice, so {choice!r} cannot be asked of {request.model}: "
                "use tool_choice 'auto' (or leave it unset) with this provider",
                provider=self.name,
                model=request.model,
            )
        if choice == "none" or not request.tools:
            return {}
        return {"tools": [t.to_openai() for t in request.tools]}

    async def complete(self, request: ModelRequest) -> LLMResponse:
        started = time.perf_counter()
        kwargs = self.request_kwargs(request)
        _error_headers.set(None)
        resp = await self.client.chat(**kwargs, stream=False)
        return LLMResponse(
            content=resp.message.content or "",
            provider=self.name,
            model=resp.model or request.model,
            usage=usage_from(resp),
            latency_s=time.perf_counter() - started,
            finish_reason=resp.done_reason,
            raw=resp,
            logprobs=[lp.logprob for lp in resp.logprobs] if resp.logprobs else None,
            tool_calls=_tool_calls(resp.message),
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        started = time.perf_counter()
        kwargs = self.request_kwargs(request)
        parts: list[str] = []
        logprobs: list[float] = []
        calls: list[ToolCall] = []  # Ollama streams each call whole
        last = None
        _error_headers.set(None)
        async for part in self.paced(self.client.chat(**kwargs, stream=True), request):
            last = part
            if part.logprobs:
                logprobs.extend(lp.logprob for lp in part.logprobs)
            calls.extend(_tool_calls(part.message))
            text = part.message.content if part.message is not None else None
            if text:
                parts.append(text)
                yield StreamChunk(delta=text)
        if last is None or not last.done:  # no final ("done") line
            raise self.unfinished_stream(request.model, parts)
        yield StreamChunk(
            response=LLMResponse(
                content="".join(parts),
                provider=self.name,
                model=last.model or request.model,
                usage=usage_from(last),
                latency_s=time.perf_counter() - started,
                finish_reason=last.done_reason,
                logprobs=logprobs or None,
                tool_calls=tuple(calls),
            )
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """``/api/embed``; usage is its ``prompt_eval_count``."""
        import numpy as np

        started = time.perf_counter()
        _error_headers.set(None)
        kwargs: dict[str, Any] = {"model": request.model, "input": list(request.texts)}
        if self.options.keep_alive is not None:
            kwargs["keep_alive"] = self.options.keep_alive
        resp = await self.client.embed(**kwargs)
        rows = list(resp.embeddings or ())
        if len(rows) != len(request.texts):
            raise ProviderResponseError(
                f"asked for {len(request.texts)} embeddings, the response has {len(rows)}",
                provider=self.name,
                model=request.model,
            )
        return Embeddings(
            vectors=np.asarray(rows, dtype=np.float32),
            provider=self.name,
            model=resp.model or request.model,
            usage=Usage(input_tokens=resp.prompt_eval_count or 0),
            latency_s=time.perf_counter() - started,
        )

    async def list_models(self) -> list[DiscoveredModel]:
        _error_headers.set(None)
        listed = await self.client.list()
        shown: list[Any] = [None] * len(listed.models)
        if self.options.discover_context:
            # One /api/show per model, concurrently; a model the server cannot describe is still
            # listed, without a context length.
            shown = await asyncio.gather(
                *(self.client.show(m.model or "") for m in listed.models), return_exceptions=True
            )
        return [_discovered(self.name, m, info) for m, info in zip(listed.models, shown, strict=True)]

    async def is_available(self) -> bool:
        """True when the server answers ``/api/tags`` (a cheap call: no ``/api/show``)."""
        try:
            async with asyncio.timeout(min(self.settings.timeout_s, AVAILABILITY_TIMEOUT_S)):
                await self.client.list()
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        await self._clients.aclose()

    def context_window(self) -> int | None:
        """``options.num_ctx``: every request loads the model with that window (None: unset)."""
        return self.options.num_ctx

    def translate(
        self, exc: BaseException, model: str | None, timeout_s: float | None = None
    ) -> ProviderError:
        """The SDK's ``ResponseError`` (an HTTP error, or an error line inside a stream); anything
        else by behaviour (`orchlab.providers.translate`), a broken connection with a hint."""
        import ollama

        if isinstance(exc, ollama.ResponseError):
            message = str(exc.error)
            if exc.status_code < 0:
                # An {"error": ...} line inside a 200 stream: the server failed while generating.
                cls = (
                    ContextLengthExceededError
                    if looks_like_context_overflow(message)
                    else ProviderUnavailableError
                )
                return cls(f"error during the stream: {message}", provider=self.name, model=model)
            if exc.status_code == 404 and "not found" in message and model:
                message += f" (pull it on that server: ollama pull {model})"
            return error_for_status(
                exc.status_code, message, provider=self.name, model=model, headers=_error_headers.get()
            )
        if isinstance(exc, TypeError):  # the SDK builds its answer with ChatResponse(**body)
            return ProviderResponseError(
                f"malformed response from {self.api_base}: {exc}", provider=self.name, model=model
            )
        error = super().translate(exc, model, timeout_s)
        if isinstance(error, ProviderConnectionError):
            return ProviderConnectionError(
                f"{error.args[0]}; is `ollama serve` running there?",
                provider=error.provider,
                model=error.model,
                status_code=error.status_code,
                retry_after=error.retry_after,
                retryable=error.retryable,
            )
        return error


async def _close(client: Any) -> None:
    await client.close()


def to_ollama(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages for ``/api/chat``: a tool call's arguments as an object, a tool result as a
    ``tool`` turn named after the function it answers (``tool_name``: Ollama has no call ids)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        if m.role == "tool":
            out.append(
                {"role": "tool", "content": m.content, "tool_name": names.get(m.tool_call_id or "", "")}
            )
        elif m.tool_calls:
            for call in m.tool_calls:
                names[call.id] = call.name
            calls = [{"function": {"name": c.name, "arguments": dict(c.arguments)}} for c in m.tool_calls]
            out.append({"role": m.role, "content": m.content, "tool_calls": calls})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    """The calls an answer (or a stream line) asks for; Ollama gives no ids: each gets a new one
    (never the function's name: two calls to one function would collide)."""
    return tuple(
        ToolCall.from_object(
            new_call_id(),
            str(getattr(call.function, "name", None) or "(unnamed)"),
            getattr(call.function, "arguments", None),
        )
        for call in (getattr(message, "tool_calls", None) or ())
        if getattr(call, "function", None) is not None
    )


def usage_from(resp: Any) -> Usage:
    return Usage(
        input_tokens=getattr(resp, "prompt_eval_count", None) or 0,
        output_tokens=getattr(resp, "eval_count", None) or 0,
    )


def _discovered(provider: str, model: Any, shown: Any) -> DiscoveredModel:
    details = model.details
    info: dict[str, Any] = {
        "parameter_size": getattr(details, "parameter_size", None),
        "quantization_level": getattr(details, "quantization_level", None),
        "format": getattr(details, "format", None),
        "digest": model.digest,
        "modified_at": model.modified_at.isoformat() if model.modified_at else None,
    }
    context_window = None
    if shown is not None and not isinstance(shown, BaseException):
        model_info = shown.modelinfo or {}
        context_window = next(
            (int(v) for k, v in model_info.items() if k.endswith(".context_length") and v), None
        )
        num_ctx = _parameter(shown.parameters, "num_ctx")
        if num_ctx is not None:
            info["num_ctx"] = int(num_ctx)
        info["capabilities"] = list(shown.capabilities or ())
    return DiscoveredModel(
        id=model.model or "",
        provider=provider,
        context_window=context_window,
        size_bytes=int(model.size) if model.size is not None else None,
        family=getattr(details, "family", None),
        details=info,
    )


def _parameter(parameters: str | None, name: str) -> str | None:
    """A value from ``/api/show``'s ``parameters`` text (``"num_ctx 8192\\nstop ..."``)."""
    for line in (parameters or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == name and value.strip():
            return value.strip()
    return None
