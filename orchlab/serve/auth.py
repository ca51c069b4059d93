"""Who may call the gateway, and what: API keys (`orchlab.store.keys`) checked by a pure-ASGI
middleware in front of every route, and the allow-list checked where the ``model`` resolves.

``gateway.auth``:

- ``keys``: every request but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer
  ok_<prefix>_<secret>``. A missing, unknown, wrong, revoked or expired key, or a disabled user,
  is a 401 that does not say which.
- ``none``: open (``orchlab serve`` allows it on a loopback address only).
- unset: ``orchlab serve`` picks ``keys`` unless it binds a loopback address; an app made with
  `create_app` in code requires keys for any request that reaches it on a non-loopback address.

``/admin/*`` (`orchlab.serve.admin_routes`) always needs an admin key, and an admin key calls no
model (403). A user key calls what its allow-list names (roles, aliases, ``provider:model``,
URN namespaces such as ``urn:orchlab:*``; a URN's roles and candidates must be allowed too):
anything else is a 403; ``GET /v1/models`` and ``GET /config`` list only what it may call.
Rate limits: `orchlab.serve.rate_limits`; budgets: `orchlab.serve.key_budgets`. The key itself
is never logged, stored (only its HMAC) or echoed.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from orchlab.serve.errors import HTTPError
from orchlab.serve.gateway import error_response
from orchlab.serve.key_budgets import Caller, KeyBudget, KeyUsage, Ledger
from orchlab.serve.rate_limits import Counted, RateLimits
from orchlab.strategies.urn import is_urn, parse_urn

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from orchlab.serve.gateway import Gateway
    from orchlab.serve.targets import Targets
    from orchlab.store.keys import ApiKey, Keys
    from orchlab.store.store import Store

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("orchlab.serve")
Mode = Literal["keys", "none", "auto"]
PUBLIC = frozenset({"/healthz", "/readyz"})
ADMIN = "/admin"
CALLER: ContextVar[Caller | None] = ContextVar("orchlab_gateway_caller", default=None)
"""The key of the request being served (set by `KeyAuth` for the request's task and the tasks
it starts: a stream's producer, a strategy's attempts)."""
KEY_CACHE_SIZE = 10_000
COUNTED_WHILE_ROUTED = frozenset({"/v1/chat/completions", "/chat"})
"""Routes whose requests are counted against Redis rate limits while the route works (reading
the body, resolving the model, reserving the budget), not before: the round trip overlaps that
work. Their only side effect, the model call, waits for the count (`KeyBudget`), and so does the
answer's first byte: a request the count refuses is a 429 whatever the route made of it."""
INVALID_KEY = "a valid API key is required: send the header Authorization: Bearer ok_…"


def current_caller() -> Caller | None:
    """The key the current request came with (None: auth is off for it)."""
    return CALLER.get()


def current_user() -> str | None:
    """The user name of the current request's key (None: no key); for per-user data."""
    found = CALLER.get()
    return None if found is None else found.key.user


