"""The values that cross orchlab's layers: messages, params, usage, responses, decision trails.

Plain dataclasses (not pydantic) because one of each is built per call on the hot path; and
`ResponseStream`, what ``client.stream()`` returns. They are frozen: each is built once, and a
later fact (an attempt's end, a logic's verdict, the trace id) makes a new value with
`dataclasses.replace`, so a response the caller holds never changes under it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, cast

from orchlab.errors import InvalidRequestError
from orchlab.loop import iterate_sync
from orchlab.tools.model import Tool, ToolCall, ToolRun

MessageRole = Literal["system", "user", "assistant", "tool"]
MESSAGE_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
_MESSAGE_KEYS = frozenset({"role", "content"})
_TOOL_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "is_error"})


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. An assistant turn may carry ``tool_calls`` (its text may then be empty); a
    ``tool`` turn is a call's result: ``tool_call_id`` names the call, ``is_error`` says the tool
    failed (OpenAI's message JSON, one to one; ``is_error`` is orchlab's, sent where the provider
    has it)."""

    role: MessageRole
    content: str
    # keyword-only: a subclass's own fields (`PromptMessage`'s prompt, version) stay positional
    tool_calls: tuple[ToolCall, ...] = field(default=(), kw_only=True)
    tool_call_id: str | None = field(default=None, kw_only=True)
    is_error: bool = field(default=False, kw_only=True)


