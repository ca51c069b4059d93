"""OpenAI's chat-completions wire format: the request parsed into orchlab's messages and params,
and orchlab's answer built as ``chat.completion`` / ``chat.completion.chunk`` bodies.

What the gateway honours is `ChatRequest`. Every other OpenAI parameter (`UNSUPPORTED`), and any
key OpenAI does not define either, is refused with a 400 naming it, or dropped when the config
says ``gateway.drop_params: true``. Message fields the same: ``role``, ``content`` (text, or
text parts), and the tool fields (``tool_calls``, ``tool_call_id``) are used; ``name`` is refused
or dropped. ``tools``, ``tool_choice`` and ``parallel_tool_calls`` go to the upstream whatever its
wire format (the library maps them); the calls it asks for come back in OpenAI's shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchlab.serve.errors import HTTPError, bad_request
from orchlab.types import LLMResponse

UNSUPPORTED = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "modalities",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "safety_identifier",
        "service_tier",
        "store",
        "verbosity",
        "web_search_options",
    }
)
"""OpenAI chat-completions parameters this gateway cannot honour (refused, or dropped)."""
MESSAGE_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
"""OpenAI message roles -> orchlab's (``developer`` is the newer name of ``system``)."""
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls"}
_LENGTH = {"length", "max_tokens", "MAX_TOKENS", "max_output_tokens"}


class _Wire(BaseModel):
    # strict: "10" is not 10 (an int where a float goes is fine, as in JSON)
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ChatMessage(_Wire):
    role: str
    content: str | list[TextPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Wire):
    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object", "json_schema"]


class ChatRequest(_Wire):
    """The parameters of ``POST /v1/chat/completions`` the gateway honours."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


_REQUEST_KEYS = frozenset(ChatRequest.model_fields)
_MESSAGE_KEYS = frozenset(ChatMessage.model_fields)
_STREAM_OPTION_KEYS = frozenset(StreamOptions.model_fields)


def parse_request(body: object, *, drop_params: bool) -> ChatRequest:
    """The decoded JSON body as a `ChatRequest`; an `HTTPError` 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
    body = _known_keys(body, drop_params)
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _known_keys(body: dict[str, Any], drop_params: bool) -> dict[str, Any]:
    """``body`` without the parameters the gateway does not honour (dropped, or a 400)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _REQUEST_KEYS:
            out[key] = value
        elif not drop_params:
            what = "is not supported by this gateway" if key in UNSUPPORTED else "is not a known parameter"
            raise bad_request(
                f"{key!r} {what} (the gateway's config may set gateway.drop_params: true to ignore it)",
                param=key,
                code="unsupported_parameter",
            )
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_message_keys(i, m, drop_params) for i, m in enumerate(messages)]
    options = out.get("stream_options")
    if isinstance(options, dict) and drop_params:
        out["stream_options"] = {k: v for k, v in options.items() if k in _STREAM_OPTION_KEYS}
    return out


def _message_keys(i: int, message: object, drop_params: bool) -> object:
    if not isinstance(message, dict):
        return message  # validation names it
    extra = [k for k in message if k not in _MESSAGE_KEYS]
    if extra and not drop_params:
        raise bad_request(
            f"messages[{i}].{extra[0]} is not supported by this gateway "
            "(role, content, tool_calls and tool_call_id are used)",
            param=f"messages[{i}].{extra[0]}",
            code="unsupported_parameter",
        )
    return message if not extra else {k: v for k, v in message.items() if k in _MESSAGE_KEYS}


def validation_error(exc: ValidationError) -> HTTPError:
    """A pydantic validation error of a request body as a 400 naming the parameter."""
    err = exc.errors(include_url=False)[0]
    param = ""
    for part in err["loc"]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part in ("str", "list[TextPart]", "list[str]", "none", "int", "float") or "[" in str(part):
            continue  # the name of a union member pydantic tried, not a key
        else:
            param += f".{part}" if param else str(part)
    if err["type"] == "missing":
        return bad_request(f"missing required parameter {param!r}", param=param)
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {_short(got)})"
    return bad_request(f"invalid value for {param!r}: {err['msg']}{shown}", param=param)


def _short(value: object) -> str:
    text = (
        json.dumps(value, ensure_ascii=False) if isinstance(value, str | int | float | bool) else repr(value)
    )
    return text if len(text) <= 60 else text[:60] + "…"


def to_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's messages as orchlab's ``{"role", "content"}`` (text parts joined), with
    ``tool_calls`` / ``tool_call_id`` as OpenAI sends them (the library checks and maps them)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(request.messages):
        role = MESSAGE_ROLES.get(m.role)
        if role is None:
            raise bad_request(
                f"messages[{i}].role is {m.role!r}; this gateway takes "
                f"{', '.join(MESSAGE_ROLES)} (legacy function messages are not supported)",
                param=f"messages[{i}].role",
            )
        if m.content is None and not m.tool_calls and role != "tool":
            raise bad_request(f"messages[{i}].content is missing", param=f"messages[{i}].content")
        content = m.content if isinstance(m.content, str | None) else "".join(p.text for p in m.content)
        message: dict[str, Any] = {"role": role, "content": content or ""}
        if m.tool_calls:
            message["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def to_tools(request: ChatRequest) -> dict[str, Any]:
    """The ``tools``, ``tool_choice`` and ``parallel_tool_calls`` the request sets, as keyword
    arguments of ``client.arun`` / ``client.stream`` (OpenAI's JSON: the library maps it)."""
    out: dict[str, Any] = {}
    if request.tools is not None:
        out["tools"] = request.tools
    if request.tool_choice is not None:
        out["tool_choice"] = request.tool_choice
    if request.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    return out


def tool_calls_body(response: LLMResponse) -> list[dict[str, Any]]:
    """The answer's tool calls in OpenAI's shape (arguments as JSON text)."""
    return [call.to_openai() for call in response.tool_calls]


def to_params(request: ChatRequest) -> dict[str, Any]:
    """The generation parameters the request sets (orchlab's names; the rest under ``extra``)."""
    if (
        request.max_tokens is not None
        and request.max_completion_tokens is not None
        and request.max_tokens != request.max_completion_tokens
    ):
        raise bad_request(
            "max_tokens and max_completion_tokens disagree; send one of them", param="max_completion_tokens"
        )
    params: dict[str, Any] = {}
    limit = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    for name, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("max_tokens", limit),
        ("stop", request.stop),
        ("seed", request.seed),
    ):
        if value is not None:
            params[name] = value
    if request.logprobs:
        params["logprobs"] = True
    extra: dict[str, Any] = {}
    if request.logprobs and request.top_logprobs:
        extra["top_logprobs"] = request.top_logprobs
    if request.response_format is not None and request.response_format.type != "text":
        extra["response_format"] = request.response_format.model_dump()
    if extra:
        params["extra"] = extra
    return params


