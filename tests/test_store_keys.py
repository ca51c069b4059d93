"""The gateway's users, keys and usage ledger in the store (orchlab.store.keys, orchlab.store.ledger),
on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from orchlab.errors import InvalidRequestError, StoreError
from orchlab.store.keys import SECRET_ENV, Budget, Keys, allowed, server_secret
from orchlab.store.ledger import Refused, Settlement, reserve, settle, spent
from orchlab.store.schema import api_keys, usage_ledger
from orchlab.store.settings import StoreSettings
from orchlab.store.store import Store
from tests.store_support import postgres_fixture, store_url_fixture  # noqa: F401

SECRET = "test-server-secret-" + "s" * 32


@pytest.fixture
def keys(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Keys:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return Keys(Store.open(StoreSettings(store_url)))


def test_only_an_hmac_of_the_secret_is_stored(keys: Keys) -> None:
    new = keys.create("ana", roles="llm.inference, urn:orchlab:*", rpm=60, tpm=100_000, budget="5/day")
    prefix, secret = new.key.split("_")[1:]
    assert new.key == f"ok_{prefix}_{secret}" and len(prefix) == 12 and len(secret) == 40
    assert new.key not in repr(new) and secret not in repr(new.info)
    with keys.store._engine.connect() as conn:
        row = conn.execute(select(api_keys)).one()._mapping
        dump = "\n".join(str(v) for v in conn.execute(text("SELECT * FROM api_keys")).one())
    assert row["hash"] == hmac.new(SECRET.encode(), secret.encode(), hashlib.sha256).hexdigest()
    assert secret not in dump and new.key not in dump
    info = keys.verify(new.key)
    assert info is not None and info.user == "ana" and info.allow == ("llm.inference", "urn:orchlab:*")
    assert (info.rpm, info.tpm, info.budget) == (60, 100_000, Budget(5.0, "day"))


def test_verify_refuses_wrong_revoked_expired_and_disabled_alike(keys: Keys) -> None:
    good = keys.create("ana")
    assert keys.verify(good.key) is not None
    wrong = good.key[:-1] + ("a" if good.key[-1] != "a" else "b")
    assert keys.verify(wrong) is None
    assert keys.verify("ok_" + "x" * 12 + "_" + "y" * 40) is None  # unknown prefix
    assert keys.verify("sk-not-ours") is None and keys.verify("") is None
    short = keys.create("bo", expires_in_days=1)
    assert keys.verify(short.key, now=datetime.now(UTC) + timedelta(days=2)) is None
    assert keys.verify(short.key) is not None
    revoked = keys.revoke(f"ok_{good.info.prefix}")
    assert revoked.revoked_at is not None and keys.verify(good.key) is None
    assert keys.revoke(good.info.id).revoked_at == revoked.revoked_at  # twice: harmless
    with keys.store._engine.begin() as conn:
        conn.execute(text("UPDATE users SET disabled = :t WHERE name = 'bo'"), {"t": True})
    assert keys.verify(short.key) is None
    with pytest.raises(StoreError, match="no key 'zzzzzzzzzzzz'"):
        keys.revoke("ok_zzzzzzzzzzzz")
    listed = {k.user: k for k in keys.list()}
    assert set(listed) == {"ana", "bo"} and listed["ana"].revoked_at is not None
    assert [k.user for k in keys.list(include_revoked=False)] == ["bo"]


def test_admin_keys_call_nothing_and_bad_limits_are_named(keys: Keys) -> None:
    admin = keys.create("root", admin=True)
    assert admin.info.kind == "admin" and admin.info.allow == ()
    with pytest.raises(InvalidRequestError, match="admin key manages keys"):
        keys.create("root", admin=True, rpm=5)
    with pytest.raises(InvalidRequestError, match="rpm must be a whole number >= 1, got 0"):
        keys.create("ana", rpm=0)
    with pytest.raises(InvalidRequestError, match="the window is one of hour, day, week, month, total"):
        keys.create("ana", budget="5/fortnight")
    with pytest.raises(InvalidRequestError, match="positive number of USD"):
        keys.create("ana", budget="-1/day")


def test_budget_windows_are_calendar_windows_in_utc() -> None:
    at = datetime(2026, 2, 18, 15, 42, tzinfo=UTC)  # a Wednesday
    assert Budget.parse("5/day").start(at) == datetime(2026, 2, 18, tzinfo=UTC)
    assert Budget.parse("5/day").end(at) == datetime(2026, 2, 19, tzinfo=UTC)
    assert Budget.parse("$2/hour").start(at) == datetime(2026, 2, 18, 15, tzinfo=UTC)
    assert Budget.parse("2/week").start(at) == datetime(2026, 2, 16, tzinfo=UTC)
    assert Budget.parse("2/month").end(at) == datetime(2026, 3, 1, tzinfo=UTC)
    assert Budget.parse(3).start(at) is None and Budget.parse("0.10").window == "total"
    assert str(Budget.parse("0.10/day")) == "$0.1/day"


def test_allow_lists_match_roles_aliases_and_urn_namespaces() -> None:
    patterns = ("llm.inference", "urn:orchlab:race:*", "up:*")
    assert allowed(patterns, "llm.inference") and not allowed(patterns, "llm.big")
    assert allowed(patterns, "urn:orchlab:race") and allowed(patterns, "urn:orchlab:race:candidates=a")
    assert not allowed(patterns, "urn:orchlab:ensemble") and allowed(patterns, "up:cheap")
    assert allowed(("*",), "anything") and not allowed((), "llm.inference")


def test_ledger_reservations_never_exceed_the_budget_under_concurrent_writers(keys: Keys) -> None:
    new = keys.create("ana", budget="0.10/day")
    store, since = keys.store, Budget.parse("0.10/day").start(datetime.now(UTC))
    results: list[object] = []
    lock = threading.Lock()

    def one() -> None:
        found = store.write(
            reserve,
            key_id=new.info.id,
            user_id=new.info.user_id,
            amount_usd=0.03,
            limit_usd=0.10,
            since=since,
            request_id=None,
            endpoint=None,
            provider="up",
            model="m",
        )
        with lock:
            results.append(found)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [r for r in results if isinstance(r, str)]
    assert len(held) == 3 and sum(isinstance(r, Refused) for r in results) == 13
    assert store.read(spent, new.info.id, since) == pytest.approx(0.09)
    # settled at the real cost: room for more
    store.write(settle, [Settlement(e, 0.01, "settled", new.info.id, new.info.user_id) for e in held])
    assert store.read(spent, new.info.id, since) == pytest.approx(0.03)
    assert keys.spent_usd(new.info) == pytest.approx(0.03)
    with store._engine.connect() as conn:
        statuses = conn.execute(select(usage_ledger.c.status, usage_ledger.c.reserved_usd)).all()
    assert sorted(statuses) == [("settled", 0.03)] * 3
    assert keys.usage()[0] == {
        "user": "ana",
        "prefix": new.info.prefix,
        "attempts": 3,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": pytest.approx(0.03),
    }


def test_server_secret_file_made_0600_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    settings = StoreSettings(f"sqlite:///{tmp_path / 'db' / 'store.db'}")
    first = server_secret(settings)
    path = tmp_path / "db" / "gateway.secret"
    assert path.stat().st_mode & 0o777 == 0o600 and len(first) == 64
    assert server_secret(settings) == first
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="may be read by other users: chmod 600"):
        server_secret(settings)
    with pytest.raises(StoreError, match=f"is PostgreSQL: set {SECRET_ENV}"):
        server_secret(StoreSettings("postgresql+psycopg://u:pw@127.0.0.1:1/db"))
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(StoreError, match="at least 32 characters"):
        server_secret(settings)
