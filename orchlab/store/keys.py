"""The gateway's users and API keys (``client.keys``, ``orchlab keys``, ``/admin/keys``).

A key reads ``ok_<prefix>_<secret>``. Only the prefix (to find the row) and an HMAC-SHA256 of the
secret, keyed with the server secret, are stored; a key is checked by recomputing that HMAC and
comparing in constant time. The plain key exists once: in the `NewKey` that `Keys.create`
returns (its repr masks it).

The server secret: ``ORCH_GATEWAY_SECRET`` when set, else the file ``gateway.secret`` beside a
SQLite store (made on first use, mode 0600; a file others may read is refused). A PostgreSQL store
is shared by several hosts, which must all hash alike: it needs ``ORCH_GATEWAY_SECRET``. Changing
the secret invalidates every key.

Two kinds of key: ``user`` keys call models (limited by their allow-list, rpm, tpm and budget);
``admin`` keys manage keys over HTTP and call no model.

For example:

    new = client.keys.create("ana", roles=["llm.inference", "urn:orchlab:*"], rpm=60, budget="5/day")
    print(new.key)                       # shown once
    client.keys.revoke(new.info.id)
"""

from __future__ import annotations

import builtins
import calendar
import fnmatch
import hashlib
import hmac
import math
import os
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchlab.errors import InvalidRequestError, StoreError
from orchlab.store.ids import is_ulid, new_ulid

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

    from orchlab.store.settings import StoreSettings
    from orchlab.store.store import Store

SECRET_ENV = "ORCH_GATEWAY_SECRET"
SECRET_FILE = "gateway.secret"
MIN_SECRET = 32
KEY_RE = re.compile(r"ok_([a-z0-9]{12})_([A-Za-z0-9]{40})")
_PREFIX_CHARS = string.ascii_lowercase + string.digits
_SECRET_CHARS = string.ascii_letters + string.digits
WINDOWS = ("hour", "day", "week", "month", "total")
Window = Literal["hour", "day", "week", "month", "total"]
Kind = Literal["user", "admin"]
EVERYTHING = ("*",)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the server secret -------------------------------------------------------------------------


