"""OpenAI through the official ``openai`` SDK, and the OpenAI-compatible services on top of it.

The compatible kinds (DeepSeek, Qwen/DashScope, OpenRouter, vLLM, LM Studio, a llama.cpp server)
differ only in their default base URL, whether a key is required, and the max-tokens parameter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from orchlab.errors import ProviderError, ProviderResponseError
from orchlab.loop import PerLoop
from orchlab.output.structured import strict_schema
from orchlab.providers import deadline
from orchlab.providers.base import DiscoveredModel, Provider
from orchlab.providers.http_errors import error_for_status
from orchlab.providers.translate import message_of
from orchlab.tools.model import ToolCall, new_call_id
from orchlab.types import (
    EmbeddingRequest,
    Embeddings,
    LLMResponse,
    Message,
    ModelRequest,
    OutputSchema,
    StreamChunk,
    Usage,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI


class OpenAIProvider(Provider):
    kind = "openai"
    default_api_base: ClassVar[str | None] = "https://api.openai.com/v1"
    max_tokens_param: ClassVar[str] = "max_completion_tokens"
    output_mode: ClassVar[Literal["schema", "json", "prompt"]] = "schema"
    embed_batch_size: ClassVar[int] = 2048  # OpenAI's limit of inputs per /embeddings request

    runs_on_any_loop = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: PerLoop[AsyncOpenAI] = PerLoop(self._new_client, _close)
        self._sync_client: OpenAI | None = None
        self._sync_lock = threading.Lock()  # run() may be called from several threads at once

    def _client_kwargs(self) -> dict[str, Any]:
        # Keyless local servers (vLLM, LM Studio, llama.cpp) ignore the key, but the SDK needs one.
        key = self._key() or "not-needed"
        return {
            "api_key": key,
            "base_url": self.api_base,
            "timeout": self.settings.timeout_s,
            "max_retries": self.settings.max_retries,
        }

    def prepare(self) -> None:
        self.client  # noqa: B018 - the SDK imported and this loop's client built, before the deadline

    def prepare_sync(self) -> None:
        self.sync_client  # noqa: B018 - as in prepare, for the blocking calls

    @property
    def client(self) -> AsyncOpenAI:
        """The async SDK client of the running event loop (one per loop, `PerLoop`)."""
        return self._clients.get()

    def _new_client(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        return AsyncOpenAI(**self._client_kwargs())

    @property
    def sync_client(self) -> OpenAI:
        """The blocking SDK client behind `complete_sync` (usable from any thread). Its HTTP client
        carries `deadline.EVENT_HOOKS`, so the deadline of a call can cut a blocked read."""
        if self._sync_client is None:
            with self._sync_lock:
                if self._sync_client is None:
                    from openai import DefaultHttpxClient, OpenAI

                    self._sync_client = OpenAI(
                        **self._client_kwargs(),
                        http_client=DefaultHttpxClient(event_hooks=deadline.EVENT_HOOKS),
                    )
        return self._sync_client

    def request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        p = request.params
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": m.role, "content": m.content}
                if m.role != "tool" and not m.tool_calls
                else to_openai_message(m)
                for m in request.messages
            ],
        }
        if request.tools:
            kwargs["tools"] = [t.to_openai() for t in request.tools]
        choice = request.tool_choice
        if choice is not None:
            kwargs["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
        if request.parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = request.parallel_tool_calls
        if p.temperature is not None:
            kwargs["temperature"] = p.temperature
        if p.max_tokens is not None:
            kwargs[self.max_tokens_param] = p.max_tokens
        if p.top_p is not None:
            kwargs["top_p"] = p.top_p
        if p.stop:
            kwargs["stop"] = list(p.stop)
        if p.seed is not None:
            kwargs["seed"] = p.seed
        if p.logprobs:
            kwargs["logprobs"] = True
        if p.timeout_s is not None:
            kwargs["timeout"] = p.timeout_s
        if p.extra:
            kwargs["extra_body"] = dict(p.extra)
        if request.output is not None:
            kwargs["response_format"] = response_format(request.output, self.output_mode)
        elif request.json_answer and self.output_mode != "prompt":
            # format="json": JSON mode. OpenAI refuses it unless a message asks for JSON in words
            kwargs["response_format"] = {"type": "json_object"}
            if not any("json" in m.content.lower() for m in request.messages if m.content):
                kwargs["messages"].insert(0, {"role": "system", "content": JSON_INSTRUCTION})
        return kwargs

    async def complete(self, request: ModelRequest) -> LLMResponse:
        started = time.perf_counter()
        answer = await self.client.post("/chat/completions", **_post_args(self.request_kwargs(request)))
        return self.response_from(completion_of(answer), request, started)

    def complete_sync(self, request: ModelRequest) -> LLMResponse:
        """`complete` on the blocking SDK client, in the caller's thread.

        The sync SDK is about 0.5-1 ms faster per call than the async one plus the hop to the
        engine loop (benchmarks/overhead.py), and blocking here is what a sync caller does anyway.
        The deadline cuts a blocked read (`deadline.SyncDeadline`), but not the SDK's waits
        between its own retries: with ``max_retries`` set, the call goes through the engine loop,
        where the deadline covers those too.
        """
        if self.settings.max_retries:
            return super().complete_sync(request)
        started = time.perf_counter()
        answer = self.sync_client.post("/chat/completions", **_post_args(self.request_kwargs(request)))
        return self.response_from(completion_of(answer), request, started)

    def response_from(self, resp: Any, request: ModelRequest, started: float) -> LLMResponse:
        """An `LLMResponse` from a ``ChatCompletion``; any other shape is a `ProviderResponseError`."""
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
            raise ProviderResponseError(
                f"the response from {self.api_base} has no choices[0].message",
                provider=self.name,
                model=request.model,
            )
        choice = choices[0]
        calls, other = _tool_calls(choice.message)
        if other:
            raise self.tool_call_error(other, request.model)
        content = getattr(choice.message, "content", None)
        if content is not None and not isinstance(content, str):
            raise ProviderResponseError(
                f"choices[0].message.content is a {type(content).__name__}, not a string",
                provider=self.name,
                model=request.model,
            )
        logprobs = None
        lp = getattr(choice, "logprobs", None)
        if lp is not None and getattr(lp, "content", None):
            logprobs = [t.logprob for t in lp.content]
        return LLMResponse(
            content=content or "",
            provider=self.name,
            model=getattr(resp, "model", None) or request.model,
            usage=usage_from(getattr(resp, "usage", None)),
            latency_s=time.perf_counter() - started,
            finish_reason=getattr(choice, "finish_reason", None),
            raw=resp,
            logprobs=logprobs,
            tool_calls=calls,
        )

    def stream_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kwargs = self.request_kwargs(request)
        kwargs["stream"] = True
        # The SDK's read timeout must not cut a silence that stream_idle_timeout_s allows.
        kwargs["timeout"] = max(self.limits(request))
        kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        reading = _Reading(self, request)
        feed = reading.feed
        async for chunk in self.paced(
            self.client.chat.completions.create(**self.stream_kwargs(request)), request
        ):
            text = feed(chunk)
            if text:
                yield StreamChunk(text)
        yield StreamChunk(response=reading.response())

    def stream_sync(self, request: ModelRequest) -> Iterator[StreamChunk]:
        """`stream` on the blocking SDK client, in the caller's thread (no hop to the engine
        loop); its limits are kept by `paced_sync`. With ``max_retries`` set the stream goes
        through the engine loop, as `complete_sync` does, where the limits cover the retries' waits."""
        if self.settings.max_retries:
            yield from super().stream_sync(request)
            return
        reading = _Reading(self, request)
        feed = reading.feed
        kwargs = self.stream_kwargs(request)
        create = self.sync_client.chat.completions.create
        for chunk in self.paced_sync(lambda: create(**kwargs), request):
            text = feed(chunk)
            if text:
                yield StreamChunk(text)
        yield StreamChunk(response=reading.response())

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """``/embeddings`` (floats), one request per batch of `embed_batch_size` texts."""
        started = time.perf_counter()
        kwargs: dict[str, Any] = {
            "model": request.model,
            "input": list(request.texts),
            "encoding_format": "float",
        }
        if request.timeout_s is not None:
            kwargs["timeout"] = request.timeout_s
        resp = await self.client.embeddings.create(**kwargs)
        return embeddings_from(resp, self.name, request, started)

    async def list_models(self) -> list[DiscoveredModel]:
        page = await self.client.models.list()
        return [
            DiscoveredModel(id=m.id, provider=self.name, details={"owned_by": m.owned_by}) async for m in page
        ]

    async def aclose(self) -> None:
        sync_client, self._sync_client = self._sync_client, None
        if sync_client is not None:
            sync_client.close()
        await self._clients.aclose()

    def translate(
        self, exc: BaseException, model: str | None, timeout_s: float | None = None
    ) -> ProviderError:
        """An ``error`` event inside a 200 stream (a bare ``openai.APIError``) by its body's code;
        anything else by behaviour (`orchlab.providers.translate`)."""
        import openai

        if isinstance(exc, openai.APIError) and not isinstance(
            exc, openai.APIStatusError | openai.APIConnectionError | openai.APIResponseValidationError
        ):
            message = f"error event in the stream: {message_of(exc)}"
            status = _status_in(exc.body)
            if status is not None:
                return error_for_status(status, message, provider=self.name, model=model)
            return ProviderError(message, provider=self.name, model=model)
        return super().translate(exc, model, timeout_s)