def to_messages(messages: object) -> list[Message]:
    """Validate what a user passed as ``messages`` (a list of dicts or `Message`).

    Each message needs a known role and text content that can be sent (UTF-8 encodable: a lone
    surrogate such as ``"\\ud800"`` is refused here, naming the message, not deep in an SDK).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Iterable):
        raise InvalidRequestError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    out: list[Message] = []
    role: object
    content: object
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            role, content = m.role, m.content
            if m.tool_calls or role == "tool":
                out.append(_tool_message(i, m, out))
                continue
        elif isinstance(m, Mapping):
            role, content = m.get("role"), m.get("content")
            if not _MESSAGE_KEYS.issuperset(m):
                if _TOOL_KEYS.issuperset(m) or role == "tool":
                    out.append(_tool_message(i, m, out))
                    continue
                extra = set(m) - _TOOL_KEYS
                raise InvalidRequestError(
                    f"messages[{i}] has unknown keys {sorted(extra, key=str)}; only 'role', 'content', "
                    "'tool_calls', 'tool_call_id' and 'is_error' are used",
                    parameter=f"messages[{i}]",
                )
            if role == "tool":
                out.append(_tool_message(i, m, out))
                continue
        else:
            raise InvalidRequestError(
                f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}",
                parameter=f"messages[{i}]",
            )
        if role not in MESSAGE_ROLES:
            raise InvalidRequestError(
                f"messages[{i}].role is {role!r}; expected one of {', '.join(MESSAGE_ROLES)}",
                parameter=f"messages[{i}].role",
            )
        check_text(content, f"messages[{i}].content")
        out.append(m if isinstance(m, Message) else Message(cast(MessageRole, role), cast(str, content)))
    if not out:
        raise InvalidRequestError("messages is empty: pass at least one {'role': 'user', ...}")
    return out


def _tool_message(i: int, m: Message | Mapping[str, Any], before: list[Message]) -> Message:
    """An assistant turn with tool calls, or a ``tool`` turn answering one of an earlier turn's
    calls (OpenAI's JSON: ``tool_calls`` with ``function.arguments`` as JSON text, or `ToolCall`)."""
    where = f"messages[{i}]"
    role: object
    content: object
    call_id: object
    is_error: object
    calls: tuple[ToolCall, ...]
    if isinstance(m, Message):
        role, content, calls, call_id, is_error = m.role, m.content, m.tool_calls, m.tool_call_id, m.is_error
    else:
        role, content, call_id = m.get("role"), m.get("content"), m.get("tool_call_id")
        is_error = m.get("is_error", False)
        raw_calls = m.get("tool_calls") or ()
        if isinstance(raw_calls, str | bytes | Mapping) or not isinstance(raw_calls, Iterable):
            raise InvalidRequestError(f"{where}.tool_calls must be a list", parameter=f"{where}.tool_calls")
        calls = tuple(ToolCall.from_openai(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls))
    if role not in MESSAGE_ROLES:
        raise InvalidRequestError(
            f"{where}.role is {role!r}; expected one of {', '.join(MESSAGE_ROLES)}", parameter=f"{where}.role"
        )
    if calls and role != "assistant":
        raise InvalidRequestError(
            f"{where} is a {role!r} turn with tool_calls: only an assistant turn calls tools",
            parameter=f"{where}.tool_calls",
        )
    if role == "tool":
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequestError(
                f"{where} is a tool result without a tool_call_id: name the call it answers",
                parameter=f"{where}.tool_call_id",
            )
        asked = {c.id for earlier in before for c in earlier.tool_calls}
        if call_id not in asked:
            raise InvalidRequestError(
                f"{where}.tool_call_id is {call_id!r}, but no earlier assistant turn made a call with that "
                f"id (calls made: {', '.join(sorted(asked)) or 'none'})",
                parameter=f"{where}.tool_call_id",
            )
    elif call_id is not None:
        raise InvalidRequestError(
            f"{where} is a {role!r} turn with a tool_call_id: only a 'tool' turn answers a call",
            parameter=f"{where}.tool_call_id",
        )
    if content is None and (calls or role == "tool"):
        content = ""
    check_text(content, f"{where}.content")
    if not isinstance(is_error, bool):
        raise InvalidRequestError(f"{where}.is_error must be true or false", parameter=f"{where}.is_error")
    if isinstance(m, Message):
        return m
    return Message(
        cast(MessageRole, role),
        cast(str, content),
        tool_calls=calls,
        tool_call_id=cast(str | None, call_id),
        is_error=cast(bool, is_error),
    )


def check_text(text: object, where: str) -> None:
    """Refuse text that cannot be sent: not a ``str``, or not UTF-8 encodable (a lone surrogate).

    ASCII text (the common case) is checked in constant time; other text is encoded once.
    NUL and other control characters are valid in JSON and are sent as they are.
    """
    if not isinstance(text, str):
        raise InvalidRequestError(
            f"{where} must be a string (orchlab sends text), got {type(text).__name__}", parameter=where
        )
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{where} holds a lone surrogate {text[exc.start : exc.end]!r} at character {exc.start}: "
            "it is not valid Unicode text and cannot be sent (often half of an emoji cut in two, or "
            "bytes decoded with errors='surrogateescape'); nothing was sent",
            parameter=where,
        ) from None


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Generation settings common to providers; ``extra`` passes provider-specific keys through."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    logprobs: bool = False
    timeout_s: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def merged(self, override: Mapping[str, Any] | GenerationParams | None) -> GenerationParams:
        """A copy with ``override``'s set values on top (unknown keys go to ``extra``)."""
        if override is None:
            return self
        if isinstance(override, GenerationParams):
            override = override.as_dict()
        known = _PARAM_NAMES
        changes: dict[str, Any] = {}
        extra = dict(self.extra)
        for key, value in override.items():
            if key == "extra" and isinstance(value, Mapping):
                extra.update(value)
            elif key in known:
                if key == "stop" and value is not None:
                    value = (value,) if isinstance(value, str) else tuple(value)
                changes[key] = value
            else:
                extra[key] = value
        return replace(self, **changes, extra=extra)

    def as_dict(self) -> dict[str, Any]:
        """Only the values that are set (what a trace or a log records)."""
        out: dict[str, Any] = {}
        for name in _PARAM_NAMES:
            value = getattr(self, name)
            if value is not None and not (name == "logprobs" and value is False):
                out[name] = list(value) if name == "stop" else value
        out.update(self.extra)
        return out


# Looked up once: `dataclasses.fields` costs microseconds on every call's hot path.
_PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GenerationParams) if f.name != "extra")


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


