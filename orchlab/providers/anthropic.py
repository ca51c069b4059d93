"""Anthropic's Messages API through the official ``anthropic`` SDK.

How orchlab's messages become a Messages API request:

- every ``system`` message is lifted into the ``system`` parameter (several are joined with a
  blank line, in order);
- consecutive turns of the same role are merged into one turn (joined with a blank line), so
  the turns alternate as the API expects;
- the first remaining turn must be the user's: a conversation that starts with an assistant turn
  (after the system messages) raises `InvalidRequestError` rather than being silently reshaped.
  A last assistant turn is sent as it is (a prefill the model continues);
- ``max_tokens`` is always sent: the role's ``max_tokens``, else ``options.default_max_tokens``
  (1024);
- ``stop`` becomes ``stop_sequences``; ``temperature``, ``top_p`` and ``params.extra`` go into
  the request body as they are. The API has no ``seed`` (not sent) and returns no log-probs
  (asking for them raises `UnsupportedCapabilityError`).

Usage: Anthropic reports uncached, cache-read and cache-write input tokens apart; orchlab's
``input_tokens`` is their sum (every prompt token, as for the other providers), with the cached
parts also in ``cache_read_tokens`` / ``cache_write_tokens``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from orchlab.errors import (
    InvalidRequestError,
    ProviderError,
    ProviderResponseError,
    UnsupportedCapabilityError,
)
from orchlab.loop import PerLoop
from orchlab.providers.base import DiscoveredModel, Provider
from orchlab.providers.http_errors import error_for_status
from orchlab.tools.model import ToolCall, new_call_id
from orchlab.types import LLMResponse, Message, ModelRequest, OutputSchema, StreamChunk, Usage

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

DEFAULT_MAX_TOKENS = 1024

# The HTTP status each Anthropic error type stands for (an ``error`` event inside a stream
# arrives on a 200 response, so its type is all there is to go on).
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS,
        gt=0,
        description="max_tokens sent when the role sets none (the Messages API requires one)",
    )


def to_anthropic(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, turns)`` for the Messages API: system lifted out, same-role turns merged.

    An assistant turn's tool calls become ``tool_use`` blocks after its text; each tool result a
    ``tool_result`` block in a user turn (consecutive results, and a user text after them, share
    that turn: the API wants every result of a turn's calls in the next user turn)."""
    system = [m.content for m in messages if m.role == "system"]
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role: str = m.role
        content: str | list[dict[str, Any]] = m.content
        if m.role == "tool":
            role = "user"
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
            }
            if m.is_error:
                block["is_error"] = True
            content = [block]
        elif m.tool_calls:
            content = [{"type": "text", "text": m.content}] if m.content else []
            content += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
                for c in m.tool_calls
            ]
        if turns and turns[-1]["role"] == role:
            last = turns[-1]["content"]
            if isinstance(last, str) and isinstance(content, str):
                turns[-1]["content"] = last + "\n\n" + content
            else:
                turns[-1]["content"] = _blocks(last) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    if not turns:
        raise InvalidRequestError(
            "Anthropic needs at least one user message; only system messages were given"
        )
    if turns[0]["role"] != "user":
        raise InvalidRequestError(
            "Anthropic's Messages API starts with a user turn, but the first non-system message "
            "is from the assistant; put a user message before it"
        )
    return ("\n\n".join(system) if system else None), turns


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def tools_kwargs(request: ModelRequest) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` for the Messages API (``parallel_tool_calls=False`` is its
    ``disable_parallel_tool_use``)."""
    kwargs: dict[str, Any] = {}
    if request.tools:
        kwargs["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            if t.description
            else {"name": t.name, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
    choice = request.tool_choice
    tool_choice: dict[str, Any] | None = None
    if choice is not None:
        tool_choice = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}.get(
            choice, {"type": "tool", "name": choice}
        )
    if request.parallel_tool_calls is False and request.tools:
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    return kwargs


class AnthropicProvider(Provider):
    kind = "anthropic"
    default_api_base: ClassVar[str | None] = "https://api.anthropic.com"
    Options = AnthropicOptions
    output_mode = "schema"

    runs_on_any_loop = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: AnthropicOptions
        self._clients: PerLoop[AsyncAnthropic] = PerLoop(self._new_client, _close)

    def prepare(self) -> None:
        self.client  # noqa: B018 - the SDK imported and this loop's client built, before the deadline

    @property
    def client(self) -> AsyncAnthropic:
        """The async SDK client of the running event loop (one per loop, `PerLoop`)."""
        return self._clients.get()

    def _new_client(self) -> AsyncAnthropic:
        from anthropic import AsyncAnthropic

        return AsyncAnthropic(
            api_key=self._key() or None,
            base_url=self.api_base,
            timeout=self.settings.timeout_s,
            max_retries=self.settings.max_retries,
        )

    def request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        p = request.params
        if p.logprobs:
            raise UnsupportedCapabilityError(
                "Anthropic's Messages API returns no log-probabilities; set logprobs: false for this role",
                provider=self.name,
                model=request.model,
            )
        system, turns = to_anthropic(request.messages)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": p.max_tokens or self.options.default_max_tokens,
            "messages": turns,
        }
        if system is not None:
            kwargs["system"] = system
        if request.tools or request.tool_choice is not None:
            kwargs.update(tools_kwargs(request))
        if p.stop:
            kwargs["stop_sequences"] = list(p.stop)
        # temperature/top_p are not in this SDK's typed signature; the API takes them in the body.
        body: dict[str, Any] = {}
        if p.temperature is not None:
            body["temperature"] = p.temperature
        if p.top_p is not None:
            body["top_p"] = p.top_p
        body.update(p.extra)
        if body:
            kwargs["extra_body"] = body
        if p.timeout_s is not None:
            kwargs["timeout"] = p.timeout_s
        if request.output is not None:
            kwargs.update(answer_tool_kwargs(request, kwargs))
        return kwargs

    async def complete(self, request: ModelRequest) -> LLMResponse:
        started = time.perf_counter()
        kwargs = self.request_kwargs(request)
        resp = await self.client.messages.create(**kwargs)
        content = getattr(resp, "content", None)
        usage = getattr(resp, "usage", None)
        if not isinstance(content, list) or usage is None:
            raise ProviderResponseError(
                "the response is not a Message (no content list or no usage)",
                provider=self.name,
                model=request.model,
            )
        structured = _structured_answer(content, request)
        calls = tuple(
            ToolCall.from_object(block.id, _tool_name(block), getattr(block, "input", None))
            for block in content
            if getattr(block, "type", None) == "tool_use" and not _is_answer_tool(block, request)
        )
        text = (
            structured
            if structured is not None
            else "".join(
                getattr(block, "text", "") or ""
                for block in content
                if getattr(block, "type", None) == "text"
            )
        )
        return LLMResponse(
            content=text,
            provider=self.name,
            model=getattr(resp, "model", None) or request.model,
            usage=usage_from(usage),
            latency_s=time.perf_counter() - started,
            finish_reason=getattr(resp, "stop_reason", None),
            raw=resp,
            tool_calls=calls,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        started = time.perf_counter()
        kwargs = self.request_kwargs(request)
        kwargs["stream"] = True
        # The SDK's read timeout must not cut a silence that stream_idle_timeout_s allows.
        kwargs["timeout"] = max(self.limits(request))
        parts: list[str] = []
        calls: dict[int, list[Any]] = {}  # block index -> [id, name, input JSON pieces]
        usage: dict[str, int | None] = {}
        finish_reason = None
        model = request.model
        async for event in self.paced(self.client.messages.create(**kwargs), request):
            kind = getattr(event, "type", None)
            if kind == "message_start":
                model = getattr(event.message, "model", None) or model
                _merge_usage(usage, getattr(event.message, "usage", None))
            elif kind == "content_block_start":
                block = getattr(event, "content_block", None)
                if getattr(block, "type", None) == "tool_use":
                    calls[getattr(event, "index", len(calls))] = [
                        getattr(block, "id", None),
                        _tool_name(block),
                        [],
                    ]
            elif kind == "content_block_delta":
                delta_type = getattr(event.delta, "type", None)
                text = getattr(event.delta, "text", None)
                if delta_type == "text_delta" and text:
                    parts.append(text)
                    yield StreamChunk(delta=text)
                elif delta_type == "input_json_delta" and getattr(event, "index", None) in calls:
                    calls[event.index][2].append(getattr(event.delta, "partial_json", "") or "")
            elif kind == "message_delta":
                finish_reason = getattr(event.delta, "stop_reason", None) or finish_reason
                _merge_usage(usage, getattr(event, "usage", None))
        if "input_tokens" not in usage:
            raise ProviderResponseError(
                "the stream ended without a message_start event (no usage)",
                provider=self.name,
                model=request.model,
            )
        if finish_reason is None:
            raise self.unfinished_stream(request.model, parts)
        answer = request.output.name if request.output is not None else None
        content = "".join(parts)
        for _, name, pieces in calls.values():
            if name == answer:  # the structured answer, not a tool to run
                content = "".join(pieces)
        yield StreamChunk(
            response=LLMResponse(
                content=content,
                provider=self.name,
                model=model,
                usage=_usage_of(usage),
                latency_s=time.perf_counter() - started,
                finish_reason=finish_reason,
                tool_calls=tuple(
                    ToolCall.from_text(call_id or new_call_id(), name, "".join(pieces))
                    for _, (call_id, name, pieces) in sorted(calls.items())
                    if name != answer
                ),
            )
        )

    async def list_models(self) -> list[DiscoveredModel]:
        page = await self.client.models.list()
        return [
            DiscoveredModel(
                id=m.id,
                provider=self.name,
                context_window=getattr(m, "max_input_tokens", None),
                details={
                    "display_name": getattr(m, "display_name", None),
                    "max_output_tokens": getattr(m, "max_tokens", None),
                    "created_at": str(getattr(m, "created_at", "") or ""),
                },
            )
            async for m in page
        ]

    async def aclose(self) -> None:
        await self._clients.aclose()

    def translate(
        self, exc: BaseException, model: str | None, timeout_s: float | None = None
    ) -> ProviderError:
        """An ``error`` event inside a 200 stream by its error type; anything else by behaviour
        (`orchlab.providers.translate`: the SDK's HTTP library is its own httpx fork, ``httpx2``)."""
        import anthropic

        if isinstance(exc, anthropic.APIStatusError) and exc.status_code < 400:
            error_type = getattr(exc, "type", None) or "api_error"
            message = getattr(exc, "api_message", None) or exc.message
            return error_for_status(
                _STATUS_OF_ERROR_TYPE.get(str(error_type), 500),
                f"{error_type} during the stream: {message}",
                provider=self.name,
                model=model,
                headers=exc.response.headers,
            )
        return super().translate(exc, model, timeout_s)


async def _close(client: Any) -> None:
    await client.close()


def forced_tool(output: OutputSchema) -> dict[str, Any]:
    """A structured answer as Anthropic gives one: a tool whose input is the schema, which the
    model is forced to call (the call's input is the answer)."""
    return {
        "tools": [
            {
                "name": output.name,
                "description": f"Give the answer as a {output.name}.",
                "input_schema": dict(output.schema),
            }
        ],
        "tool_choice": {"type": "tool", "name": output.name},
    }


def answer_tool_kwargs(request: ModelRequest, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` for a structured answer: the answer tool alone, forced; with
    the call's own tools, the answer tool next to them and the model made to call one of them
    (``any``: a tool to run, or the answer), as ``auto`` and ``required`` both mean here; a
    named ``tool_choice`` stays, ``none`` forces the answer tool."""
    assert request.output is not None
    answer = forced_tool(request.output)
    if not request.tools:
        return answer
    name = request.output.name
    if any(t.name == name for t in request.tools):
        raise InvalidRequestError(
            f"a tool is named {name!r} like the output model: Anthropic gets the structured answer "
            "as a tool of that name; rename the tool or the model",
            parameter="tools",
        )
    choice = request.tool_choice
    if choice == "none":
        tool_choice: dict[str, Any] = answer["tool_choice"]
    elif choice in (None, "auto", "required"):
        tool_choice = {"type": "any"}
    else:
        tool_choice = {"type": "tool", "name": choice}
    if request.parallel_tool_calls is False:
        tool_choice = {**tool_choice, "disable_parallel_tool_use": True}
    return {"tools": [*kwargs.get("tools", ()), *answer["tools"]], "tool_choice": tool_choice}


def _is_answer_tool(block: Any, request: ModelRequest) -> bool:
    return request.output is not None and getattr(block, "name", None) == request.output.name


def _structured_answer(content: list[Any], request: ModelRequest) -> str | None:
    """The input of the answer tool's call, as JSON text (None when it was not asked or not called)."""
    if request.output is None:
        return None
    for block in content:
        if getattr(block, "type", None) == "tool_use" and _is_answer_tool(block, request):
            return json.dumps(getattr(block, "input", None), ensure_ascii=False)
    return None


def _tool_name(block: Any) -> str:
    return str(getattr(block, "name", None) or "(unnamed)")


def _merge_usage(into: dict[str, int | None], usage: Any) -> None:
    """Fold a usage object from ``message_start``/``message_delta`` in (later counts are cumulative)."""
    if usage is None:
        return
    for key in (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ):
        value = getattr(usage, key, None)
        if value is not None:
            into[key] = value
    details = getattr(usage, "output_tokens_details", None)
    if details is not None and getattr(details, "thinking_tokens", None) is not None:
        into["thinking_tokens"] = details.thinking_tokens


def _usage_of(counts: dict[str, int | None]) -> Usage:
    cache_read = counts.get("cache_read_input_tokens") or 0
    cache_write = counts.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(counts.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=counts.get("output_tokens") or 0,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=counts.get("thinking_tokens") or 0,
    )


def usage_from(usage: Any) -> Usage:
    counts: dict[str, int | None] = {}
    _merge_usage(counts, usage)
    return _usage_of(counts)
