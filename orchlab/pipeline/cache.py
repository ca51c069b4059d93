"""The response cache: a pass that answers a request it has answered before, for $0.

The key is the SHA-256 of the canonical JSON (sorted keys, no whitespace) of the fully resolved
request: the provider entry (name, kind, API base), the model, every generation parameter
(``extra`` ones such as ``response_format`` included; ``timeout_s`` left out: it never changes
an answer), every message as sent (a thread's history and a registered prompt already in it),
the tools and tool choice, and `CACHE_VERSION`. Two roles bound to the same target share
entries; a changed parameter is another key.

When (first that applies): ``ORCH_CACHE=off`` or YAML ``cache: {enabled: false}`` -> never; the
call's ``cache=`` (``auto`` | ``force`` | ``off``; the gateway's ``x-orchlab-cache`` header) ->
the role's ``cache:`` -> ``auto``. ``auto`` caches deterministic requests only (temperature 0, or
a fixed seed); ``force`` caches any request. `compare`, `evaluate` and ``benchmarks/`` pass
``off`` unless asked, so a measurement is never a replay.

A hit is the stored answer with nothing sent: ``cost_usd`` 0, no tokens used, ``cache="hit"``
on the response and its attempt (the trail, the trace, the usage table's ``cache_hits``), and
the note says what the first call cost. A streamed hit replays the answer as a stream: the
deltas the stream that stored it had (an answer stored by a plain call, or by an orchlab that
kept no deltas, is one delta), and the stream's first chunk says ``hit`` or ``miss``. Only
answers are stored (``cache="miss"``): an error, a cancelled call or a cut-off stream never is.

Where: SQLite, ``.orchlab/cache.db`` beside the thread store by default (YAML ``cache.url:
sqlite:///PATH``), or Redis (``cache.url: redis://HOST:PORT/DB``, ``pip install redis``) for a
team. Entries live ``ttl_s`` (7 days) and at most ``max_entries`` (10,000) are kept, the oldest
dropped first. A cache that fails (a locked file, Redis down) warns once and the call is sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchlab import logs
from orchlab.errors import ConfigValidationError, InvalidRequestError, OrchlabWarning
from orchlab.pipeline.passes import SyncPass
from orchlab.tools.model import ToolCall
from orchlab.types import LLMResponse, Usage

if TYPE_CHECKING:
    from orchlab.calls import CallContext
    from orchlab.config.schema import CacheConfig
    from orchlab.pipeline.inflight import InFlight
    from orchlab.resolution import ResolvedLLMConfig
    from orchlab.types import Message, ModelRequest

CACHE_VERSION = 1
ENV = "ORCH_CACHE"
CACHE_FILE = "cache.db"
MODES = ("auto", "force", "off")
_UNKEYED_PARAMS = frozenset({"timeout_s"})
CACHE_PARAM = "_orchlab_cache"
"""Where `compare`'s and `evaluate`'s ``cache=`` rides along their call params (taken out before
each call)."""


# --- the key ------------------------------------------------------------------------------------


def canonical_request(resolved: ResolvedLLMConfig, request: ModelRequest) -> dict[str, Any]:
    """Everything that decides the answer, as plain JSON values."""
    params = {k: v for k, v in request.params.as_dict().items() if k not in _UNKEYED_PARAMS}
    return {
        "version": CACHE_VERSION,
        "provider": resolved.provider,
        "kind": resolved.kind,
        "api_base": resolved.api_base,
        "model": request.model,
        "params": params,
        "messages": [_message(m) for m in request.messages],
        "tools": [t.to_openai() for t in request.tools],
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": request.parallel_tool_calls,
        **({"json_answer": True} if request.json_answer else {}),  # the keys made before it stay
    }


def cache_key(resolved: ResolvedLLMConfig, request: ModelRequest) -> str:
    """SHA-256 (hex) of the canonical JSON of the request: the same in every process."""
    text = json.dumps(
        canonical_request(resolved, request),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_plain,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [c.to_openai() for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.is_error:
        out["is_error"] = True
    return out


def _plain(value: object) -> object:
    """A parameter JSON cannot encode (a pydantic model, a set): its plain form."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def deterministic(request: ModelRequest) -> bool:
    """Temperature 0 or a fixed seed: the requests ``auto`` caches."""
    params = request.params
    return params.temperature == 0 or params.seed is not None