def server_secret(settings: StoreSettings) -> bytes:
    """``ORCH_GATEWAY_SECRET``, else ``gateway.secret`` beside the SQLite store (made on first use)."""
    given = os.environ.get(SECRET_ENV, "")
    if given:
        if len(given) < MIN_SECRET:
            raise StoreError(f"{SECRET_ENV} must be at least {MIN_SECRET} characters long")
        return given.encode()
    path = settings.sqlite_path
    if path is None:
        raise StoreError(
            f"the store {settings.safe_url} is PostgreSQL: set {SECRET_ENV} (the same value on every "
            f"host of the gateway; e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return _secret_file(path.with_name(SECRET_FILE))


def _secret_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise StoreError(f"{path} may be read by other users: chmod 600 {path} (or set {SECRET_ENV} instead)")
    text = path.read_text(encoding="ascii").strip()
    if len(text) < MIN_SECRET:
        raise StoreError(f"{path} holds no server secret (it is shorter than {MIN_SECRET} characters)")
    return text.encode()


def digest(secret: bytes, key_secret: str) -> str:
    return hmac.new(secret, key_secret.encode(), hashlib.sha256).hexdigest()


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit over a calendar window in UTC (``5/day``; ``total``: the key's lifetime)."""

    usd: float
    window: Window = "total"

    @classmethod
    def parse(cls, text: str | float | Budget) -> Budget:
        """``"5/day"``, ``"0.10/month"``, ``"2"`` (total) or a number (total)."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, int | float) and not isinstance(text, bool):
            amount, window = str(text), "total"
        elif isinstance(text, str):
            amount, _, window = text.strip().lstrip("$").partition("/")
            window = window.strip().lower() or "total"
        else:
            raise InvalidRequestError(f"a budget is like '5/day', got {text!r}", parameter="budget")
        try:
            usd = float(amount)
        except ValueError:
            usd = math.nan
        if not math.isfinite(usd) or usd <= 0:
            raise InvalidRequestError(
                f"budget {text!r}: the amount must be a positive number of USD (e.g. 5/day)",
                parameter="budget",
            )
        if window not in WINDOWS:
            raise InvalidRequestError(
                f"budget {text!r}: the window is one of {', '.join(WINDOWS)}", parameter="budget"
            )
        return cls(usd, window)  # type: ignore[arg-type]

    def start(self, now: datetime) -> datetime | None:
        """The start of the window ``now`` is in (None: ``total``, no start)."""
        now = now.astimezone(UTC)
        if self.window == "hour":
            return now.replace(minute=0, second=0, microsecond=0)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.window == "day":
            return day
        if self.window == "week":
            return day - timedelta(days=day.weekday())
        if self.window == "month":
            return day.replace(day=1)
        return None

    def end(self, now: datetime) -> datetime | None:
        """When the window ``now`` is in ends (the budget is whole again)."""
        start = self.start(now)
        if start is None:
            return None
        if self.window == "hour":
            return start + timedelta(hours=1)
        if self.window == "day":
            return start + timedelta(days=1)
        if self.window == "week":
            return start + timedelta(days=7)
        return start + timedelta(days=calendar.monthrange(start.year, start.month)[1])

    def __str__(self) -> str:
        return f"${self.usd:g}/{self.window}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored (never its secret): who, what it may call, its limits."""

    id: str
    user_id: str
    user: str
    prefix: str
    kind: Kind
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    allow: tuple[str, ...] = EVERYTHING
    """Roles, aliases, ``provider:model`` targets and URN namespaces (``urn:orchlab:*``) it may call."""
    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None
    user_disabled: bool = False

    @property
    def shown(self) -> str:
        """How the key is named in lists: its prefix only."""
        return f"ok_{self.prefix}_…"

    def active(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return (
            self.revoked_at is None
            and not self.user_disabled
            and (self.expires_at is None or self.expires_at > now)
        )

    def allows(self, name: str) -> bool:
        """Whether the allow-list names ``name`` (a role, alias, target or URN)."""
        return allowed(self.allow, name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "prefix": self.prefix,
            "kind": self.kind,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "allow": list(self.allow),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget": None if self.budget is None else str(self.budget),
            "active": self.active(),
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: ``key`` is the plain key, shown this once (the store keeps a hash)."""

    key: str = field(repr=False)
    info: ApiKey

    def __repr__(self) -> str:
        return f"NewKey(key='ok_{self.info.prefix}_…', info={self.info!r})"


def allowed(patterns: Iterable[str], name: str) -> bool:
    """``name`` matches one of ``patterns`` (``*`` wildcards; ``urn:orchlab:race`` is in
    ``urn:orchlab:race:*``)."""
    for p in patterns:
        if p == name or fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name + ":", p.rstrip("*")):
            return True
    return False


def parse_allow(roles: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"llm.inference,urn:orchlab:*"`` or a list; None: everything served (``*``)."""
    if roles is None:
        return EVERYTHING
    items = roles.split(",") if isinstance(roles, str) else list(roles)
    out = tuple(dict.fromkeys(i.strip() for i in items if isinstance(i, str) and i.strip()))
    if not out or any(not isinstance(i, str) for i in items):
        raise InvalidRequestError(
            f"roles {roles!r}: name roles, aliases or URN namespaces, e.g. llm.inference,urn:orchlab:*",
            parameter="roles",
        )
    return out


def _positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequestError(f"{name} must be a whole number >= 1, got {value!r}", parameter=name)
    return value


# --- statements -----------------------------------------------------------------------------


def _key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    budget = None if m["budget_usd"] is None else Budget(m["budget_usd"], m["budget_window"] or "total")
    return ApiKey(
        id=m["id"],
        user_id=m["user_id"],
        user=m["user_name"],
        prefix=m["prefix"],
        kind=m["kind"],
        name=m["name"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        allow=tuple(m["allow"] or ()),
        rpm=m["rpm"],
        tpm=m["tpm"],
        budget=budget,
        user_disabled=bool(m["disabled"]),
    )


def _select_keys() -> Any:
    from sqlalchemy import select

    from orchlab.store.schema import api_keys, users

    return select(api_keys, users.c.name.label("user_name"), users.c.disabled.label("disabled")).join_from(
        api_keys, users, api_keys.c.user_id == users.c.id
    )


def _user_id(conn: Connection, name: str, email: str | None) -> str:
    """The user's id (made on first use)."""
    from sqlalchemy import select

    from orchlab.store.queries import _insert
    from orchlab.store.schema import users

    found = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
    if found is not None:
        return str(found)
    uid = new_ulid()
    row = {"id": uid, "name": name, "email": email, "created_at": utcnow(), "disabled": False}
    conn.execute(_insert(conn, users).values(**row).on_conflict_do_nothing())
    return str(conn.execute(select(users.c.id).where(users.c.name == name)).scalar_one())


def insert_key(conn: Connection, *, user: str, email: str | None, row: dict[str, Any]) -> ApiKey:
    from orchlab.store.schema import api_keys

    row = {**row, "user_id": _user_id(conn, user, email)}
    conn.execute(api_keys.insert().values(**row))
    return _key(conn.execute(_select_keys().where(api_keys.c.id == row["id"])).one())


_by_prefix: Any = None


def key_by_prefix(conn: Connection, prefix: str) -> tuple[ApiKey, str] | None:
    global _by_prefix
    if _by_prefix is None:  # built once (SQLAlchemy is imported on first use only)
        from sqlalchemy import bindparam

        from orchlab.store.schema import api_keys

        _by_prefix = _select_keys().where(api_keys.c.prefix == bindparam("prefix"))
    row = conn.execute(_by_prefix, {"prefix": prefix}).first()
    return None if row is None else (_key(row), row._mapping["hash"])


def list_keys(conn: Connection, user: str | None, include_revoked: bool) -> list[ApiKey]:
    from orchlab.store.schema import api_keys, users

    q = _select_keys().order_by(api_keys.c.created_at, api_keys.c.id)
    if user is not None:
        q = q.where(users.c.name == user)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    return [_key(r) for r in conn.execute(q)]


def revoke_key(conn: Connection, ref: str) -> ApiKey | None:
    from sqlalchemy import or_, update

    from orchlab.store.schema import api_keys

    prefix = _prefix_of(ref)
    where = or_(api_keys.c.id == ref, api_keys.c.prefix == prefix)
    conn.execute(update(api_keys).where(where, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow()))
    row = conn.execute(_select_keys().where(where)).first()
    return None if row is None else _key(row)


def _prefix_of(ref: str) -> str:
    """A key's prefix from ``ok_<prefix>_…``, ``ok_<prefix>`` or the bare prefix."""
    ref = ref.strip()
    if ref.startswith("ok_"):
        ref = ref[3:]
    return ref.split("_", 1)[0]


# --- the API --------------------------------------------------------------------------------


class Keys:
    """Users and keys in a store (``client.keys``). Blocking; the gateway calls `verify` in a thread."""

    def __init__(self, store: Store, secret: bytes | None = None) -> None:
        self.store = store
        self._secret = secret if secret is not None else server_secret(store.settings)
        self._dummy = digest(self._secret, "0" * 40)

    def __repr__(self) -> str:
        return f"Keys({self.store.settings.safe_url!r})"

    def create(
        self,
        user: str,
        *,
        roles: str | Sequence[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget: str | float | Budget | None = None,
        expires_in_days: float | None = None,
        name: str | None = None,
        email: str | None = None,
        admin: bool = False,
    ) -> NewKey:
        """A new key for ``user`` (made on first use). ``roles``: what it may call (None: every
        model served); ``budget``: ``"5/day"`` (hour, day, week, month, total)."""
        if not isinstance(user, str) or not user.strip() or len(user) > 200:
            raise InvalidRequestError(
                f"user must be a name of 1-200 characters, got {user!r}", parameter="user"
            )
        if admin and (roles is not None or rpm or tpm or budget is not None):
            raise InvalidRequestError(
                "an admin key manages keys and calls no model: give it no roles, rpm, tpm or budget",
                parameter="admin",
            )
        allow = () if admin else parse_allow(roles)
        limit = None if budget is None else Budget.parse(budget)
        expires = None
        if expires_in_days is not None:
            if not isinstance(expires_in_days, int | float) or not expires_in_days > 0:
                raise InvalidRequestError(
                    f"expires_in_days must be > 0, got {expires_in_days!r}", parameter="expires_in_days"
                )
            expires = utcnow() + timedelta(days=float(expires_in_days))
        prefix = "".join(secrets.choice(_PREFIX_CHARS) for _ in range(12))
        secret = "".join(secrets.choice(_SECRET_CHARS) for _ in range(40))
        row = {
            "id": new_ulid(),
            "prefix": prefix,
            "hash": digest(self._secret, secret),
            "kind": "admin" if admin else "user",
            "name": name,
            "created_at": utcnow(),
            "expires_at": expires,
            "revoked_at": None,
            "allow": list(allow),
            "rpm": _positive("rpm", rpm),
            "tpm": _positive("tpm", tpm),
            "budget_usd": None if limit is None else limit.usd,
            "budget_window": None if limit is None else limit.window,
        }
        info = self.store.write(insert_key, user=user.strip(), email=email, row=row)
        return NewKey(f"ok_{prefix}_{secret}", info)

    def list(self, user: str | None = None, *, include_revoked: bool = True) -> builtins.list[ApiKey]:
        return self.store.read(list_keys, user, include_revoked)

    def revoke(self, ref: str) -> ApiKey:
        """Revoke a key by its id or prefix (``ok_<prefix>``); revoking twice is harmless."""
        found = self.try_revoke(ref)
        if found is None:
            raise StoreError(
                f"no key {_prefix_of(ref)!r} in {self.store.settings.safe_url} (orchlab keys list)"
            )
        return found

    def try_revoke(self, ref: str) -> ApiKey | None:
        """`revoke`, or None when no key has that id or prefix."""
        if not isinstance(ref, str) or not (is_ulid(ref) or _prefix_of(ref)):
            raise InvalidRequestError(f"name a key by its id or prefix, got {ref!r}", parameter="key")
        return self.store.write(revoke_key, ref)

    def verify(self, presented: str, now: datetime | None = None) -> ApiKey | None:
        """The active key ``presented`` is, or None (unknown, wrong, revoked, expired, disabled
        user: the caller cannot tell which). The HMAC is computed and compared in constant time
        whether or not the prefix exists."""
        m = KEY_RE.fullmatch(presented) if isinstance(presented, str) else None
        if m is None:
            hmac.compare_digest(self._dummy, digest(self._secret, "x" * 40))
            return None
        found = self.store.read(key_by_prefix, m.group(1))
        stored = found[1] if found is not None else self._dummy
        ok = hmac.compare_digest(stored, digest(self._secret, m.group(2)))
        if not ok or found is None or not found[0].active(now):
            return None
        return found[0]

    def spent_usd(self, key: ApiKey, now: datetime | None = None) -> float:
        """What ``key`` spent in its budget's current window (all time without a budget)."""
        from orchlab.store.ledger import spent

        start = key.budget.start(now or utcnow()) if key.budget is not None else None
        return self.store.read(spent, key.id, start)

    def usage(self, *, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """Calls, tokens and cost per user and key from the ledger (since ``since``)."""
        from orchlab.store.ledger import usage

        return self.store.read(usage, since)
