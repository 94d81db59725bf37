"""pacing: a clock per grant and domain (rate, quota, warm-up, breaker), recipients of a ramp

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_clocks",
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("subject", sa.String(length=253), nullable=False),
        sa.Column("clock", JSON, nullable=False),
        sa.Column("breaker", sa.String(length=12), nullable=False),
        sa.Column("next_release", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("application_id", "kind", "subject"),
    )
    op.create_index(
        "send_clocks_open_breakers", "send_clocks", ["application_id", "breaker", "subject"]
    )
    op.create_table(
        "ramp_recipients",
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("subject", sa.String(length=253), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("application_id", "kind", "subject", "address"),
    )


def downgrade() -> None:
    op.drop_table("ramp_recipients")
    op.drop_index("send_clocks_open_breakers", table_name="send_clocks")
    op.drop_table("send_clocks")
