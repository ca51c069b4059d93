"""Turning an HTTP failure (status, headers, body text) into orchlab's provider error tree.

Shared by the adapters whose SDKs expose the status code and headers of a failed request.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from orchlab.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
)

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "maximum context",
    "prompt is too long",
    "too many tokens",
    "exceeds the context",
    "input token count",
    "exceed context window",  # llama-cpp-python: "Requested tokens (N) exceed context window of M"
    "exceed_context_size",  # llama.cpp's llama-server error type
    "available context size",  # llama-server: "the request exceeds the available context size"
)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(parsed.timestamp() - time.time(), 0.0)


def looks_like_context_overflow(message: str) -> bool:
    text = message.lower()
    return any(marker in text for marker in _CONTEXT_MARKERS)


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    model: str | None,
    headers: Mapping[str, str] | None = None,
    error_code: str | None = None,
) -> ProviderError:
    """The orchlab error for an HTTP status (429 carries ``retry_after`` from the headers).

    ``error_code`` is the body's machine-readable code/type (e.g. ``context_length_exceeded``), used
    with the message to recognise a prompt that is too long.
    """
    retry_after = retry_after_seconds(headers)
    cls: type[ProviderError] = ProviderError
    if status in (401, 403):
        cls = AuthenticationError
        if status == 401:
            message += " (check the API key for this provider's auth profile)"
    elif status == 429:
        cls = RateLimitError
    elif status in (400, 413, 422) and looks_like_context_overflow(f"{message} {error_code or ''}"):
        cls = ContextLengthExceededError
    elif status >= 500:
        cls = ProviderUnavailableError
    retryable = True if status in (408, 409) else None
    return cls(
        message,
        provider=provider,
        model=model,
        status_code=status,
        retry_after=retry_after,
        retryable=retryable,
    )
