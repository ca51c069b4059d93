"""A scriptable provider for tests: a **test double**, not a model.

`TestProvider` (adapter kind ``test``) and `LocalTestProvider` (kind ``test_local``, which counts
as a local provider for the LOCAL_* / CLOUD_* strategies) answer from a script instead of a
model: fixed replies, replies chosen by what the prompt contains, failures with HTTP status and
``retry_after``, latency, a simulated token rate, log-probs and prices. Every call is recorded
in ``provider.calls`` (including calls that were cancelled, and how many tokens they had
"generated" by then), so tests can check what a strategy really did.

It never stands in for a real adapter: nothing here talks to a model. Use it in your own tests::

    providers:
      fake:
        type: test
        options:
          models:
            fast: {reply: "4", latency_s: 0.01}
            flaky:
              script:
                - {error: rate_limit, retry_after: 0.05}
                - {content: "4"}
            judge: {rules: [{contains: "Rate", reply: "9"}]}

or from Python, after building the client::

    fake = client.provider("fake")
    fake.script("fast", "first answer", RateLimitError("slow down", provider="fake"))
    fake.respond_with("judge", lambda request: "9")
    fake.calls[-1].outcome          # "ok" | "error" | "cancelled"

Tokens are whitespace-separated words: input tokens are the words of all messages, output
tokens the words of the reply.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchlab.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from orchlab.providers.base import DiscoveredModel, Provider
from orchlab.types import GenerationParams, LLMResponse, Message, ModelRequest, StreamChunk, Usage

__test__ = False  # a test double: pytest must not collect it

ErrorName = Literal[
    "rate_limit",
    "timeout",
    "unavailable",
    "connection",
    "auth",
    "bad_request",
    "not_found",
    "context_length",
    "response",
]

_ERRORS: dict[str, tuple[type[ProviderError], int | None]] = {
    "rate_limit": (RateLimitError, 429),
    "timeout": (ProviderTimeoutError, None),
    "unavailable": (ProviderUnavailableError, 503),
    "connection": (ProviderConnectionError, None),
    "auth": (AuthenticationError, 401),
    "bad_request": (ProviderError, 400),
    "not_found": (ProviderError, 404),
    "context_length": (ContextLengthExceededError, 400),
    "response": (ProviderResponseError, None),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One scripted call: an answer (``content``) or a failure (``error``)."""

    content: str | None = None
    error: ErrorName | None = None
    status_code: int | None = None
    retry_after: float | None = Field(default=None, ge=0)
    message: str | None = None
    latency_s: float | None = Field(default=None, ge=0)
    logprobs: list[float] | None = None


class Rule(_Strict):
    """Answer ``reply`` when the prompt (all message contents) contains ``contains``."""

    contains: str
    reply: str


class ModelScript(_Strict):
    """How one model of the test provider behaves.

    Each call takes the next ``script`` step; when the script is used up, the first matching
    ``rules`` entry answers, else ``reply``, else an echo of the last user message.
    """

    reply: str | None = None
    script: list[Step] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    latency_s: float = Field(default=0.0, ge=0, description="before the first token / the failure")
    tokens_per_s: float | None = Field(
        default=None, gt=0, description="simulated generation speed (then cancellable mid-reply)"
    )
    logprobs: list[float] | None = Field(
        default=None, description="per-token log-probs, returned when the request asks for them"
    )
    logprob: float | None = Field(default=None, le=0, description="the same log-prob for every token")
    input_price_per_mtok: float | None = Field(default=None, ge=0)
    output_price_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, gt=0, description="in words (input + max_tokens)")


class TestProviderOptions(_Strict):
    models: dict[str, ModelScript] = Field(default_factory=dict)
    default: ModelScript = Field(default_factory=ModelScript, description="for models not listed")
    strict_models: bool = Field(default=False, description="an unlisted model fails with HTTP 404")


