"""users, api_keys, usage_ledger (the gateway's callers, their keys and their spending)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orchlab.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("allow", sa.JSON(), nullable=False),
        sa.Column("rpm", sa.Integer()),
        sa.Column("tpm", sa.Integer()),
        sa.Column("budget_usd", sa.Float()),
        sa.Column("budget_window", sa.String(8)),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_keys_user_id_users"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("key_id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime()),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("endpoint", sa.String(64)),
        sa.Column("provider", sa.String(200)),
        sa.Column("model", sa.String(200)),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_usage_ledger"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name="fk_usage_ledger_key_id_api_keys"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_usage_ledger_user_id_users"),
    )
    op.create_index(
        "ix_usage_ledger_key_id_created_at_amount_usd", "usage_ledger", ["key_id", "created_at", "amount_usd"]
    )
    op.create_index("ix_usage_ledger_user_id_created_at", "usage_ledger", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_ledger_user_id_created_at", "usage_ledger")
    op.drop_index("ix_usage_ledger_key_id_created_at_amount_usd", "usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_index("ix_api_keys_user_id", "api_keys")
    op.drop_table("api_keys")
    op.drop_table("users")