def check_mode(value: object, where: str = "cache") -> str | None:
    """``auto`` | ``force`` | ``off`` (True: force, False: off, None: not given)."""
    if value is None:
        return None
    if value is True:
        return "force"
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    raise InvalidRequestError(
        f"{where}={value!r}: expected one of {', '.join(MODES)} (or True / False)", parameter=where
    )


# --- where entries live -------------------------------------------------------------------------


class Backend(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class SQLiteBackend:
    """One SQLite file (WAL: several processes may share it); TTL and entry bound enforced here."""

    def __init__(self, path: Path, *, ttl_s: float, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.ttl_s, self.max_entries = path, ttl_s, max_entries
        self._lock = threading.Lock()
        import sqlite3  # here, not at the top: a client whose calls never reach the cache never loads it

        from orchlab.sqlite_wal import use_wal

        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        use_wal(self._db.cursor(), timeout_s=5.0)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, stored REAL NOT NULL, expires REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS entries_stored ON entries (stored)")

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row[1] <= time.time():
            with self._lock:
                self._db.execute("DELETE FROM entries WHERE key = ? AND expires <= ?", (key, time.time()))
            return None
        return str(row[0])

    def put(self, key: str, value: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries (key, value, stored, expires) VALUES (?, ?, ?, ?)",
                (key, value, now, now + self.ttl_s),
            )
            self._db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
            (count,) = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()
            if count > self.max_entries:
                self._db.execute(
                    "DELETE FROM entries WHERE key IN (SELECT key FROM entries ORDER BY stored LIMIT ?)",
                    (count - self.max_entries,),
                )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisBackend:
    """A Redis database shared by a team: each entry a key with its TTL, an index (a sorted set
    by time stored) keeps at most ``max_entries``."""

    def __init__(self, url: str, *, ttl_s: float, max_entries: int, prefix: str = "orchlab:cache:") -> None:
        try:
            import redis
        except ImportError as exc:
            from orchlab.errors import MissingDependencyError

            raise MissingDependencyError(
                "cache.url names Redis, which needs the redis package: pip install 'orchlab[redis]'",
                provider="cache",
                kind="cache",
                module="redis",
                extra="redis",
            ) from exc
        self.ttl_s, self.max_entries, self.prefix = ttl_s, max_entries, prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._index = prefix + "index"

    def get(self, key: str) -> str | None:
        value: Any = self._redis.get(self.prefix + key)
        return None if value is None else bytes(value).decode("utf-8")

    def put(self, key: str, value: str) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self.prefix + key, value.encode("utf-8"), px=max(int(self.ttl_s * 1000), 1))
        pipe.zadd(self._index, {key: time.time()})
        pipe.zremrangebyscore(self._index, "-inf", time.time() - self.ttl_s)
        pipe.zcard(self._index)
        count = int(pipe.execute()[-1])
        if count > self.max_entries:
            dropped: Any = self._redis.zpopmin(self._index, count - self.max_entries)
            names = [self.prefix + bytes(k).decode("utf-8") for k, _ in dropped]
            if names:
                self._redis.delete(*names)

    def close(self) -> None:
        self._redis.close()


def cache_location(config: CacheConfig, store_url: Callable[[], str], base_dir: Path | None) -> str:
    """The cache's URL: ``cache.url`` (a relative SQLite path is relative to the YAML file), else
    ``cache.db`` beside the SQLite thread store (``store_url()``), else ``.orchlab/cache.db`` in
    the working directory."""
    url = (config.url or "").strip()
    if url:
        if url.startswith(("redis://", "rediss://", "unix://")):
            return url
        if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            path = Path(url[len("sqlite:///") :]).expanduser()
            return f"sqlite:///{(path if path.is_absolute() else (base_dir or Path.cwd()) / path).resolve()}"
        raise ConfigValidationError(
            f"cache.url: {url.split('@')[-1]!r} is not a cache orchlab supports; use sqlite:///PATH "
            "or redis://HOST:PORT/DB",
            problems=[("cache.url", "expected sqlite:///PATH or redis://...")],
        )
    store = store_url()
    folder = Path(store[len("sqlite:///") :]).parent if store.startswith("sqlite:///") else None
    return f"sqlite:///{((folder or Path.cwd() / '.orchlab') / CACHE_FILE).resolve()}"


def open_backend(url: str, *, ttl_s: float, max_entries: int) -> Backend:
    if url.startswith("sqlite:///"):
        return SQLiteBackend(Path(url[len("sqlite:///") :]), ttl_s=ttl_s, max_entries=max_entries)
    return RedisBackend(url, ttl_s=ttl_s, max_entries=max_entries)


# --- stored answers -----------------------------------------------------------------------------


def encode(response: LLMResponse, pieces: Sequence[str] | None = None) -> str:
    """The entry for ``response``; ``pieces``: a stream's text deltas, kept (as their lengths,
    ``cuts``) when they make up the answer, so a streamed hit replays the same chunks (an entry
    without them: one chunk)."""
    u = response.usage
    cuts = [len(p) for p in pieces or () if p]
    return json.dumps(
        {
            "content": response.content,
            **({"cuts": cuts} if len(cuts) > 1 and "".join(pieces or ()) == response.content else {}),
            "model": response.model,
            "finish_reason": response.finish_reason,
            "usage": [u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens],
            "cost_usd": response.cost_usd,
            "logprobs": response.logprobs,
            "tool_calls": [
                {
                    "id": c.id,
                    "name": c.name,
                    "arguments": dict(c.arguments),
                    "raw_arguments": c.raw_arguments,
                    "signature": c.signature,
                }
                for c in response.tool_calls
            ],
            "stored_at": time.time(),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode(text: str, flight: InFlight) -> LLMResponse:
    """The stored answer as a hit (its stream's deltas, when it has them, in ``flight.pieces``)."""
    data = json.loads(text)
    cuts = data.get("cuts")  # entries stored before the cuts were kept have none
    if isinstance(cuts, list) and all(type(n) is int and n > 0 for n in cuts):
        content: str = data["content"]
        if sum(cuts) == len(content):
            at = 0
            flight.pieces = []
            for n in cuts:
                flight.pieces.append(content[at : at + n])
                at += n
    first = data["cost_usd"]
    usage = Usage(*data["usage"])
    cost = "an unknown amount" if first is None else f"${first:.6f}"
    note = (
        f"cache hit: the stored answer of an earlier call ({usage.input_tokens} in / "
        f"{usage.output_tokens} out tokens, it cost {cost}); nothing was sent, $0"
    )
    return LLMResponse(
        data["content"],
        flight.provider,
        data["model"],
        role=flight.role,
        finish_reason=data["finish_reason"],
        cost_usd=0.0,
        cost_note=note,
        logprobs=data["logprobs"],
        tool_calls=tuple(ToolCall(**c) for c in data["tool_calls"]),
        cache="hit",
    )


# --- the pass -----------------------------------------------------------------------------------


class ResponseCache(SyncPass):
    """Answer a request from the cache, or arrange for its answer to be stored (`Dispatch`
    calls ``flight.store`` with the settled answer; an error never reaches it)."""

    def __init__(
        self,
        config: CacheConfig,
        *,
        location: Callable[[], str],
        role_mode: Callable[[str | None], str | None],
    ) -> None:
        self.config = config
        self._location = location
        self._role_mode = role_mode
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        self._broken = False
        self.enabled = config.enabled and os.environ.get(ENV, "").strip().lower() not in ("off", "0", "false")

    @property
    def backend(self) -> Backend:
        """The store, opened on first use."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = open_backend(
                        self._location(), ttl_s=self.config.ttl_s, max_entries=self.config.max_entries
                    )
        return self._backend

    def wanted(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> bool:
        mode = ctx.cache or self._role_mode(flight.role) or self._role_mode(ctx.role) or "auto"
        return mode == "force" or (mode == "auto" and deterministic(request))

    def admit_sync(self, ctx: CallContext, flight: InFlight, request: ModelRequest) -> LLMResponse | None:
        if not self.enabled or self._broken or not self.wanted(ctx, flight, request):
            return None
        key = cache_key(flight.resolved, request)
        try:
            stored = self.backend.get(key)
        except Exception as exc:
            self._failed(exc)
            return None
        if stored is not None:
            logs.decision("cache hit", role=flight.role, target=flight.resolved.target, entry=key[:16])
            return decode(stored, flight)
        logs.decision("cache miss", role=flight.role, target=flight.resolved.target, entry=key[:16])
        flight.store = lambda response, pieces: self._put(key, response, pieces)
        return None

    def _put(self, key: str, response: LLMResponse, pieces: Sequence[str] | None) -> None:
        try:
            self.backend.put(key, encode(response, pieces))
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self._broken:
            self._broken = True
            warnings.warn(
                f"orchlab: the response cache failed ({type(exc).__name__}: {exc}); calls are sent "
                "without it until the client is built again",
                OrchlabWarning,
                stacklevel=3,
            )

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
