"""Google's Gemini API through the official ``google-genai`` SDK (its async client).

How orchlab's messages become a ``generateContent`` request:

- ``system`` messages go to ``system_instruction`` (one part each, in order);
- ``user`` stays ``user`` and ``assistant`` becomes ``model``; consecutive turns of one role
  become one ``Content`` with several parts;
- params go into ``GenerateContentConfig``: ``temperature``, ``top_p``, ``max_tokens`` ->
  ``max_output_tokens``, ``stop`` -> ``stop_sequences``, ``seed``, ``logprobs`` ->
  ``response_logprobs``; ``params.extra`` keys must be ``GenerateContentConfig`` fields
  (``top_k``, ``thinking_config``, ``response_mime_type``, ``safety_settings``, ...).

``api_base`` is the SDK's ``base_url`` (default ``https://generativelanguage.googleapis.com``);
``options.api_version`` picks the API version (the SDK's default when unset).

Usage follows ``usage_metadata``: ``input_tokens`` is ``prompt_token_count`` (cached tokens
included, also in ``cache_read_tokens``) plus tool-use prompt tokens; ``output_tokens`` is
``candidates_token_count`` plus ``thoughts_token_count`` (thinking is billed as output; it is
also in ``reasoning_tokens``). A prompt the API blocked comes back as an empty answer whose
``finish_reason`` is ``"blocked:<REASON>"``.
"""

from __future__ import annotations

import base64
import difflib
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from orchlab.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    ProviderResponseError,
)
from orchlab.loop import PerLoop
from orchlab.providers.base import DiscoveredModel, Provider
from orchlab.providers.http_errors import error_for_status, retry_after_seconds
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
    from google.genai import Client

STREAM_SDK_TIMEOUT_S = 24 * 3600.0
"""The SDK's own timeout for a stream: only a backstop, orchlab paces streams itself."""

# ErrorInfo reasons that mean "the key is wrong" (Google answers those with 400, not 401).
_KEY_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"}


class GeminiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_version: str | None = Field(
        default=None, description="API version in the URL (e.g. 'v1beta'); the SDK's default when unset"
    )


