"""deliverability: suppressions, soft-bounce counts, reports; queue entries of a kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queue_entries") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=12), nullable=False, server_default="message")
        )
        batch.add_column(sa.Column("payload", JSON, nullable=True))
    op.create_table(
        "suppressions",
        sa.Column("id", SERIAL, nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "suppressions_by_address",
        "suppressions",
        ["application_id", "address", "scope"],
        unique=True,
    )
    op.create_table(
        "soft_bounces",
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("application_id", "address"),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("grant_id", sa.String(length=36), nullable=True),
        sa.Column("outbound_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("verp_token", sa.String(length=64), nullable=True),
        sa.Column("original_message_id", sa.Text(), nullable=True),
        sa.Column("attributed", sa.Boolean(), nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("source_key", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["outbound_id"], ["outbound.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "reports_by_application", "reports", ["application_id", "created_at"], unique=False
    )
    op.create_index("reports_by_source", "reports", ["application_id", "source_key"], unique=True)


def downgrade() -> None:
    op.drop_index("reports_by_source", table_name="reports")
    op.drop_index("reports_by_application", table_name="reports")
    op.drop_table("reports")
    op.drop_table("soft_bounces")
    op.drop_index("suppressions_by_address", table_name="suppressions")
    op.drop_table("suppressions")
    with op.batch_alter_table("queue_entries") as batch:
        batch.drop_column("payload")
        batch.drop_column("kind")
