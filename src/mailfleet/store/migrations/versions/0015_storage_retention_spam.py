"""storage, retention and spam: a grant's storage-full mark, a message's spam verdict,
messages by age, the retention sweep's round

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("storage_full_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("spam", JSON, nullable=True))
    op.create_index("messages_by_age", "messages", ["application_id", "folder", "created_at"])
    op.create_table(
        "retention_sweeps",
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("application_id"),
    )


def downgrade() -> None:
    op.drop_table("retention_sweeps")
    op.drop_index("messages_by_age", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("spam")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("storage_full_at")
