"""The store's tables (SQLAlchemy Core; no ORM object leaves `orchlab.store`).

Ids are ULIDs (`orchlab.store.ids`); timestamps are UTC. A message is written once: an edit or a
retry makes a new message under the same parent (a branch), and a thread's ``head_id`` says which
branch is current. The migrations in ``migrations/versions`` build exactly these tables (a test
compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

ID = 26  # a ULID's length


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone: it is added back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

threads = Table(
    "threads",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), unique=True),
    Column("title", Text),
    Column("user", String(200)),
    Column("head_id", String(ID)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("metadata", JSON, key="meta"),
    Index(None, "user", "updated_at"),
    Index(None, "updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("thread_id", String(ID), ForeignKey("threads.id"), nullable=False),
    Column("parent_id", String(ID), ForeignKey("messages.id")),
    Column("role", String(16), nullable=False),
    Column("content", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("provider", String(200)),
    Column("model", String(200)),
    Column("llm_role", String(500)),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cost_usd", Float),
    Column("latency_s", Float),
    Column("finish_reason", String(64)),
    Column("trace_id", String(64)),
    Column("prompt_name", String(200)),
    Column("prompt_version", String(64)),
    Index(None, "thread_id", "created_at"),
    Index(None, "parent_id"),
    Index(None, "trace_id"),
    Index(None, "prompt_name", "prompt_version"),
    Index(None, "created_at"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("message_id", String(ID), ForeignKey("messages.id"), nullable=False),
    Column("user", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("value", Integer, nullable=False),
    Column("comment", Text),
    Column("tags", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("message_id", "user"),
)

prompt_versions = Table(
    "prompt_versions",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("version", String(64), nullable=False),
    Column("template", Text, nullable=False),
    Column("source", String(500)),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name", "version"),
)

# --- the gateway's users, keys and spending (orchlab.store.keys, orchlab.store.ledger) -----------

users = Table(
    "users",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("email", String(320)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("allow", JSON, nullable=False),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("budget_usd", Float),
    Column("budget_window", String(8)),
    Index(None, "user_id"),
)

usage_ledger = Table(
    "usage_ledger",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("key_id", String(ID), ForeignKey("api_keys.id"), nullable=False),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime),
    Column("status", String(10), nullable=False),
    Column("amount_usd", Float, nullable=False),
    Column("reserved_usd", Float, nullable=False),
    Column("request_id", String(128)),
    Column("endpoint", String(64)),
    Column("provider", String(200)),
    Column("model", String(200)),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Index(None, "key_id", "created_at", "amount_usd"),  # the budget's SUM reads the index alone
    Index(None, "user_id", "created_at"),
)
