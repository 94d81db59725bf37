"""durable queues and leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "grant_leases",
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.create_index(op.f("ix_grant_leases_worker"), "grant_leases", ["worker"], unique=False)

    op.create_table(
        "queue_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_queue_entries_message_id"), "queue_entries", ["message_id"], unique=False
    )
    op.create_index(
        "queue_entries_by_grant", "queue_entries", ["grant_id", "status", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("queue_entries_by_grant", table_name="queue_entries")
    op.drop_index(op.f("ix_queue_entries_message_id"), table_name="queue_entries")

    op.drop_table("queue_entries")
    op.drop_index(op.f("ix_grant_leases_worker"), table_name="grant_leases")

    op.drop_table("grant_leases")
