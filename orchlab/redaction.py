"""Keep API keys out of log output: every key orchlab knows is masked in every log record.

Which keys: each `orchlab.auth.Secret` registers its value when it is made (a key resolved from
the environment or a key file), and building a client registers every ``ORCH_AUTH_*``
environment value and the keys of the providers it configures (`mask_keys_in_logs`).
Values shorter than `MIN_LENGTH` are not masked: they would mask ordinary words.

Where: a wrapper around `logging`'s record factory (`install_log_masking`, run by
`mask_keys_in_logs` when a client is built; idempotent). It masks each record once, when it is
created, whichever logger creates it: the message with its arguments, the formatted traceback
and the stack.

Why not a `logging.Filter` on the SDK loggers (``openai``, ``httpx``, ``httpcore``, ...): a
logger's filters run only for records logged on that very logger, not for records propagated
from its children (``httpcore.http11``, ``openai._base_client``: where the SDKs actually log);
the SDKs create their loggers when first imported, after the client is built; and a filter on a
handler would reach into the user's own logging setup. The record factory is logging's
documented hook for this; the wrapper keeps any factory installed before it, and no exception
hook is installed.

For example:

    >>> remember("sk-live-0123456789")
    >>> mask("key=sk-live-0123456789")
    'key=**********'
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from orchlab.auth import Secret

MASK = "**********"
MIN_LENGTH = 8

_lock = threading.Lock()
_known: tuple[str, ...] = ()
"""The values to mask (each key, and its percent-encoded form when that differs), longest first."""
_patterns: tuple[re.Pattern[str], ...] = ()


def remember(value: str) -> None:
    """Mask ``value`` from now on, in every log record."""
    global _known
    value = value.strip()
    if len(value) < MIN_LENGTH or value in _known:
        return
    with _lock:
        forms = {*_known, value, quote(value, safe="")}
        _known = tuple(sorted(forms, key=len, reverse=True))


def remember_pattern(pattern: re.Pattern[str]) -> None:
    """Mask whatever matches ``pattern`` from now on: keys of a known shape that orchlab does not
    hold itself (the gateway's ``ok_<prefix>_<secret>`` keys, `orchlab.serve.auth`)."""
    global _patterns
    with _lock:
        if pattern not in _patterns:
            _patterns = (*_patterns, pattern)


def mask(text: str) -> str:
    """``text`` with every known key replaced by ``**********``."""
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _patterns:
        text = pattern.sub(MASK, text)
    return text


def known() -> tuple[str, ...]:
    """The values masked now (each key, and its percent-encoded form), longest first."""
    return _known


def contains_secret(text: str) -> bool:
    return any(value in text for value in _known) or any(p.search(text) for p in _patterns)


def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        return  # a broken format string: logging reports it when the record is emitted
    if contains_secret(message):
        if isinstance(record.args, tuple) and not contains_secret(str(record.msg)):
            # mask the arguments, keeping their shape (a formatter may read them: uvicorn's access log)
            record.args = tuple(mask(a) if isinstance(a, str) else a for a in record.args)
        if contains_secret(record.getMessage()):
            record.msg, record.args = mask(message), None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if contains_secret(text):
            # handlers format exc_text when exc_info is gone; the exception itself holds the key
            record.exc_info, record.exc_text = None, mask(text)
    elif record.exc_text and contains_secret(record.exc_text):
        record.exc_text = mask(record.exc_text)
    if record.stack_info and contains_secret(record.stack_info):
        record.stack_info = mask(record.stack_info)


def _masking(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if _known or _patterns:
            _mask_record(record)
        return record

    make_record._orchlab_masking = True  # type: ignore[attr-defined]
    return make_record


def mask_keys_in_logs(keys: Iterable[Secret]) -> None:
    """What building a client does: remember every ``ORCH_AUTH_*`` environment value and the
    client's configured ``keys`` (`Resolver.configured_keys`, read before any provider is used),
    then install the masking."""
    for name, value in os.environ.items():
        if name.startswith("ORCH_AUTH_") and value:
            remember(value)
    for key in keys:
        remember(key.reveal())
    install_log_masking()


def install_log_masking() -> None:
    """Mask known keys in every log record from now on (a no-op when already installed)."""
    with _lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, "_orchlab_masking", False):
            logging.setLogRecordFactory(_masking(current))