# --- answers -------------------------------------------------------------------------------------


def completion_id(response_id: str) -> str:
    return f"chatcmpl-{response_id}"


def finish_reason(response: LLMResponse) -> str:
    """The provider's finish reason in OpenAI's terms (``stop`` when it gave none we can map)."""
    reason = response.finish_reason
    if response.tool_calls:
        return "tool_calls"
    if reason in FINISH_REASONS:
        return reason
    return "length" if reason in _LENGTH else "stop"


def usage_body(response: LLMResponse) -> dict[str, Any]:
    u = response.usage
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def completion_body(response: LLMResponse, model: str, created: int | None = None) -> dict[str, Any]:
    """A ``chat.completion`` (``model``: the name the caller asked for)."""
    logprobs = None
    if response.logprobs is not None:
        entries: list[dict[str, Any]] = [
            {"token": "", "logprob": lp, "bytes": None, "top_logprobs": []} for lp in response.logprobs
        ]
        logprobs = {"content": entries, "refusal": None}
    return {
        "id": completion_id(response.id),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message_body(response),
                "logprobs": logprobs,
                "finish_reason": finish_reason(response),
            }
        ],
        "usage": usage_body(response),
    }


def message_body(response: LLMResponse) -> dict[str, Any]:
    """The answer's ``message``: its text, and its ``tool_calls`` when the model asked for some
    (then ``content`` is null when there is no text, as OpenAI sends it)."""
    message: dict[str, Any] = {"role": "assistant", "content": response.content, "refusal": None}
    if response.tool_calls:
        message["content"] = response.content or None
        message["tool_calls"] = tool_calls_body(response)
    return message


def tool_call_deltas(response: LLMResponse) -> list[dict[str, Any]]:
    """The answer's tool calls as a stream delta's ``tool_calls`` (each whole, with its index)."""
    return [{"index": i, **call} for i, call in enumerate(tool_calls_body(response))]


def chunk_body(
    cid: str,
    model: str,
    created: int,
    delta: Mapping[str, Any],
    finish: str | None = None,
    *,
    with_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (``usage: null`` on each when the caller asked for usage)."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        body["usage"] = None
    return body


def usage_chunk(cid: str, model: str, created: int, response: LLMResponse) -> dict[str, Any]:
    """The last chunk when ``stream_options.include_usage`` is set: no choices, the usage."""
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage_body(response),
    }


def sse(data: Mapping[str, Any] | str) -> bytes:
    """One server-sent event frame."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
