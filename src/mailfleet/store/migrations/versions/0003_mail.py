"""mail: the outbound queue, inbound source cursors and dedupe, DKIM keys, storage use

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "source_cursors",
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("grant_id", "source"),
    )
    op.create_table(
        "outbound",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("verp_token", sa.String(length=40), nullable=False),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column("recipients", JSON, nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("verp_token"),
    )
    op.create_index(op.f("ix_outbound_grant_id"), "outbound", ["grant_id"], unique=False)
    op.create_index(op.f("ix_outbound_message_id"), "outbound", ["message_id"], unique=False)
    op.create_index("outbound_due", "outbound", ["status", "not_before"], unique=False)

    with op.batch_alter_table("domains") as batch:
        batch.add_column(sa.Column("dkim_keys", JSON, nullable=False, server_default="[]"))
        batch.drop_column("dkim_private_key")
    with op.batch_alter_table("domains") as batch:
        batch.alter_column("dkim_keys", server_default=None)

    with op.batch_alter_table("grants") as batch:
        batch.add_column(
            sa.Column("stored_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("grants") as batch:
        batch.alter_column("stored_bytes", server_default=None)

    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("defects", JSON, nullable=True))
        batch.add_column(sa.Column("source_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("thread_subject", sa.String(length=255), nullable=True))
    op.create_index("messages_by_source", "messages", ["grant_id", "source_key"], unique=True)
    op.create_index(
        "messages_by_thread_subject", "messages", ["grant_id", "thread_subject"], unique=False
    )


def downgrade() -> None:
    op.drop_index("messages_by_thread_subject", table_name="messages")
    op.drop_index("messages_by_source", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("thread_subject")
        batch.drop_column("source_key")
        batch.drop_column("defects")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("stored_bytes")
    with op.batch_alter_table("domains") as batch:
        batch.add_column(sa.Column("dkim_private_key", sa.Text(), nullable=True))
        batch.drop_column("dkim_keys")
    op.drop_index("outbound_due", table_name="outbound")
    op.drop_index(op.f("ix_outbound_message_id"), table_name="outbound")
    op.drop_index(op.f("ix_outbound_grant_id"), table_name="outbound")
    op.drop_table("outbound")
    op.drop_table("source_cursors")