async def _close(client: Any) -> None:
    await client.close()


def _post_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`request_kwargs` as the arguments of the SDK's ``post("/chat/completions", ...)``: what
    ``chat.completions.create(**kwargs)`` sends, without its typed-params transform (about 0.45 ms
    of CPU per call, an identity on the plain JSON orchlab builds). Same auth (``bearer_auth``, as
    ``create`` asks), retries, timeout, ``extra_body`` merge and exception classes; the answer is
    the HTTP response (200: the SDK raised its status errors already), read by `completion_of`."""
    try:
        from httpx2 import Response  # the openai SDK's HTTP client since 3.x
    except ImportError:  # pragma: no cover - older SDKs send through httpx
        from httpx import Response  # type: ignore[assignment]

    options: dict[str, Any] = {"security": {"bearer_auth": True}}
    if "timeout" in kwargs:
        options["timeout"] = kwargs.pop("timeout")
    if "extra_body" in kwargs:
        options["extra_json"] = kwargs.pop("extra_body")
    return {"body": kwargs, "options": options, "cast_to": Response}


def completion_of(answer: Any) -> Any:
    """The ``ChatCompletion`` of a 200 answer, as ``create()`` returns it.

    pydantic's compiled validator reads a well-formed body in about 10 us; the SDK's own reading
    (``construct``, lenient: no validation) takes about 150 us. A body the validator refuses (a
    compatible server's odd field, a missing ``type``, no JSON at all) is read the SDK's way, so
    `response_from` reports what is wrong exactly as before: JSON → ``ChatCompletion.construct``;
    not JSON → a JSON error, or the text when the content type is not JSON either."""
    from openai.types.chat import ChatCompletion
    from pydantic import ValidationError

    content = answer.content
    try:
        return ChatCompletion.model_validate_json(content)
    except ValidationError:
        pass
    content_type = answer.headers.get("content-type", "*").split(";")[0]
    if content_type.endswith("json"):
        data = answer.json()
    else:
        try:
            data = answer.json()
        except Exception:
            return answer.text
    if isinstance(data, dict):
        return ChatCompletion.construct(**data)
    if isinstance(data, list):
        return [ChatCompletion.construct(**d) if isinstance(d, dict) else d for d in data]
    return data


def to_openai_message(m: Message) -> dict[str, Any]:
    """An assistant turn with tool calls, or a tool result, in OpenAI's message JSON."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    return {"role": m.role, "content": m.content or None, "tool_calls": [c.to_openai() for c in m.tool_calls]}


def _tool_calls(message: Any) -> tuple[tuple[ToolCall, ...], list[str]]:
    """The function calls a message asks for (the older ``function_call`` included, with a
    minted id), and the names of calls orchlab cannot represent (custom tools)."""
    calls: list[ToolCall] = []
    other: list[str] = []
    for call in getattr(message, "tool_calls", None) or ():
        function = getattr(call, "function", None)
        if function is None:
            other.append(str(getattr(getattr(call, "custom", None), "name", None) or "(unnamed)"))
            continue
        calls.append(
            ToolCall.from_text(getattr(call, "id", None) or new_call_id(), function.name, function.arguments)
        )
    legacy = getattr(message, "function_call", None)
    if legacy is not None:
        calls.append(ToolCall.from_text(new_call_id(), legacy.name, legacy.arguments))
    return tuple(calls), other


def embeddings_from(resp: Any, provider: str, request: EmbeddingRequest, started: float) -> Embeddings:
    """`Embeddings` from a ``CreateEmbeddingResponse`` (rows put back in input order by ``index``)."""
    import numpy as np

    data = sorted(getattr(resp, "data", None) or (), key=lambda d: getattr(d, "index", 0))
    if len(data) != len(request.texts):
        raise ProviderResponseError(
            f"asked for {len(request.texts)} embeddings, the response has {len(data)}",
            provider=provider,
            model=request.model,
        )
    usage = getattr(resp, "usage", None)
    return Embeddings(
        vectors=np.asarray([d.embedding for d in data], dtype=np.float32),
        provider=provider,
        model=getattr(resp, "model", None) or request.model,
        usage=Usage(input_tokens=getattr(usage, "prompt_tokens", 0) or 0),
        latency_s=time.perf_counter() - started,
    )


JSON_INSTRUCTION = "Answer with a JSON object."
"""Added (as a system message) to a ``format="json"`` request whose messages never say JSON."""


def response_format(output: OutputSchema, mode: str) -> dict[str, Any]:
    """A structured answer's ``response_format``: ``json_schema`` (strict when the schema allows
    it), or ``json_object`` for a server that only enforces JSON (``output_mode = "json"``)."""
    if mode == "json":
        return {"type": "json_object"}
    schema, strict = strict_schema(output.schema)
    return {"type": "json_schema", "json_schema": {"name": output.name, "schema": schema, "strict": strict}}


class _Reading:
    """What a stream has said so far (its text, model, usage, finish reason, log-probs, tool
    calls), fed one ``ChatCompletionChunk`` at a time by the async and the sync stream."""

    __slots__ = (
        "calls",
        "finish_reason",
        "logprobs",
        "model",
        "parts",
        "provider",
        "request",
        "started",
        "tools",
        "usage",
    )

    def __init__(self, provider: OpenAIProvider, request: ModelRequest) -> None:
        self.provider = provider
        self.request = request
        self.started = time.perf_counter()
        self.parts: list[str] = []
        self.logprobs: list[float] = []
        self.tools: list[str] = []  # custom tools' calls: orchlab cannot represent them
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, argument pieces]
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.model = request.model

    def feed(self, chunk: Any) -> str | None:
        """Take in one chunk; its text, if it has any."""
        model = getattr(chunk, "model", None)
        if model:
            self.model = model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        choices = getattr(chunk, "choices", None)
        if not choices:
            return None
        text = None
        for choice in choices:
            finish_reason = getattr(choice, "finish_reason", None)
            if finish_reason:
                self.finish_reason = finish_reason
            lp = getattr(choice, "logprobs", None)
            if lp is not None and getattr(lp, "content", None):
                self.logprobs.extend(t.logprob for t in lp.content)
            delta = getattr(choice, "delta", None)
            parts = getattr(delta, "tool_calls", None)
            if parts:
                self._tool_deltas(parts)
            content = getattr(delta, "content", None)
            if isinstance(content, str) and content:
                self.parts.append(content)
                text = content if text is None else text + content
        return text

    def _tool_deltas(self, parts: Any) -> None:
        """Tool-call deltas joined by index (a call's id and name come in its first delta)."""
        for part in parts:
            custom = getattr(part, "custom", None)
            if custom is not None:  # a custom tool's call (its name comes in its first delta)
                if getattr(custom, "name", None):
                    self.tools.append(str(custom.name))
                continue
            function = getattr(part, "function", None)
            slot = self.calls.setdefault(getattr(part, "index", None) or 0, [None, None, []])
            slot[0] = slot[0] or getattr(part, "id", None)
            slot[1] = slot[1] or getattr(function, "name", None)
            pieces = getattr(function, "arguments", None)
            if pieces:
                slot[2].append(pieces)

    def response(self) -> LLMResponse:
        """The final response, once the stream has ended; a custom tool's call or a stream that
        ended without a finish reason is an error."""
        provider, model = self.provider, self.request.model
        if self.tools:
            raise provider.tool_call_error(self.tools, model)
        if self.finish_reason is None:
            # An HTML page, a body that is no SSE, keep-alives only, or a stream cut short: the
            # SDK reads each as a stream that simply ended.
            raise provider.unfinished_stream(model, self.parts)
        return LLMResponse(
            content="".join(self.parts),
            provider=provider.name,
            model=self.model,
            usage=usage_from(self.usage),
            latency_s=time.perf_counter() - self.started,
            finish_reason=self.finish_reason,
            logprobs=self.logprobs or None,
            tool_calls=tuple(
                ToolCall.from_text(call_id or new_call_id(), name or "", "".join(pieces))
                for _, (call_id, name, pieces) in sorted(self.calls.items())
            ),
        )


