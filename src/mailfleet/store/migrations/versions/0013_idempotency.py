"""idempotency: POSTs' Idempotency-Key and first answers; the send's key on its outbound row

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", JSON, nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("application_id", "key"),
    )
    op.create_index(
        "idempotency_keys_by_expiry", "idempotency_keys", ["application_id", "expires_at"]
    )
    with op.batch_alter_table("outbound") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
        batch.create_index(
            "outbound_by_idempotency_key", ["application_id", "idempotency_key"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("outbound") as batch:
        batch.drop_index("outbound_by_idempotency_key")
        batch.drop_column("idempotency_key")
    op.drop_index("idempotency_keys_by_expiry", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
