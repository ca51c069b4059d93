"""What the orchestrator knows about one orchestrated call while it runs, and who hears of it.

A `CallContext` collects the `Attempt` of every provider call made for one user call (a plain
role call makes one; strategies make several). When the call ends, each registered
`CallObserver` receives a `CallRecord` (cost tracking, MLflow tracing). Observers must return
quickly and never raise into the caller's path: the orchestrator isolates them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchlab.errors import OrchlabWarning
from orchlab.types import Attempt, LLMResponse, Message


@dataclass(slots=True)
class CallContext:
    role: str | None
    strategy: str
    messages: tuple[Message, ...]
    task_type: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    log: bool = True
    tags: dict[str, Any] = field(default_factory=dict)
    """Free annotations for observers, e.g. the registered prompt name and version."""

    def new_attempt(
        self, provider: str, model: str, *, stage: str | None = None, params: dict[str, Any] | None = None
    ) -> Attempt:
        """Record the start of one provider call; it reads ``"error"`` until its end is recorded."""
        attempt = Attempt(
            provider=provider,
            model=model,
            outcome="error",
            latency_s=0.0,
            stage=stage,
            started_at=time.time(),
            params=params if params is not None else {},
        )
        self.attempts.append(attempt)
        return attempt


@dataclass(slots=True)
class CallRecord:
    """A finished call: its context, and the response or the error it ended with."""

    context: CallContext
    response: LLMResponse | None
    error: BaseException | None
    ended_at: float

    @property
    def latency_s(self) -> float:
        return self.ended_at - self.context.started_at


class CallObserver(Protocol):
    def call_finished(self, record: CallRecord) -> None: ...


class Observers:
    """The registered observers; a failing observer warns once and is skipped after that."""

    def __init__(self) -> None:
        self._observers: list[CallObserver] = []
        self._warned: set[int] = set()

    def add(self, observer: CallObserver) -> None:
        if observer not in self._observers:
            self._observers.append(observer)

    def remove(self, observer: CallObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def __iter__(self) -> Any:
        return iter(list(self._observers))

    def notify(self, record: CallRecord) -> None:
        for observer in list(self._observers):
            try:
                observer.call_finished(record)
            except Exception as exc:
                if id(observer) not in self._warned:
                    self._warned.add(id(observer))
                    warnings.warn(
                        f"orchlab: {type(observer).__name__} failed ({exc!r}); the call itself "
                        "succeeded. Further failures of this observer are not reported.",
                        OrchlabWarning,
                        stacklevel=2,
                    )
