"""scopes: live workers and the agent classes they serve; the outbox claimed per application

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("agents", JSON, nullable=False),
        sa.Column("serves_unnamed", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "workers_by_application", "workers", ["application_id", "expires_at"], unique=False
    )
    op.drop_index("outbound_due", table_name="outbound")
    op.create_index(
        "outbound_due", "outbound", ["application_id", "status", "not_before"], unique=False
    )


def downgrade() -> None:
    op.drop_index("outbound_due", table_name="outbound")
    op.create_index("outbound_due", "outbound", ["status", "not_before"], unique=False)
    op.drop_index("workers_by_application", table_name="workers")
    op.drop_table("workers")
