"""unsubscribe and opt-in: the recipients of bulk mail and their tokens, double opt-ins, app keys

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "application_secrets",
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("application_id", "name"),
    )
    op.create_table(
        "unsubscribe_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("token_key", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("via", sa.String(length=12), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "unsubscribe_tokens_by_recipient",
        "unsubscribe_tokens",
        ["grant_id", "address"],
        unique=True,
    )
    op.create_index(
        "unsubscribe_tokens_by_key", "unsubscribe_tokens", ["application_id", "token_key"]
    )
    op.create_table(
        "opt_ins",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("token_key", sa.String(length=16), nullable=False),
        sa.Column("header_message_id", sa.String(length=998), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("via", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("opt_ins_by_recipient", "opt_ins", ["grant_id", "address"], unique=True)
    op.create_index("opt_ins_by_key", "opt_ins", ["application_id", "token_key"])
    op.create_index("opt_ins_by_confirmation", "opt_ins", ["application_id", "header_message_id"])


def downgrade() -> None:
    op.drop_index("opt_ins_by_confirmation", table_name="opt_ins")
    op.drop_index("opt_ins_by_key", table_name="opt_ins")
    op.drop_index("opt_ins_by_recipient", table_name="opt_ins")
    op.drop_table("opt_ins")
    op.drop_index("unsubscribe_tokens_by_key", table_name="unsubscribe_tokens")
    op.drop_index("unsubscribe_tokens_by_recipient", table_name="unsubscribe_tokens")
    op.drop_table("unsubscribe_tokens")
    op.drop_table("application_secrets")
