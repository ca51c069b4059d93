"""threads, messages, feedback, prompt_versions

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orchlab.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("title", sa.Text()),
        sa.Column("user", sa.String(200)),
        sa.Column("head_id", sa.String(26)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("metadata", sa.JSON()),
        sa.PrimaryKeyConstraint("id", name="pk_threads"),
        sa.UniqueConstraint("name", name="uq_threads_name"),
    )
    op.create_index("ix_threads_user_updated_at", "threads", ["user", "updated_at"])
    op.create_index("ix_threads_updated_at", "threads", ["updated_at"])
    op.create_table(
        "messages",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("thread_id", sa.String(26), nullable=False),
        sa.Column("parent_id", sa.String(26)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("provider", sa.String(200)),
        sa.Column("model", sa.String(200)),
        sa.Column("llm_role", sa.String(500)),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("latency_s", sa.Float()),
        sa.Column("finish_reason", sa.String(64)),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("prompt_name", sa.String(200)),
        sa.Column("prompt_version", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(["thread_id"], ["threads.id"], name="fk_messages_thread_id_threads"),
        sa.ForeignKeyConstraint(["parent_id"], ["messages.id"], name="fk_messages_parent_id_messages"),
    )
    op.create_index("ix_messages_thread_id_created_at", "messages", ["thread_id", "created_at"])
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])
    op.create_index("ix_messages_trace_id", "messages", ["trace_id"])
    op.create_index("ix_messages_prompt_name_prompt_version", "messages", ["prompt_name", "prompt_version"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("message_id", sa.String(26), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("tags", sa.JSON()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name="fk_feedback_message_id_messages"),
        sa.UniqueConstraint("message_id", "user", name="uq_feedback_message_id_user"),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("source", sa.String(500)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_versions"),
        sa.UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),
    )


def downgrade() -> None:
    op.drop_table("prompt_versions")
    op.drop_table("feedback")
    op.drop_index("ix_messages_created_at", "messages")
    op.drop_index("ix_messages_prompt_name_prompt_version", "messages")
    op.drop_index("ix_messages_trace_id", "messages")
    op.drop_index("ix_messages_parent_id", "messages")
    op.drop_index("ix_messages_thread_id_created_at", "messages")
    op.drop_table("messages")
    op.drop_index("ix_threads_updated_at", "threads")
    op.drop_index("ix_threads_user_updated_at", "threads")
    op.drop_table("threads")
