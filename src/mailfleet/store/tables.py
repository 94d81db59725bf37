"""SQLModel tables: the one schema both SQLite and PostgreSQL run.

Alembic migrations under ``store/migrations`` create exactly this schema; a
test compares the two.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

__all__ = [
    "ApiKeyRow",
    "ApplicationRow",
    "DomainRow",
    "EventRow",
    "GrantLeaseRow",
    "GrantRow",
    "MessageRow",
    "OutboundRow",
    "QueueEntryRow",
    "SourceCursorRow",
    "WorkspacePatternRow",
    "WorkspaceRow",
    "metadata",
    "new_id",
    "utcnow",
]

metadata = SQLModel.metadata

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def new_id() -> str:
    """A fresh identifier: a time-ordered UUID (version 7, RFC 9562), as text.

    Ids made later sort later, so the indexes they key grow at one end (a few
    hot pages per batch) instead of touching a random page per row; 74
    random bits keep ids made in the same millisecond apart.
    """
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & _MILLIS) << 80
        | 0x7 << 76  # version 7
        | (random >> 68) << 64  # 12 random bits
        | 0b10 << 62  # the RFC 4122 variant
        | random & _LOW_62
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_MILLIS = (1 << 48) - 1
_LOW_62 = (1 << 62) - 1


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _json(**kwargs: Any) -> Any:
    return Field(sa_column=sa.Column(JSONType, **kwargs))


def _fk(target: str, *, ondelete: str, index: bool = True, nullable: bool = False) -> Any:
    return Field(
        sa_column=sa.Column(
            sa.String(36), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index
        )
    )


def _created() -> Any:
    return Field(default_factory=utcnow, sa_column=sa.Column(Timestamp, nullable=False))


class ApplicationRow(SQLModel, table=True):
    __tablename__ = "applications"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = _created()


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    application_id: str = _fk("applications.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    secret_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _created()
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(Timestamp))


class DomainRow(SQLModel, table=True):
    __tablename__ = "domains"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    application_id: str = _fk("applications.id", ondelete="CASCADE")
    name: str = Field(max_length=253, unique=True)
    dkim_selector: str = Field(default="mailfleet", max_length=63)
    # [{"selector", "algorithm", "private_pem"}]: secrets, never logged or listed
    dkim_keys: list[dict[str, str]] = _json(nullable=False, default=list)
    authenticated: bool = False
    audit: dict[str, Any] | None = _json(nullable=True)
    audited_at: datetime | None = Field(default=None, sa_column=sa.Column(Timestamp))
    created_at: datetime = _created()


class WorkspaceRow(SQLModel, table=True):
    __tablename__ = "workspaces"
    __table_args__ = (
        sa.UniqueConstraint("application_id", "name"),
        sa.Index(
            "one_default_workspace",
            "application_id",
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    application_id: str = _fk("applications.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    is_default: bool = False
    policy: dict[str, Any] = _json(nullable=False)
    policy_version: int = 1
    created_at: datetime = _created()
    updated_at: datetime = _created()


class WorkspacePatternRow(SQLModel, table=True):
    __tablename__ = "workspace_patterns"

    application_id: str = Field(
        sa_column=sa.Column(
            sa.String(36),
            sa.ForeignKey("applications.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    pattern: str = Field(primary_key=True, max_length=255)
    workspace_id: str = _fk("workspaces.id", ondelete="CASCADE")


class GrantRow(SQLModel, table=True):
    __tablename__ = "grants"
    __table_args__ = (sa.Index("grants_by_application_status", "application_id", "status"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    application_id: str = _fk("applications.id", ondelete="CASCADE", index=False)
    workspace_id: str = _fk("workspaces.id", ondelete="RESTRICT")
    domain_id: str = _fk("domains.id", ondelete="RESTRICT")
    address: str = Field(max_length=320, unique=True)
    agent: str | None = Field(default=None, max_length=200)
    status: str = Field(default="active", max_length=20)
    workspace_pinned: bool = False
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSONType, nullable=False)
    )
    state: dict[str, Any] | None = _json(nullable=True)
    stored_bytes: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0)
    )
    created_at: datetime = _created()
    updated_at: datetime = _created()


class MessageRow(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        sa.Index("messages_by_grant", "grant_id", "created_at"),
        sa.Index("messages_by_source", "grant_id", "source_key", unique=True),
        sa.Index("messages_by_thread_subject", "grant_id", "thread_subject"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    application_id: str = _fk("applications.id", ondelete="CASCADE", index=False)
    grant_id: str = _fk("grants.id", ondelete="CASCADE", index=False)
    direction: str = Field(max_length=8)
    folder: str = Field(default="inbox", max_length=20)
    message_id: str | None = Field(default=None, max_length=998, index=True)
    thread_id: str | None = Field(default=None, max_length=36, index=True)
    # the normalised subject, for the thread fallback when no reference matches
    thread_subject: str | None = Field(default=None, max_length=255)
    subject: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    sender: str | None = Field(default=None, max_length=320)
    recipients: list[str] = _json(nullable=False)
    size: int = 0
    headers: list[list[str]] = _json(nullable=False)
    defects: list[str] | None = _json(nullable=True)
    source_key: str | None = Field(default=None, max_length=255)
    raw: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    created_at: datetime = _created()


class EventRow(SQLModel, table=True):
    """The outbox: one row per fact, written in the transaction of the change."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("events_by_application", "application_id", "id"),)

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    application_id: str = _fk("applications.id", ondelete="CASCADE", index=False)
    grant_id: str | None = Field(default=None, max_length=36, index=True)
    type: str = Field(max_length=64)
    payload: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _created()