def _status_in(body: Any) -> int | None:
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return code if isinstance(code, int) and 400 <= code <= 599 else None


def usage_from(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    # OpenAI reports cached prompt tokens in prompt_tokens_details; DeepSeek as prompt_cache_hit_tokens.
    cached = getattr(prompt_details, "cached_tokens", 0) or (getattr(usage, "model_extra", None) or {}).get(
        "prompt_cache_hit_tokens", 0
    )
    return Usage(
        input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        output_tokens=getattr(usage, "completion_tokens", 0) or 0,
        cache_read_tokens=cached or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", 0) or 0,
    )


class _Compatible(OpenAIProvider):
    max_tokens_param = "max_tokens"


class DeepSeekProvider(_Compatible):
    kind = "deepseek"
    default_api_base = "https://api.deepseek.com/v1"
    output_mode = "json"  # JSON mode only: the schema goes in the prompt


class QwenProvider(_Compatible):
    """Alibaba DashScope's OpenAI-compatible mode."""

    kind = "qwen"
    default_api_base = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    output_mode = "json"  # DashScope's compatible mode documents JSON mode (json_object)


class OpenRouterProvider(_Compatible):
    kind = "openrouter"
    default_api_base = "https://openrouter.ai/api/v1"


class VLLMProvider(_Compatible):
    kind = "vllm"
    default_api_base = "http://localhost:8000/v1"
    requires_key = False
    is_local = True


class LMStudioProvider(_Compatible):
    kind = "lmstudio"
    default_api_base = "http://localhost:1234/v1"
    requires_key = False
    is_local = True


class LlamaCppServerProvider(_Compatible):
    """llama.cpp's ``llama-server`` or ``python -m llama_cpp.server``."""

    kind = "llamacpp_server"
    default_api_base = "http://localhost:8080/v1"
    requires_key = False
    is_local = True
