"""domain authentication: a domain's state and next audit; a message's authentication results

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.add_column(
            sa.Column("state", sa.String(length=10), nullable=False, server_default="pending")
        )
        batch.add_column(sa.Column("next_audit_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("domains_by_next_audit", "domains", ["next_audit_at"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("authentication", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("authentication")
    op.drop_index("domains_by_next_audit", table_name="domains")
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("next_audit_at")
        batch.drop_column("state")
