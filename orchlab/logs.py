"""Structured logs: one INFO event per call, a DEBUG event per decision, rendered by structlog.

Library code calls `decision` (DEBUG, logger ``orchlab.decisions``: retry and its wait, cooldown,
fallback, race winner, cascade score, budget reservation, cache hit/miss) and the pipeline's
observe step calls `call_finished` (INFO, logger ``orchlab.calls``: role, logic, provider,
model, outcome, tokens, cost, latency, trace id). Both go through the standard `logging` module,
so any app's logging config applies; nothing is imported or formatted while the logger is off
(structlog loads with the first event that is emitted).

Each event goes through `redact` before it becomes a record: fields named like a credential
(``authorization``, ``*key*``, ``*secret*``, ``*password*``, ``*token`` ...) are dropped, and every
secret value orchlab knows (`orchlab.redaction`, and credential-like environment variables,
`orchlab.tracking.records.env_secrets`) is masked wherever it appears. SDK loggers (openai,
anthropic, httpx, google_genai) are masked by `orchlab.redaction`'s record factory.

`configure` puts a handler on the ``orchlab`` logger: JSON lines when the stream is not a
terminal (or ``json=True``, or ``ORCH_LOG_FORMAT=json``), key=value lines on a terminal.
``ORCH_LOG_LEVEL=DEBUG`` (or INFO) does the same when a client is built.

For example:

    import orchlab.logs
    orchlab.logs.configure("DEBUG")      # JSON on stderr unless it is a terminal
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from orchlab.calls import CallContext
    from orchlab.types import LLMResponse

CALLS = logging.getLogger("orchlab.calls")
DECISIONS = logging.getLogger("orchlab.decisions")
LEVEL_ENV = "ORCH_LOG_LEVEL"
FORMAT_ENV = "ORCH_LOG_FORMAT"
_DROP = re.compile(
    r"key|secret|passw|authorization|bearer|credential|cookie|(access|auth|refresh|id|session)[-_]?token|"
    r"^token$",
    re.IGNORECASE,
)
_bound: dict[str, Any] = {}
_handler: logging.Handler | None = None


def decision(what: str, **fields: Any) -> None:
    """A DEBUG event for one decision (``decision("retry", target=..., wait_s=0.5)``); free when
    ``orchlab.decisions`` is not at DEBUG."""
    if DECISIONS.isEnabledFor(logging.DEBUG):
        emit(DECISIONS, logging.DEBUG, what, fields)


def call_finished(
    ctx: CallContext, response: LLMResponse | None, error: BaseException | None, trace_id: str | None
) -> None:
    """The INFO event of a finished call (the pipeline's observe step sends it)."""
    if not CALLS.isEnabledFor(logging.INFO):
        return
    import time

    fields: dict[str, Any] = {"role": ctx.role, "logic": ctx.strategy}
    if response is not None:
        fields.update(
            provider=response.provider,
            model=response.model,
            outcome="ok",
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            cost_usd=response.cost_usd,
            cache=response.cache,
        )
    else:
        last = ctx.attempts[-1] if ctx.attempts else None
        fields.update(
            provider=last.provider if last else None,
            model=last.model if last else None,
            outcome="cancelled" if not isinstance(error, Exception) else "error",
            error_type=type(error).__name__,
            error=str(error),
        )
    fields.update(
        attempts=len(ctx.attempts),
        latency_s=round(time.perf_counter() - ctx.started_perf, 6),
        trace_id=trace_id,
    )
    emit(CALLS, logging.INFO, "call", fields)


def emit(logger: logging.Logger, level: int, event: str, fields: Mapping[str, Any]) -> None:
    """``event`` with ``fields`` through structlog onto ``logger`` (the caller checked the level)."""
    bound = _bound.get(logger.name)
    if bound is None:
        bound = _bound[logger.name] = _wrap(logger)
    bound.log(level, event, **fields)


def _wrap(logger: logging.Logger) -> Any:
    """A structlog logger over the stdlib one, configured here (structlog's global config, which
    belongs to the app, is not touched)."""
    import structlog

    return structlog.wrap_logger(
        logger,
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def redact(logger: object, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The structlog processor: credential-named fields dropped, known secret values masked."""
    from orchlab.redaction import known
    from orchlab.tracking.records import env_secrets, scrub

    secrets = {*known(), *env_secrets()}
    for name in [k for k in event_dict if _DROP.search(str(k))]:
        del event_dict[name]
    for name, value in event_dict.items():
        if value is not None and not isinstance(value, bool | int | float):
            event_dict[name] = scrub(value, secrets)
    return event_dict


def configure(
    level: int | str = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """Log orchlab's events at ``level`` to ``stream`` (stderr): JSON when ``json`` (None: when
    ``ORCH_LOG_FORMAT=json`` or the stream is not a terminal). Calling it again replaces the
    handler it installed."""
    import structlog

    global _handler
    out = stream if stream is not None else sys.stderr
    if json is None:
        wanted = os.environ.get(FORMAT_ENV, "").strip().lower()
        json = wanted == "json" or (wanted != "console" and not _isatty(out))
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                redact,
            ],
        )
    )
    root = logging.getLogger("orchlab")
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _handler = handler
    return handler


def configure_from_env() -> None:
    """`configure` when ``ORCH_LOG_LEVEL`` is set (building a client calls this; a no-op otherwise)."""
    level = os.environ.get(LEVEL_ENV, "").strip()
    if level and _handler is None:
        configure(level)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
