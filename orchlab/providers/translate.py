"""What an SDK or its HTTP library raised, as an orchlab provider error, read by behaviour.

The SDKs change their transports (the openai and anthropic SDKs moved from httpx to their own fork,
``httpx2``; google-genai sends through aiohttp or httpx): matching their exception classes one by
one lets the next change leak a raw exception. `translate` reads what an exception *is* instead,
from the class names of its type hierarchy and of the exceptions chained behind it:

=========================================================  ==================================
the exception (or one chained behind it)                   orchlab error
=========================================================  ==================================
carries an HTTP status >= 400 (``status_code``,            `error_for_status` (401 → auth,
``status``, ``code`` or ``response.status_code``)          429 → rate limit, 5xx → unavailable)
a ``...Timeout...`` class, or `TimeoutError`               `ProviderTimeoutError`
``...Connect...``, ``...Disconnect...``, a network,        `ProviderConnectionError`
transport, protocol, payload, read or write error, or
`OSError`
a `ValueError`, or a ``...Validation...``/``...Decod...``/  `ProviderResponseError`
``...JSON...``/``...Parse...`` class
anything else                                              `ProviderError` naming the type
=========================================================  ==================================

`scrubbed` builds what an orchlab error chains instead of the SDK exception: the SDK's exception
holds the request, whose headers hold the API key (and a server may echo the key in its body), so
only a masked summary of it travels with the orchlab error.
"""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from orchlab.errors import (
    OrchlabError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ScrubbedCause,
)
from orchlab.providers.http_errors import error_for_status

MASK = "**********"
BODY_EXCERPT_CHARS = 2000

_TIMEOUT_MARKS = ("Timeout",)
_CONNECTION_MARKS = (
    "Connect",
    "Disconnect",
    "NetworkError",
    "TransportError",
    "ProtocolError",
    "PayloadError",
    "ReadError",
    "WriteError",
    "CloseError",
    "ProxyError",
    "IncompleteRead",
)
_CONNECT_PHASE = ("ConnectError", "ConnectorError", "ConnectionRefusedError", "gaierror")
_MALFORMED_MARKS = ("Validation", "Decod", "JSON", "Json", "Parse")
# Headers that carry credentials: never copied onto an orchlab error, whatever their value.
_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
    }
)


def translate(
    exc: BaseException,
    *,
    provider: str,
    model: str | None,
    api_base: str | None,
    timeout_s: float | None,
) -> ProviderError:
    """The orchlab error for ``exc`` (an orchlab `ProviderError` comes back as it is)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return translate(
            exc.exceptions[0], provider=provider, model=model, api_base=api_base, timeout_s=timeout_s
        )
    status = status_of(exc)
    if status is not None:
        return error_for_status(
            status,
            message_of(exc),
            provider=provider,
            model=model,
            headers=headers_of(exc),
            error_code=error_code_of(exc),
        )
    chain = list(_chain(exc))
    if any(_is_timeout(e) for e in chain):
        limit = f"{timeout_s:g}s (timeout_s)" if timeout_s else "the time limit"
        error = ProviderTimeoutError(
            f"no answer within {limit} from {api_base}", provider=provider, model=model
        )
        error.limit_s = timeout_s
        return error
    if any(_is_connection(e) for e in chain):
        detail = _detail(chain)
        if any(_marked(e, _CONNECT_PHASE) or isinstance(e, socket.gaierror) for e in chain):
            message = f"cannot connect to {api_base}: {detail}"
        else:
            message = f"the connection to {api_base} broke: {detail}"
        return ProviderConnectionError(message, provider=provider, model=model)
    if isinstance(exc, ValueError) or _marked(exc, _MALFORMED_MARKS):
        return ProviderResponseError(
            f"malformed response from {api_base}: {_describe(exc)}", provider=provider, model=model
        )
    return ProviderError(f"unexpected {_describe(exc)}", provider=provider, model=model)


# --- reading an exception by behaviour --------------------------------------------------------


def status_of(exc: BaseException) -> int | None:
    """The HTTP error status an exception carries (>= 400), else None."""
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None) if response is not None else None
    if isinstance(value, int) and 400 <= value <= 599:
        return value
    return None


def headers_of(exc: BaseException) -> Mapping[str, str] | None:
    """The failed response's headers, when the exception keeps its response."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        return {str(k): str(v) for k, v in headers.items()}
    except (AttributeError, TypeError):
        return None


def body_of(exc: BaseException) -> Any:
    """The parsed error body (``exc.body``), else the raw ``response.text`` when it was read."""
    body = getattr(exc, "body", None)
    if body is not None:
        return body
    response = getattr(exc, "response", None)
    try:
        return response.text if response is not None else None
    except Exception:  # a streamed response that was not read: no body to show
        return None


def message_of(exc: BaseException) -> str:
    """The provider's own message: ``error.message`` in the body, else the exception's message."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
    return str(getattr(exc, "message", None) or exc)


def error_code_of(exc: BaseException) -> str | None:
    """The body's machine-readable ``code`` and ``type`` (``context_length_exceeded``, ...)."""
    body = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    if not isinstance(inner, Mapping):
        return None
    parts = [str(inner[k]) for k in ("code", "type", "status") if inner.get(k)]
    return " ".join(parts) or None


def _chain(exc: BaseException, limit: int = 8) -> Iterator[BaseException]:
    """``exc`` and what is chained behind it (``__cause__``, else ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < limit:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> Iterable[str]:
    return (cls.__name__ for cls in type(exc).__mro__)


def _marked(exc: BaseException, marks: tuple[str, ...]) -> bool:
    return any(mark in name for name in _names(exc) for mark in marks)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or _marked(exc, _TIMEOUT_MARKS)


def _is_connection(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or _marked(exc, _CONNECTION_MARKS)


def _describe(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__.split(".")[0]
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    text = str(exc)
    return f"{name}: {text}" if text else name


def _detail(chain: list[BaseException]) -> str:
    """The innermost exception that says something (the SDK's wrapper usually says little)."""
    for exc in reversed(chain):
        if str(exc):
            return _describe(exc)
    return _describe(chain[0])


# --- what an orchlab error may carry -------------------------------------------------------------


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def scrubbed(exc: BaseException, secrets: Iterable[str]) -> ScrubbedCause:
    """A summary of ``exc`` that holds no secret: its type, message, HTTP status, response headers
    (names lower-cased, credential headers left out), a body excerpt, the chain behind it and
    where it was raised, every string masked. It holds no reference to ``exc``, its request or
    its response."""
    secrets = tuple(s for s in secrets if s)
    headers = {
        k.lower(): mask(v, secrets)
        for k, v in (headers_of(exc) or {}).items()
        if k.lower() not in _SECRET_HEADERS
    }
    body = body_of(exc)
    if body is not None and not isinstance(body, str):
        try:
            body = json.dumps(body, default=str)
        except (TypeError, ValueError):
            body = repr(body)
    excerpt = mask(body[:BODY_EXCERPT_CHARS], secrets) if isinstance(body, str) else None
    chain = [mask(_describe(e), secrets) for e in _chain(exc)]
    where = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ is not None else ""
    return ScrubbedCause(
        chain[0],
        type_name=_describe(exc).split(":", 1)[0],
        status_code=status_of(exc),
        headers=headers,
        body=excerpt,
        chain=chain[1:],
        origin=mask(where, secrets),
    )


def is_orchlab(exc: BaseException) -> bool:
    return isinstance(exc, OrchlabError | ScrubbedCause)
