"""webhooks: subscriptions, their lanes, deliveries and attempts; events.txid

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _application() -> sa.Column[str]:
    return sa.Column("application_id", sa.String(length=36), nullable=False)


def _application_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["application_id"], ["applications.id"], ondelete="CASCADE")


def upgrade() -> None:
    # Existing events are old enough: 0. New ones, on PostgreSQL, their transaction's id.
    op.add_column(
        "events", sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE events ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint)"
        )
    op.create_index("events_by_commit", "events", ["application_id", "txid", "id"])

    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=36), nullable=False),
        _application(),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("event_types", JSON, nullable=False),
        sa.Column("workspaces", JSON, nullable=False),
        sa.Column("grants", JSON, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("secrets", JSON, nullable=False),
        sa.Column("cursor_txid", sa.BigInteger(), nullable=False),
        sa.Column("cursor_event", sa.BigInteger(), nullable=False),
        sa.Column("start_after", sa.BigInteger(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_since", TIME, nullable=True),
        sa.Column("retry_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        _application_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhooks_application_id", "webhooks", ["application_id"])

    op.create_table(
        "webhook_lanes",
        _application(),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("grant_key", sa.String(length=36), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        _application_fk(),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("webhook_id", "grant_key"),
    )
    op.create_index("webhook_lanes_due", "webhook_lanes", ["application_id", "next_attempt_at"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", SERIAL, nullable=False),
        _application(),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", SERIAL, nullable=False),
        sa.Column("grant_key", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("delivered_at", TIME, nullable=True),
        _application_fk(),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "webhook_deliveries_by_lane",
        "webhook_deliveries",
        ["webhook_id", "grant_key", "status", "id"],
    )
    op.create_index("webhook_deliveries_by_webhook", "webhook_deliveries", ["webhook_id", "id"])
    op.create_index("webhook_deliveries_by_event", "webhook_deliveries", ["webhook_id", "event_id"])

    op.create_table(
        "webhook_attempts",
        sa.Column("id", SERIAL, nullable=False),
        _application(),
        sa.Column("delivery_id", SERIAL, nullable=False),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("attempted_at", TIME, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("response", sa.String(length=1024), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _application_fk(),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.create_index("webhook_attempts_by_webhook", "webhook_attempts", ["webhook_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_lanes")
    op.drop_index("ix_webhooks_application_id", table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index("events_by_commit", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("txid")