class Guard:
    """One worker's authentication: its mode, the key store (opened when first needed), the rate
    limits, and the budget pass and usage observer installed on the client."""

    def __init__(self, gw: Gateway, mode: Mode) -> None:
        self.gw = gw
        self.mode = mode
        self._keys: Keys | None = None
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}
        self.rates = RateLimits(gw.settings.rate_limit_store)
        self.ledger = Ledger(self.store, gw.keep)
        self._budget = KeyBudget(self.ledger, CALLER.get)
        self._usage = KeyUsage(self.ledger, CALLER.get, self.rates)

    @property
    def keys(self) -> Keys:
        if self._keys is None:
            from orchlab.store.api import store_of
            from orchlab.store.keys import Keys

            self._keys = Keys(store_of(self.gw.client))
        return self._keys

    def store(self) -> Store:
        return self.keys.store

    async def start(self) -> None:
        """Open the key store now when keys are required (a bad store fails the start-up)."""
        client = self.gw.client
        passes = list(client.dispatch.passes)
        after = next((i + 1 for i, p in enumerate(passes) if type(p).__name__ == "BudgetAdmission"), 0)
        passes.insert(after, self._budget)
        client.dispatch.passes = tuple(passes)
        client.observers.add(self._usage)
        from orchlab.redaction import install_log_masking, remember_pattern
        from orchlab.store.keys import KEY_RE

        remember_pattern(KEY_RE)  # a key a caller puts in a URL is masked in the access log
        install_log_masking()
        if self.mode == "keys":
            await asyncio.to_thread(lambda: self.keys)

    async def aclose(self) -> None:
        client = self.gw.client
        client.dispatch.passes = tuple(p for p in client.dispatch.passes if p is not self._budget)
        client.observers.remove(self._usage)
        await self.rates.aclose()
        await self.ledger.aclose()  # the last settlements are written

    def required(self, scope: Scope) -> bool:
        """Whether this request needs a key (``auto``: when it reached a non-loopback address)."""
        if self.mode != "auto":
            return self.mode == "keys"
        server = scope.get("server")
        return server is not None and server[1] is not None and not is_loopback(str(server[0]))

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None. A key found valid is remembered for
        ``gateway.key_cache_s`` (by a SHA-256 of it, never the key): a key revoked elsewhere
        stops working within that time (at once on the worker that revoked it)."""
        ttl = self.gw.settings.key_cache_s
        digest = hashlib.sha256(presented.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < ttl and hit[0].active():
            return hit[0]
        if self._keys is None:
            await asyncio.to_thread(lambda: self.keys)
        key = await asyncio.to_thread(self.keys.verify, presented)
        if key is None:
            self._cache.pop(digest, None)
        elif ttl > 0:
            if len(self._cache) >= KEY_CACHE_SIZE:
                self._cache.clear()
            self._cache[digest] = (key, now)
        return key

    async def count_while_routed(self, key: ApiKey, scope: Scope) -> Counted:
        """Send the request's count to the rate limits (Redis); its answer is read later (a 503
        when the rate-limit store failed)."""
        answer = await self.rates.send(key)
        return Counted(answer, lambda exc: _unavailable(exc, _request_id(scope)))

    def forget_keys(self) -> None:
        """Drop the remembered keys (a key was revoked here)."""
        self._cache.clear()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _request_id(scope: Scope) -> str:
    from starlette.requests import Request

    from orchlab.serve.gateway import Exchange

    return Exchange(Request(scope), "").request_id


class KeyAuth:
    """The middleware: authenticate, count the request against the key's rate limits, and make
    the key the request's `current_caller`; add the ``x-ratelimit-*`` headers to the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC:
            await self.app(scope, receive, send)
            return
        guard: Guard | None = getattr(scope["app"].state, "guard", None)
        path: str = scope["path"]
        admin = path == ADMIN or path.startswith(ADMIN + "/")
        if guard is None or (not admin and not guard.required(scope)):
            await self.app(scope, receive, send)
            return
        try:
            token = _bearer(scope)
            key = await guard.authenticate(token) if token else None
            if key is None:
                raise HTTPError(
                    401, INVALID_KEY, code="invalid_api_key", headers={"www-authenticate": "Bearer"}
                )
            if admin and key.kind != "admin":
                raise HTTPError(403, "this key cannot manage keys: use an admin key", code="forbidden")
            if not admin and key.kind == "admin":
                raise HTTPError(403, "an admin key manages keys and calls no model", code="forbidden")
            later = bool(
                not admin and (key.rpm or key.tpm) and guard.rates.remote and path in COUNTED_WHILE_ROUTED
            )
            extra = {} if admin or later else await guard.rates.admit(key)
            admitted = await guard.count_while_routed(key, scope) if later else None
        except Exception as exc:
            await self._refuse(exc, scope, receive, send)
            return
        caller = Caller(key, admitted=admitted)
        if admitted is not None:
            send = _when_admitted(send, admitted, scope, receive)
        elif extra:
            send = _with_headers(send, extra)
        token_ = CALLER.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(token_)

    @staticmethod
    async def _refuse(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        answer = exc if isinstance(exc, HTTPError) else _unavailable(exc, request_id)
        await error_response(answer, {"x-request-id": request_id})(scope, receive, send)


def _unavailable(exc: Exception, request_id: str) -> HTTPError:
    """The key store or the rate-limit store failed: no key can be checked."""
    log.error("request %s: keys could not be checked: %s", request_id, type(exc).__name__)
    return HTTPError(
        503,
        f"the gateway cannot check keys right now (request {request_id})",
        type="server_error",
        code="auth_unavailable",
    )


def _when_admitted(send: Send, admitted: Counted, scope: Scope, receive: Receive) -> Send:
    """The answer's start waits for the rate limits' count: with its headers, or replaced by the
    refusal (the route's own messages are then dropped)."""
    refused = False

    async def sending(message: Message) -> None:
        nonlocal refused
        if refused:
            return
        if message["type"] == "http.response.start":
            got = await admitted.result()
            if isinstance(got, HTTPError):
                refused = True
                await error_response(got, {"x-request-id": _request_id(scope)})(scope, receive, send)
                return
            message["headers"] = [*message.get("headers", ()), *_raw(got)]
        await send(message)

    return sending


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    raw = _raw(headers)

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *raw]
        await send(message)

    return sending


# --- authorization: what the key may call ----------------------------------------------------


def authorize(model: str, target: str, targets: Targets) -> None:
    """Raise `HTTPError` 403 unless the current key may call ``model`` (resolved to ``target``)."""
    found = CALLER.get()
    if found is None or may_call(found.key, model, target, targets):
        return
    allowed = ", ".join(found.key.allow) or "nothing"
    raise HTTPError(
        403,
        f"this key may not call the model {model!r} (it may call: {allowed})",
        code="model_not_allowed",
        param="model",
    )


def may_call(key: ApiKey, model: str, target: str, targets: Targets) -> bool:
    if model in targets.aliases and key.allows(model):
        return True  # the config author's alias is allowed as a whole
    if not is_urn(target):
        return key.allows(target)
    if not key.allows(target):
        return False
    urn = parse_urn(target)
    refs = ([urn.role] if urn.role is not None else []) + list(urn.candidates)
    return all(key.allows(ref) for ref in refs)


def visible_models(ids: list[str], targets: Targets) -> list[str]:
    """The model ids the current key may call (all of them when auth is off)."""
    found = CALLER.get()
    if found is None:
        return ids
    key = found.key
    return [
        i
        for i in ids
        if key.allows(i) or (i in targets.aliases and may_call(key, i, targets.aliases[i], targets))
    ]


def visible_config(out: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """``GET /config`` with only what the current key may call."""
    found = CALLER.get()
    if found is None:
        return out
    key = found.key
    roles = [r for r in out["roles"] if key.allows(r["name"])]
    reachable = {r["target"] for r in roles}
    aliases = {a: t for a, t in out["aliases"].items() if a in visible_models([a], targets)}
    return {
        **out,
        "roles": roles,
        "aliases": aliases,
        "models": [m for m in out["models"] if m["target"] in reachable or key.allows(m["target"])],
        "logics": [u for u in out["logics"] if key.allows(u)],
    }