@dataclass
class TestCall:
    """One call the test provider received (``outcome`` is "running" until it ends)."""

    __test__: ClassVar[bool] = False

    model: str
    messages: tuple[Message, ...]
    params: GenerationParams
    stream: bool = False
    started_at: float = field(default_factory=time.perf_counter)
    ended_at: float | None = None
    outcome: Literal["running", "ok", "error", "cancelled"] = "running"
    tokens_emitted: int = 0
    """Output tokens "generated" so far; frozen at the moment a cancelled call stopped."""
    content: str | None = None
    error: str | None = None

    @property
    def prompt(self) -> str:
        """The last user message."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @property
    def text(self) -> str:
        """Every message's content, joined (what ``rules`` match against)."""
        return "\n".join(m.content for m in self.messages)

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


Responder = Callable[[ModelRequest], "str | LLMResponse | Step | Awaitable[str | LLMResponse | Step]"]


def _count(text: str) -> int:
    return len(text.split())


class TestProvider(Provider):
    """A scripted, deterministic stand-in for a cloud provider (kind ``test``). Test double only."""

    __test__: ClassVar[bool] = False
    kind = "test"
    requires_key = False
    runs_on_any_loop = True
    Options: ClassVar[type[BaseModel]] = TestProviderOptions
    options: TestProviderOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[TestCall] = []
        self._queues: dict[str, deque[Step | Exception]] = {
            name: deque(spec.script) for name, spec in self.options.models.items()
        }
        self._functions: dict[str, Responder] = {}

    # --- scripting from Python ----------------------------------------------------------------

    def script(self, model: str, *steps: str | Step | Exception | dict[str, Any]) -> None:
        """Queue what the next calls to ``model`` do: a reply, a `Step`, or an exception to raise."""
        queue = self._queues.setdefault(model, deque())
        for step in steps:
            if isinstance(step, str):
                queue.append(Step(content=step))
            elif isinstance(step, dict):
                queue.append(Step.model_validate(step))
            else:
                queue.append(step)

    def respond_with(self, model: str, fn: Responder) -> None:
        """Answer every call to ``model`` with ``fn(request)`` (sync or async), after the script."""
        self._functions[model] = fn

    def calls_for(self, model: str) -> list[TestCall]:
        return [c for c in self.calls if c.model == model]

    def reset(self) -> None:
        """Forget the call history (the scripts stay as they are)."""
        self.calls.clear()

    # --- the provider interface -----------------------------------------------------------------

    def _spec(self, model: str) -> ModelScript:
        spec = self.options.models.get(model)
        if spec is not None:
            return spec
        if self.options.strict_models:
            raise ProviderError(
                f"model {model!r} is not scripted (scripted: {', '.join(sorted(self.options.models))})",
                provider=self.name,
                model=model,
                status_code=404,
            )
        return self.options.default

    async def _next(self, request: ModelRequest, spec: ModelScript, call: TestCall) -> Step | LLMResponse:
        queue = self._queues.get(request.model)
        if queue:
            step = queue.popleft()
            if isinstance(step, Exception):
                raise step
            return step
        fn = self._functions.get(request.model)
        if fn is not None:
            out = fn(request)
            if inspect.isawaitable(out):
                out = await out
            return Step(content=out) if isinstance(out, str) else out
        for rule in spec.rules:
            if rule.contains in call.text:
                return Step(content=rule.reply)
        if spec.reply is not None:
            return Step(content=spec.reply)
        return Step(content=f"{request.model}: {call.prompt}")

    def _fail(self, step: Step, model: str) -> ProviderError:
        assert step.error is not None
        cls, status = _ERRORS[step.error]
        return cls(
            step.message or f"scripted {step.error}",
            provider=self.name,
            model=model,
            status_code=step.status_code or status,
            retry_after=step.retry_after,
        )

    def _logprobs(self, step: Step, spec: ModelScript, n_tokens: int, wanted: bool) -> list[float] | None:
        if not wanted:
            return None
        if step.logprobs is not None:
            return list(step.logprobs)
        if spec.logprobs is not None:
            return list(spec.logprobs)
        if spec.logprob is not None:
            return [spec.logprob] * max(n_tokens, 1)
        return None

    async def _run(self, request: ModelRequest, call: TestCall, on_token: Any = None) -> LLMResponse:
        spec = self._spec(request.model)
        input_tokens = sum(_count(m.content) for m in request.messages)
        if spec.context_window is not None:
            needed = input_tokens + (request.params.max_tokens or 0)
            if needed > spec.context_window:
                raise ContextLengthExceededError(
                    f"context length exceeded: {needed} tokens > {spec.context_window}",
                    provider=self.name,
                    model=request.model,
                    status_code=400,
                )
        step = await self._next(request, spec, call)
        if isinstance(step, LLMResponse):
            return step
        latency = spec.latency_s if step.latency_s is None else step.latency_s
        if latency:
            await asyncio.sleep(latency)
        if step.error is not None:
            raise self._fail(step, request.model)
        content = step.content or ""
        words = content.split()
        if request.params.max_tokens is not None and len(words) > request.params.max_tokens:
            words = words[: request.params.max_tokens]
            content = " ".join(words)
        for i, word in enumerate(words):
            if spec.tokens_per_s:
                await asyncio.sleep(1.0 / spec.tokens_per_s)
            call.tokens_emitted += 1
            if on_token is not None:
                await on_token(word if i == 0 else " " + word)
        usage = Usage(input_tokens=input_tokens, output_tokens=len(words))
        cost = None
        if spec.input_price_per_mtok is not None or spec.output_price_per_mtok is not None:
            cost = (
                usage.input_tokens * (spec.input_price_per_mtok or 0.0)
                + usage.output_tokens * (spec.output_price_per_mtok or 0.0)
            ) / 1_000_000
        return LLMResponse(
            content=content,
            provider=self.name,
            model=request.model,
            usage=usage,
            latency_s=time.perf_counter() - call.started_at,
            finish_reason="stop",
            cost_usd=cost,
            cost_note=None if cost is not None else "the test provider has no price for this model",
            logprobs=self._logprobs(step, spec, len(words), request.params.logprobs),
            raw={"test_double": True},
        )

    async def _tracked(self, call: TestCall, work: Awaitable[LLMResponse]) -> LLMResponse:
        self.calls.append(call)
        try:
            response = await work
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        except Exception as exc:
            call.outcome, call.error = "error", str(exc)
            raise
        finally:
            call.ended_at = time.perf_counter()
        call.outcome, call.content = "ok", response.content
        return response

    async def complete(self, request: ModelRequest) -> LLMResponse:
        call = TestCall(request.model, request.messages, request.params)
        return await self._tracked(call, self._run(request, call))

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        call = TestCall(request.model, request.messages, request.params, stream=True)
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        async def on_token(text: str) -> None:
            queue.put_nowait(text)

        async def produce() -> LLMResponse:
            try:
                return await self._run(request, call, on_token)
            finally:
                queue.put_nowait(None)

        job = asyncio.ensure_future(self._tracked(call, produce()))
        try:
            while (text := await queue.get()) is not None:
                yield StreamChunk(delta=text)
            yield StreamChunk(response=await job)
        finally:
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)

    async def list_models(self) -> list[DiscoveredModel]:
        return [
            DiscoveredModel(id=name, provider=self.name, context_window=spec.context_window)
            for name, spec in self.options.models.items()
        ]


class LocalTestProvider(TestProvider):
    """The same test double, counted as a local provider (kind ``test_local``)."""

    __test__: ClassVar[bool] = False
    kind = "test_local"
    is_local = True


class ManualClock:
    """A clock for `ProviderHealth` that only moves when told: ``sleep`` advances it at once.

    ``client.health.clock = ManualClock()`` makes retry backoffs and cooldowns instant and
    checkable (``clock.sleeps`` lists every wait a strategy asked for).
    """

    __test__: ClassVar[bool] = False

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds
