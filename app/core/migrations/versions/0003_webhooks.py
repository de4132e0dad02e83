"""Webhooks: endpoints (per owner, or per job), signing secrets, the outbox and its attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("previous_secret", sa.String(64), nullable=True),
        sa.Column("previous_until", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("disabled_at", UTC_TIME, nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_webhook_endpoints_owner", "webhook_endpoints", ["owner"])
    op.create_index("ix_webhook_endpoints_job_id", "webhook_endpoints", ["job_id"])
    op.create_table(
        "webhook_messages",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column(
            "endpoint_id",
            sa.String(32),
            sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_TIME, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("delivered_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_webhook_messages_due", "webhook_messages", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_messages_job", "webhook_messages", ["job_id", "seq"])
    op.create_index(
        "ix_webhook_messages_endpoint", "webhook_messages", ["endpoint_id", "job_id", "seq"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column(
            "message_seq",
            SEQ,
            sa.ForeignKey("webhook_messages.seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_webhook_attempts_message", "webhook_attempts", ["message_seq", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_messages")
    op.drop_table("webhook_endpoints")
    op.drop_table("webhook_secrets")