def to_gemini(messages: Sequence[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(system_parts, contents)``: system lifted out, roles mapped, same-role turns grouped.

    Tool calls become ``function_call`` parts of the model's turn (with the thought signature
    Gemini gave them); tool results ``function_response`` parts of a user turn, named after the
    call they answer, the text wrapped as ``{"output": ...}`` (``{"error": ...}`` for a failure).
    Call ids are not sent: Gemini pairs a response with its call by order and name."""
    system = [m.content for m in messages if m.role == "system"]
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        if m.role == "system":
            continue
        role = "model" if m.role == "assistant" else "user"
        parts: list[dict[str, Any]]
        if m.role == "tool":
            key = "error" if m.is_error else "output"
            name = names.get(m.tool_call_id or "", "")
            parts = [{"function_response": {"name": name, "response": {key: m.content}}}]
        else:
            parts = [{"text": m.content}] if m.content or not m.tool_calls else []
            for call in m.tool_calls:
                names[call.id] = call.name
                part: dict[str, Any] = {"function_call": {"name": call.name, "args": dict(call.arguments)}}
                if call.signature:
                    part["thought_signature"] = base64.b64decode(call.signature)
                parts.append(part)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise InvalidRequestError("Gemini needs at least one user message; only system messages were given")
    return system, contents


def tool_config(request: ModelRequest) -> dict[str, Any]:
    """``tools`` (function declarations, their parameters as JSON schema) and ``tool_config``
    for ``GenerateContentConfig``. Gemini has no switch for parallel calls."""
    from google.genai import types

    config: dict[str, Any] = {}
    if request.tools:
        config["tools"] = [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=t.name,
                        description=t.description or None,
                        parameters_json_schema=dict(t.parameters),
                    )
                    for t in request.tools
                ]
            )
        ]
    choice = request.tool_choice
    if choice is not None:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice, "ANY")
        config["tool_config"] = types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode(mode),
                allowed_function_names=None if choice in ("auto", "none", "required") else [choice],
            )
        )
    return config


class GeminiProvider(Provider):
    kind = "gemini"
    default_api_base: ClassVar[str | None] = "https://generativelanguage.googleapis.com"
    Options = GeminiOptions
    output_mode = "schema"
    embed_batch_size = 100  # batchEmbedContents' limit

    runs_on_any_loop = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: GeminiOptions
        self._clients: PerLoop[Client] = PerLoop(self._new_client, _close)

    def prepare(self) -> None:
        self.client  # noqa: B018 - the SDK imported and this loop's client built, before the deadline

    @property
    def client(self) -> Client:
        """The SDK client of the running event loop (one per loop, `PerLoop`: its ``aio`` side
        is bound to the loop it first ran on)."""
        return self._clients.get()

    def _new_client(self) -> Client:
        from google import genai
        from google.genai import types

        return genai.Client(
            api_key=self._key() or None,
            vertexai=False,
            http_options=types.HttpOptions(
                base_url=self.api_base,
                api_version=self.options.api_version,
                timeout=_ms(self.settings.timeout_s),
                # Always set: without it the SDK's aiohttp transport silently sleeps 1-10 s and
                # retries once after a connection error.
                retry_options=types.HttpRetryOptions(attempts=self.settings.max_retries + 1),
            ),
        )

    def request_kwargs(self, request: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        from google.genai import types

        p = request.params
        system, contents = to_gemini(request.messages)
        config: dict[str, Any] = {}
        if system:
            config["system_instruction"] = types.Content(parts=[types.Part(text=s) for s in system])
        if p.temperature is not None:
            config["temperature"] = p.temperature
        if p.top_p is not None:
            config["top_p"] = p.top_p
        if p.max_tokens is not None:
            config["max_output_tokens"] = p.max_tokens
        if p.stop:
            config["stop_sequences"] = list(p.stop)
        if p.seed is not None:
            config["seed"] = p.seed
        if p.logprobs:
            config["response_logprobs"] = True
        if request.tools or request.tool_choice is not None:
            config.update(tool_config(request))
        if stream:
            # With aiohttp the SDK's timeout is a total: it would cut a long answer. The stream's
            # first event and its silences are bounded by orchlab (Provider.paced) instead.
            config["http_options"] = types.HttpOptions(timeout=_ms(STREAM_SDK_TIMEOUT_S))
        elif p.timeout_s is not None:
            config["http_options"] = types.HttpOptions(timeout=_ms(p.timeout_s))
        if request.output is not None:
            config.update(response_schema(request.output))
        elif request.json_answer:
            config["response_mime_type"] = "application/json"  # format="json": JSON, any shape
        known = types.GenerateContentConfig.model_fields
        for key, value in p.extra.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise InvalidRequestError(
                    f"params.extra.{key} is not a Gemini GenerateContentConfig field{hint}"
                )
            config[key] = value
        try:
            generation_config = types.GenerateContentConfig(**config) if config else None
        except ValueError as exc:
            raise InvalidRequestError(f"invalid Gemini generation config: {exc}") from None
        return {"model": request.model, "contents": contents, "config": generation_config}

    async def complete(self, request: ModelRequest) -> LLMResponse:
        started = time.perf_counter()
        kwargs = self.request_kwargs(request)
        resp = await self.client.aio.models.generate_content(**kwargs)
        candidates = getattr(resp, "candidates", None)
        feedback = getattr(resp, "prompt_feedback", None)
        if not candidates and getattr(feedback, "block_reason", None) is None:
            raise ProviderResponseError(
                "the response has neither candidates nor prompt_feedback",
                provider=self.name,
                model=request.model,
            )
        text, finish_reason, logprobs = _read_candidate(resp)
        return LLMResponse(
            content=text,
            provider=self.name,
            model=getattr(resp, "model_version", None) or request.model,
            usage=usage_from(getattr(resp, "usage_metadata", None)),
            latency_s=time.perf_counter() - started,
            finish_reason=finish_reason,
            raw=resp,
            logprobs=logprobs,
            tool_calls=tuple(_tool_calls(resp)),
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        started = time.perf_counter()
        kwargs = self.request_kwargs(request, stream=True)
        parts: list[str] = []
        logprobs: list[float] = []
        calls: list[ToolCall] = []  # Gemini streams each call whole, in one part
        usage = None
        finish_reason = None
        model = request.model
        async for chunk in self.paced(self.client.aio.models.generate_content_stream(**kwargs), request):
            model = getattr(chunk, "model_version", None) or model
            if getattr(chunk, "usage_metadata", None) is not None:
                usage = chunk.usage_metadata
            calls.extend(_tool_calls(chunk))
            text, reason, chunk_logprobs = _read_candidate(chunk)
            finish_reason = reason or finish_reason
            logprobs.extend(chunk_logprobs or ())
            if text:
                parts.append(text)
                yield StreamChunk(delta=text)
        if finish_reason is None:
            raise self.unfinished_stream(request.model, parts)
        yield StreamChunk(
            response=LLMResponse(
                content="".join(parts),
                provider=self.name,
                model=model,
                usage=usage_from(usage),
                latency_s=time.perf_counter() - started,
                finish_reason=finish_reason,
                logprobs=logprobs or None,
                tool_calls=tuple(calls),
            )
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """``embed_content`` (batchEmbedContents). The Gemini API reports no token usage for
        embeddings, so their cost is unknown (``cost_note`` says so)."""
        import numpy as np

        started = time.perf_counter()
        contents: list[Any] = list(request.texts)
        resp = await self.client.aio.models.embed_content(model=request.model, contents=contents)
        rows = [getattr(e, "values", None) for e in getattr(resp, "embeddings", None) or ()]
        if len(rows) != len(request.texts) or any(r is None for r in rows):
            raise ProviderResponseError(
                f"asked for {len(request.texts)} embeddings, the response has {len(rows)}",
                provider=self.name,
                model=request.model,
            )
        billed = getattr(getattr(resp, "metadata", None), "billable_character_count", None)
        return Embeddings(
            vectors=np.asarray(rows, dtype=np.float32),
            provider=self.name,
            model=request.model,
            usage=Usage(),
            latency_s=time.perf_counter() - started,
            cost_note=None if billed is None else f"{billed} billable characters",
        )

    async def list_models(self) -> list[DiscoveredModel]:
        pager = await self.client.aio.models.list()
        return [
            DiscoveredModel(
                id=(m.name or "").removeprefix("models/"),
                provider=self.name,
                context_window=m.input_token_limit,
                details={
                    "display_name": m.display_name,
                    "max_output_tokens": m.output_token_limit,
                    "supported_actions": list(m.supported_actions or ()),
                },
            )
            async for m in pager
        ]

    async def aclose(self) -> None:
        await self._clients.aclose()

    def translate(
        self, exc: BaseException, model: str | None, timeout_s: float | None = None
    ) -> ProviderError:
        """Google's error body (``ErrorInfo`` reasons, ``RetryInfo``) for the SDK's ``APIError``;
        anything else by behaviour (`orchlab.providers.translate`: aiohttp or httpx, whichever the
        SDK sends with)."""
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            return self._api_error(exc, model)
        return super().translate(exc, model, timeout_s)

    def _api_error(self, exc: Any, model: str | None) -> ProviderError:
        status = int(exc.code or 0)
        message = str(exc.message or exc.status or exc)
        if exc.status:
            message = f"{exc.status}: {message}"
        details = _error_details(exc.details)
        if any(d.get("reason") in _KEY_REASONS for d in details):
            return AuthenticationError(
                message + " (check the API key for this provider's auth profile)",
                provider=self.name,
                model=model,
                status_code=status,
            )
        headers = getattr(getattr(exc, "response", None), "headers", None)
        error = error_for_status(status or 500, message, provider=self.name, model=model, headers=headers)
        if error.retry_after is None:
            error.retry_after = _retry_delay(details)
        return error


async def _close(client: Any) -> None:
    await client.aio.aclose()
    client.close()


def response_schema(output: OutputSchema) -> dict[str, Any]:
    """A structured answer as Gemini gives one: JSON constrained by ``response_schema`` (the
    pydantic model: the SDK turns it into Gemini's schema)."""
    return {"response_mime_type": "application/json", "response_schema": output.model}


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


def _read_candidate(resp: Any) -> tuple[str, str | None, list[float] | None]:
    """Text (thought parts left out), finish reason and log-probs of the first candidate."""
    candidates = getattr(resp, "candidates", None)
    if not candidates:
        block = getattr(getattr(resp, "prompt_feedback", None), "block_reason", None)
        return "", (f"blocked:{_enum_text(block)}" if block is not None else None), None
    candidate = candidates[0]
    content = getattr(candidate, "content", None)
    text = "".join(
        part.text
        for part in (getattr(content, "parts", None) or ())
        if getattr(part, "text", None) and not getattr(part, "thought", False)
    )
    reason = getattr(candidate, "finish_reason", None)
    chosen = getattr(getattr(candidate, "logprobs_result", None), "chosen_candidates", None)
    logprobs = [c.log_probability for c in chosen if c.log_probability is not None] if chosen else None
    return text, (_enum_text(reason) if reason is not None else None), logprobs


def _tool_calls(resp: Any) -> list[ToolCall]:
    """The functions the first candidate calls (``functionCall`` parts), each with its id (minted
    when Gemini gives none) and its thought signature (base64)."""
    candidates = getattr(resp, "candidates", None)
    content = getattr(candidates[0], "content", None) if candidates else None
    calls = []
    for part in getattr(content, "parts", None) or ():
        call = getattr(part, "function_call", None)
        if call is None:
            continue
        signature = getattr(part, "thought_signature", None)
        calls.append(
            ToolCall.from_object(
                getattr(call, "id", None) or new_call_id(),
                str(getattr(call, "name", None) or "(unnamed)"),
                getattr(call, "args", None),
                base64.b64encode(signature).decode("ascii") if signature else None,
            )
        )
    return calls


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def usage_from(meta: Any) -> Usage:
    if meta is None:
        return Usage()
    thoughts = getattr(meta, "thoughts_token_count", None) or 0
    return Usage(
        input_tokens=(getattr(meta, "prompt_token_count", None) or 0)
        + (getattr(meta, "tool_use_prompt_token_count", None) or 0),
        output_tokens=(getattr(meta, "candidates_token_count", None) or 0) + thoughts,
        cache_read_tokens=getattr(meta, "cached_content_token_count", None) or 0,
        reasoning_tokens=thoughts,
    )


def _error_details(body: Any) -> list[Mapping[str, Any]]:
    """The ``error.details`` entries of Google's error body."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _retry_delay(details: list[Mapping[str, Any]]) -> float | None:
    """``RetryInfo.retryDelay`` (``"30s"``, ``"1.5s"``) in seconds."""
    for d in details:
        delay = d.get("retryDelay")
        if isinstance(delay, str) and (found := re.fullmatch(r"\s*([0-9.]+)s\s*", delay)):
            return retry_after_seconds({"retry-after": found.group(1)})
    return None
