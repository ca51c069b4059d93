"""``x-orchlab-cache``: a request's choice for the response cache (``auto`` | ``force`` | ``off``),
and on an answer whether the cache served it (``hit``) or stored it (``miss``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchlab.pipeline.cache import MODES
from orchlab.serve.errors import HTTPError

if TYPE_CHECKING:
    from starlette.requests import Request

    from orchlab.types import LLMResponse, ResponseStream

HEADER = "x-orchlab-cache"


def requested(request: Request) -> str | None:
    """The request's ``x-orchlab-cache`` (None: the role's setting); another value is a 400."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    mode = value.strip().lower()
    if mode not in MODES:
        raise HTTPError(400, f"{HEADER}: {value[:40]!r} is not one of {', '.join(MODES)}", param=HEADER)
    return mode


def streamed(stream: ResponseStream) -> dict[str, str]:
    """``x-orchlab-cache: hit|miss`` for a stream, once its first chunk has come (the cache is
    looked in before anything is sent)."""
    return {} if stream.cache is None else {HEADER: stream.cache}


def answered(response: LLMResponse | None) -> dict[str, str]:
    """``x-orchlab-cache: hit|miss`` when the cache was asked for this answer."""
    if response is None or response.cache is None:
        return {}
    return {HEADER: response.cache}
