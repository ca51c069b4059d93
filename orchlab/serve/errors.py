"""The one place an error becomes an HTTP answer: a status and OpenAI's error body.

``{"error": {"message", "type", "param", "code"}}``, the shape every OpenAI SDK parses. orchlab's
own messages are used where they speak to the caller (bad parameters, an unknown model, a budget,
a rate limit, an upstream fault); they are masked already. A server-side problem (the gateway's
config, a missing key, its thread store, an unexpected exception) says only what kind of problem
and the request id: no stack trace, key or internal path reaches a client. A thread store that
cannot be reached or used now is a 503 ``store_unavailable``; any other store failure a 500.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from orchlab.errors import (
    AllAttemptsFailedError,
    AuthenticationError,
    AuthError,
    BudgetExceededError,
    ConfigError,
    ContextLengthExceededError,
    ContextWindowError,
    InvalidRequestError,
    OrchlabError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    StoreError,
    UnknownModelError,
    UnknownRoleError,
    UnsupportedCapabilityError,
)

INVALID = "invalid_request_error"
SERVER = "server_error"


@dataclass(eq=False)
class HTTPError(Exception):
    """An answer the gateway gives instead of a completion (raised by request parsing and routing)."""

    status: int
    message: str
    type: str = INVALID
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> HTTPError:
    return HTTPError(400, message, param=param, code=code)


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return {}
    return {"retry-after": str(max(1, math.ceil(seconds)))}


_URL = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>),]+"  # a URL
    r"|\('[^']*', \d+\)"  # a socket address, as an OS error names it: ('10.0.0.5', 8000)
)


def from_exception(exc: BaseException, request_id: str) -> HTTPError:
    """``exc`` as the answer the caller gets (see the module docstring for what each becomes).

    An upstream fault's message (429, 5xx) names the provider, never its URL: a configured
    ``api_base`` is an internal address (the library's own error keeps it, for the operator)."""
    answer = _answer(exc, request_id)
    if (answer.status == 429 or answer.status >= 500) and _URL.search(answer.message):
        provider = getattr(exc, "provider", None)
        name = f"provider {provider!r}" if provider else "the upstream provider"
        answer = replace(answer, message=_URL.sub(name, answer.message))
    return answer


def _answer(exc: BaseException, request_id: str) -> HTTPError:
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, AllAttemptsFailedError):
        return _all_failed(exc, request_id)
    if isinstance(exc, ContextWindowError | ContextLengthExceededError):
        return HTTPError(413, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, BudgetExceededError):
        return HTTPError(429, str(exc), type="insufficient_quota", code="budget_exceeded")
    if isinstance(exc, RateLimitError):
        return HTTPError(
            429,
            str(exc),
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, UnknownRoleError | UnknownModelError):
        return HTTPError(404, str(exc), code="model_not_found", param="model")
    if isinstance(exc, InvalidRequestError):
        return HTTPError(400, str(exc), param=exc.parameter)
    if isinstance(exc, UnsupportedCapabilityError):
        return HTTPError(400, str(exc), code="unsupported_parameter")
    if isinstance(exc, ProviderTimeoutError):
        return HTTPError(504, str(exc), type=SERVER, code="upstream_timeout")
    if isinstance(exc, ProviderUnavailableError | ProviderConnectionError):
        return HTTPError(503, str(exc), type=SERVER, code="upstream_unavailable")
    if isinstance(exc, AuthenticationError | AuthError):
        # the gateway's own key was refused or is missing: its config's problem, not the caller's
        return HTTPError(
            502,
            f"the gateway could not authenticate with its upstream provider (request {request_id})",
            type=SERVER,
            code="upstream_auth",
        )
    if isinstance(exc, ProviderError):
        return HTTPError(502, str(exc), type=SERVER, code="upstream_error")
    if isinstance(exc, ConfigError):
        return HTTPError(
            500, f"the gateway's configuration cannot serve this (request {request_id})", type=SERVER
        )
    if isinstance(exc, StoreError):
        # its message names the store's host or file: for the operator, not the caller
        if _unreachable(exc):
            return HTTPError(
                503,
                f"the gateway's thread store is unavailable (request {request_id})",
                type=SERVER,
                code="store_unavailable",
            )
        return HTTPError(
            500, f"the gateway's thread store failed (request {request_id})", type=SERVER, code="store_error"
        )
    if isinstance(exc, OrchlabError):
        return HTTPError(500, f"{type(exc).__name__} (request {request_id})", type=SERVER)
    return HTTPError(500, f"internal error (request {request_id})", type=SERVER, code="internal_error")


_DB_UNAVAILABLE = frozenset({"OperationalError", "InterfaceError"})
"""DB-API's errors of the database's operation (refused or lost connection, locked, cannot be
opened), as every driver and SQLAlchemy name them: the store is unavailable, not wrong."""


def _unreachable(exc: BaseException) -> bool:
    """Whether a store error comes from a database that cannot be reached or used now (its cause
    chain holds a DB-API operational/interface error, a pool timeout or an OS-level error)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        kind = type(cause)
        if isinstance(cause, OSError) or any(k.__name__ in _DB_UNAVAILABLE for k in kind.__mro__):
            return True
        if kind.__name__ == "TimeoutError" and kind.__module__.startswith("sqlalchemy"):
            return True  # no connection free in the pool in time
        cause = cause.__cause__ or cause.__context__
    return False


def _all_failed(exc: AllAttemptsFailedError, request_id: str) -> HTTPError:
    """Every attempt failed: their common answer when they agree (all rate-limited: 429), else 502."""
    answers = [from_exception(e, request_id) for e in exc.exceptions]
    statuses = {a.status for a in answers}
    if len(statuses) == 1 and answers:
        first = answers[0]
        return HTTPError(first.status, str(exc), type=first.type, code=first.code, headers=first.headers)
    return HTTPError(502, str(exc), type=SERVER, code="upstream_error")