class QueueEntryRow(SQLModel, table=True):
    """A message waiting for its grant's handler; deleted once handled.

    ``id`` orders a grant's entries. A failing entry carries its ``attempts``
    and the time before which it must not run again (``not_before``, epoch
    seconds); past the last attempt it stays as a dead letter (``status='dead'``).
    """

    __tablename__ = "queue_entries"
    __table_args__ = (sa.Index("queue_entries_by_grant", "grant_id", "status", "id"),)

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    application_id: str = _fk("applications.id", ondelete="CASCADE", index=False)
    grant_id: str = _fk("grants.id", ondelete="CASCADE", index=False)
    message_id: str = _fk("messages.id", ondelete="CASCADE")
    status: str = Field(default="ready", max_length=8)
    attempts: int = 0
    not_before: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    created_at: datetime = _created()


class GrantLeaseRow(SQLModel, table=True):
    """Which worker handles a grant's queue, until when (epoch seconds)."""

    __tablename__ = "grant_leases"

    grant_id: str = Field(
        sa_column=sa.Column(
            sa.String(36), sa.ForeignKey("grants.id", ondelete="CASCADE"), primary_key=True
        )
    )
    worker: str = Field(max_length=64, index=True)
    expires_at: float = Field(sa_column=sa.Column(sa.Float, nullable=False))


class WorkerRow(SQLModel, table=True):
    """A live worker process: the application and agent classes it serves, until when.

    Each worker renews its row with its leases and deletes it when it stops;
    a row past ``expires_at`` is a worker that died. The rows say which
    grants no running process serves (``mailfleet grants list --unserved``).
    """

    __tablename__ = "workers"
    __table_args__ = (sa.Index("workers_by_application", "application_id", "expires_at"),)

    id: str = Field(primary_key=True, max_length=64)
    application_id: str = _fk("applications.id", ondelete="CASCADE", index=False)
    agents: list[str] = _json(nullable=False)
    serves_unnamed: bool = False
    started_at: datetime = _created()
    expires_at: float = Field(sa_column=sa.Column(sa.Float, nullable=False))


class SourceCursorRow(SQLModel, table=True):
    """How far an inbound source (an IMAP mailbox...) has been read for a grant."""

    __tablename__ = "source_cursors"

    grant_id: str = Field(
        sa_column=sa.Column(
            sa.String(36), sa.ForeignKey("grants.id", ondelete="CASCADE"), primary_key=True
        )
    )
    source: str = Field(primary_key=True, max_length=255)
    value: dict[str, Any] = _json(nullable=False)


class OutboundRow(SQLModel, table=True):
    """An outbound message on its way to the relay (or captured, or delivered locally).

    ``verp_token`` makes the envelope sender ``bounces+TOKEN@domain`` unique to
    this send, so a later bounce names the send it belongs to.
    """

    __tablename__ = "outbound"
    __table_args__ = (sa.Index("outbound_due", "application_id", "status", "not_before"),)

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    application_id: str = _fk("applications.id", ondelete="CASCADE", index=False)
    grant_id: str = _fk("grants.id", ondelete="CASCADE")
    message_id: str = _fk("messages.id", ondelete="CASCADE")
    verp_token: str = Field(max_length=40, unique=True)
    mail_from: str = Field(max_length=320)
    recipients: list[str] = _json(nullable=False)
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    not_before: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    last_code: int | None = None
    last_response: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    created_at: datetime = _created()
    updated_at: datetime = _created()


def table_of(model: type[SQLModel]) -> sa.Table:
    """The SQLAlchemy ``Table`` behind a table model, typed for Core queries."""
    found: sa.Table = model.__table__  # type: ignore[attr-defined]
    return found


applications_table = table_of(ApplicationRow)
api_keys_table = table_of(ApiKeyRow)
domains_table = table_of(DomainRow)
workspaces_table = table_of(WorkspaceRow)
patterns_table = table_of(WorkspacePatternRow)
grants_table = table_of(GrantRow)
messages_table = table_of(MessageRow)
events_table = table_of(EventRow)
queue_table = table_of(QueueEntryRow)
cursors_table = table_of(SourceCursorRow)
outbound_table = table_of(OutboundRow)
leases_table = table_of(GrantLeaseRow)
workers_table = table_of(WorkerRow)