AttemptOutcome = Literal["ok", "error", "cancelled", "rejected"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider call made while answering a request (the winner, a loser, a failure).

    The call's trail holds one per provider call: a placeholder when it starts (outcome
    ``"error"`` until its end is known), replaced by its settled record when it ends, and again
    when a logic judges it (``"rejected"``, a confidence, a note)."""

    provider: str
    model: str
    outcome: AttemptOutcome
    latency_s: float
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    error: str | None = None
    confidence: float | None = None
    stage: str | None = None
    started_at: float = 0.0
    """Wall-clock start (``time.time()``), for traces."""
    output: str | None = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    error_type: str | None = None
    note: str | None = None
    """What the numbers cannot say (e.g. a cancelled call's tokens were never reported)."""
    overrun_usd: float | None = None
    """How much more than its budget reservation this call cost (charged as reported)."""
    tool_calls: tuple[ToolCall, ...] = field(default=(), repr=False)
    """The calls the model asked for in this attempt's answer."""
    deployment: str | None = None
    """The server of a pooled provider (``deployments:``) that answered."""
    cache: str | None = None
    """``"hit"``: answered from the response cache (nothing sent, $0); ``"miss"``: sent, and its
    answer stored (`orchlab.pipeline.cache`); None: the cache was not asked."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy did: every attempt, the winner, and why."""

    strategy: str
    task_type: str | None = None
    attempts: tuple[Attempt, ...] = ()
    winner: str | None = None
    rationale: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    tools: tuple[ToolRun, ...] = ()
    """Every tool run of a `delegate` loop, in order (call, result, step, timing)."""

    def explain(self) -> str:
        """The trail as text: every attempt (stage, target, outcome, latency, tokens, cost) and why."""
        from orchlab.strategies.trail import format_trail

        return format_trail(self)

    @property
    def total_cost_usd(self) -> float | None:
        costs = [a.cost_usd for a in self.attempts if a.outcome != "error" or a.usage.total_tokens]
        if any(c is None for c in costs):
            return None
        return sum(c for c in costs if c is not None)


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """One answer, whatever produced it.

    ``cost_usd`` is None only when the price is unknown, and ``cost_note`` then says why.
    ``decision`` is set when a strategy produced the answer; its attempts' costs are in
    ``cost_usd`` already. ``trace_id`` is set when tracking recorded the call. The response is
    frozen: later facts arrive as a copy made with `dataclasses.replace` (``id`` is kept).
    """

    content: str
    provider: str
    model: str
    role: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    finish_reason: str | None = None
    raw: Any = field(default=None, repr=False)
    cost_usd: float | None = None
    cost_note: str | None = None
    logprobs: list[float] | None = field(default=None, repr=False)
    decision: Decision | None = field(default=None, repr=False)
    trace_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    overrun_usd: float | None = None
    """Set when the provider reported more usage than the worst case reserved under a budget:
    by how much the cost exceeded that reservation (it is charged in full; see `orchlab.pipeline.settle`)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls the model asked for instead of (or besides) text; ``finish_reason`` is then
    ``"tool_calls"``. `delegate` runs them; ``run()`` returns them to the caller."""
    deployment: str | None = None
    """The server of a pooled provider (``deployments:``) that answered."""
    moved_from: tuple[str, ...] = ()
    """Deployments of that pool that failed this request before it was moved ("url (error type)")."""
    message_id: str | None = None
    """The stored assistant message (a ULID) when the call was made in a thread (`client.thread`)."""
    output: Any = field(default=None, repr=False)
    """The validated instance of the output model the call asked for (``run(..., output=M)``)."""
    cache: str | None = None
    """``"hit"``: a stored answer of the response cache, nothing was sent and it cost $0;
    ``"miss"``: sent, and the answer stored; None: the cache was not asked (`orchlab.pipeline.cache`)."""

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"

    def __str__(self) -> str:
        return self.content

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Markdown + plain text with a cost footer, and metadata (see `orchlab.render`)."""
        from orchlab.render import mimebundle

        return mimebundle(self)

    def _repr_markdown_(self) -> str:
        from orchlab.render import to_markdown

        return to_markdown(self)


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """A structured answer asked for: the pydantic model, its name and its JSON schema (built by
    `orchlab.output.structured.output_schema`; adapters send ``schema`` their native way)."""

    name: str
    schema: Mapping[str, Any] = field(repr=False)
    model: Any = field(repr=False)
    """The pydantic model class the answer is validated against."""


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What an adapter receives: the model id, validated messages and merged params; the tools
    the model may call and ``tool_choice`` (``auto`` | ``none`` | ``required`` | a tool's name,
    None: the provider's default); ``parallel_tool_calls=False`` asks for one call at a time;
    ``output`` when the answer must be JSON of that schema; ``json_answer`` when it must be some
    JSON value (``format="json"``): an adapter that can constrain generation to JSON does."""

    model: str
    messages: tuple[Message, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    output: OutputSchema | None = None
    json_answer: bool = False


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """What an adapter's ``embed`` receives: the model id and one batch of texts."""

    model: str
    texts: tuple[str, ...]
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors for texts (``client.embed(role, texts)``): ``vectors`` is a numpy array, one row
    per text, in order; usage counts input tokens (embeddings have no output), cost is input-only."""

    vectors: Any = field(repr=False)
    provider: str
    model: str
    role: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    cost_usd: float | None = None
    cost_note: str | None = None
    trace_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        return int(self.vectors.shape[1]) if len(self.vectors) else 0

    def __len__(self) -> int:
        return len(self.vectors)

    def similarity(self) -> Any:
        """The cosine similarity of every pair of texts (a square numpy array)."""
        import numpy as np

        unit = self.vectors / np.maximum(np.linalg.norm(self.vectors, axis=1, keepdims=True), 1e-12)
        return unit @ unit.T


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer. The last chunk carries the final response (with usage).

    ``cache``, on an attempt's first chunk: what the response cache did (``hit`` | ``miss``;
    None: it was not asked), known before the first token (`ResponseStream.cache`)."""

    delta: str = ""
    response: LLMResponse | None = None
    cache: str | None = None


class ResponseStream:
    """A streamed answer: iterate it (``for`` or ``async for``) for text; then read ``.response``.

    ``stream.events()`` (``for`` or ``async for``) yields the text deltas, then each `ToolCall` the
    answer makes, as the answer completes (the adapters join a call's pieces; every provider
    finishes its calls by then); ``stream.tool_calls`` holds them once the stream has ended::

        for event in client.stream("assistant", messages, tools=[get_weather]).events():
            print(event if isinstance(event, str) else f"\n-> {event.name}({event.raw_arguments})")

    ``chunks`` is what ``async for`` reads; ``sync_chunks``, when given, what a ``for`` loop reads
    in the caller's thread (else ``chunks`` is driven on the engine loop and taken over in
    batches). Only the one iterated is started.
    """

    def __init__(
        self, chunks: AsyncIterator[StreamChunk], sync_chunks: Iterator[StreamChunk] | None = None
    ) -> None:
        self._chunks = chunks
        self._sync_chunks = sync_chunks
        self.response: LLMResponse | None = None
        self.cache: str | None = None
        """What the response cache did for this answer (``hit`` | ``miss``), known from its first
        chunk on: before the first delta is yielded (None: not asked, or not known yet)."""

    def __iter__(self) -> Iterator[str]:
        chunks = self._sync_chunks
        if chunks is None:
            chunks = iterate_sync(self._chunks)
        try:
            first = True
            for chunk in chunks:
                if chunk.response is None:
                    if first:  # the first chunk says what the cache did
                        first, self.cache = False, chunk.cache
                    if chunk.delta:
                        yield chunk.delta
                else:
                    self._ended(chunk.response)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # a ``break`` releases the connection now, not when collected
                close()

    async def __aiter__(self) -> AsyncIterator[str]:
        chunks = self._chunks
        try:
            first = True
            async for chunk in chunks:
                if chunk.response is None:
                    if first:  # the first chunk says what the cache did
                        first, self.cache = False, chunk.cache
                    if chunk.delta:
                        yield chunk.delta
                else:
                    self._ended(chunk.response)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # on the caller's loop (what it calls runs there, or hops itself)
                await aclose()

    def _ended(self, response: LLMResponse) -> None:
        self.response = response
        if self.cache is None:
            self.cache = response.cache

    def text(self) -> str:
        """Consume the stream and return the whole answer."""
        return "".join(self)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The answer's tool calls (empty until the stream has ended, and for a text answer)."""
        return self.response.tool_calls if self.response is not None else ()

    def events(self) -> StreamEvents:
        """Text deltas and then tool calls, for ``for`` or ``async for`` (see the class docstring)."""
        return StreamEvents(self)


class StreamEvents:
    """What `ResponseStream.events` returns: iterate it with ``for`` or ``async for``; each item is a
    text delta (``str``) or a `ToolCall`."""

    def __init__(self, stream: ResponseStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[str | ToolCall]:
        yield from self._stream
        yield from self._stream.tool_calls

    async def __aiter__(self) -> AsyncIterator[str | ToolCall]:
        async for delta in self._stream:
            yield delta
        for call in self._stream.tool_calls:
            yield call
