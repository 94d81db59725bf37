"""The tables: the one schema both SQLite and PostgreSQL run.

Plain SQLAlchemy Core tables (every query is Core; declaring them costs a
command line's start-up far less than model classes would). Alembic
migrations under ``store/migrations`` create exactly this schema; a test
compares the two.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "JSONType",
    "Timestamp",
    "api_keys_table",
    "application_secrets_table",
    "applications_table",
    "cursors_table",
    "domains_table",
    "events_table",
    "grants_table",
    "idempotency_table",
    "leases_table",
    "list_entries_table",
    "lists_table",
    "messages_table",
    "metadata",
    "new_id",
    "opt_ins_table",
    "outbound_table",
    "patterns_table",
    "policy_versions_table",
    "queue_table",
    "ramp_recipients_table",
    "reports_table",
    "reputation_table",
    "restrictions_table",
    "retention_sweeps_table",
    "rule_evaluations_table",
    "rules_table",
    "send_clocks_table",
    "soft_bounces_table",
    "suppressions_table",
    "unsubscribe_tokens_table",
    "utcnow",
    "webhook_attempts_table",
    "webhook_deliveries_table",
    "webhook_lanes_table",
    "webhooks_table",
    "workers_table",
    "workspaces_table",
]

metadata = sa.MetaData()


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


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.String(36), primary_key=True, default=new_id)


def _serial() -> sa.Column[Any]:
    """An integer key the database assigns in order (outbox and queue positions)."""
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)


def _fk(
    name: str, target: str, *, ondelete: str, index: bool = True, primary_key: bool = False
) -> sa.Column[Any]:
    return sa.Column(
        name,
        sa.String(36),
        sa.ForeignKey(target, ondelete=ondelete),
        nullable=False,
        index=index,
        primary_key=primary_key,
    )


def _application(*, index: bool = False, primary_key: bool = False) -> sa.Column[Any]:
    return _fk(
        "application_id",
        "applications.id",
        ondelete="CASCADE",
        index=index,
        primary_key=primary_key,
    )


def _text(name: str, length: int, *, nullable: bool = False, **options: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length), nullable=nullable, **options)


def _json(name: str, *, nullable: bool = False, **options: Any) -> sa.Column[Any]:
    return sa.Column(name, JSONType, nullable=nullable, **options)


def _time(name: str = "created_at", *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, Timestamp, nullable=nullable)


applications_table = sa.Table(
    "applications",
    metadata,
    _id(),
    _text("name", 200, unique=True),
    _time(),
)

api_keys_table = sa.Table(
    "api_keys",
    metadata,
    _id(),
    _application(index=True),
    _text("name", 200),
    _text("secret_hash", 64, unique=True),
    # admin keys may also act as the operator: reinstate, restrict, lift
    sa.Column("admin", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    _time(),
    _time("revoked_at", nullable=True),
)

domains_table = sa.Table(
    "domains",
    metadata,
    _id(),
    _application(index=True),
    _text("name", 253, unique=True),
    _text("dkim_selector", 63, default="mailfleet"),
    # [{"selector", "algorithm", "private_pem", "dns_txt"}]: secrets, never logged or listed
    _json("dkim_keys", default=list),
    sa.Column("authenticated", sa.Boolean, nullable=False, default=False),
    # pending (never checked), verified or failed: the last check's verdict
    _text("state", 10, default="pending", server_default="pending"),
    _json("audit", nullable=True),  # the last check's report (PreflightReport.as_json)
    _time("audited_at", nullable=True),
    _time("next_audit_at", nullable=True),
    _time(),
    sa.Index("domains_by_next_audit", "next_audit_at"),
)

workspaces_table = sa.Table(
    "workspaces",
    metadata,
    _id(),
    _application(index=True),
    _text("name", 200),
    sa.Column("is_default", sa.Boolean, nullable=False, default=False),
    _json("policy"),
    sa.Column("policy_version", sa.Integer, nullable=False, default=1),
    _time(),
    _time("updated_at"),
    sa.UniqueConstraint("application_id", "name"),
    sa.Index(
        "one_default_workspace",
        "application_id",
        unique=True,
        sqlite_where=sa.text("is_default"),
        postgresql_where=sa.text("is_default"),
    ),
)

patterns_table = sa.Table(
    "workspace_patterns",
    metadata,
    _application(primary_key=True),
    _text("pattern", 255, primary_key=True),
    _fk("workspace_id", "workspaces.id", ondelete="CASCADE"),
)

grants_table = sa.Table(
    "grants",
    metadata,
    _id(),
    _application(),
    _fk("workspace_id", "workspaces.id", ondelete="RESTRICT"),
    _fk("domain_id", "domains.id", ondelete="RESTRICT"),
    _text("address", 320, unique=True),
    _text("agent", 200, nullable=True),
    _text("status", 20, default="active"),
    sa.Column("workspace_pinned", sa.Boolean, nullable=False, default=False),
    _json("metadata"),
    _json("state", nullable=True),
    sa.Column("stored_bytes", sa.BigInteger, nullable=False, default=0),
    # set when mail was first refused for storage (grant.storage_full), cleared once
    # deletions bring it under its limit again (grant.storage_available)
    _time("storage_full_at", nullable=True),
    _time(),
    _time("updated_at"),
    sa.Index("grants_by_application_status", "application_id", "status"),
)

messages_table = sa.Table(
    "messages",
    metadata,
    _id(),
    _application(),
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False),
    _text("direction", 8),
    _text("folder", 20, default="inbox"),
    _text("message_id", 998, nullable=True, index=True),
    _text("thread_id", 36, nullable=True, index=True),
    # the normalised subject, for the thread fallback when no reference matches
    _text("thread_subject", 255, nullable=True),
    sa.Column("subject", sa.Text),
    _text("sender", 320, nullable=True),
    _json("recipients"),
    sa.Column("size", sa.Integer, nullable=False, default=0),
    _json("headers"),
    _json("defects", nullable=True),
    # inbound: the SPF/DKIM/DMARC results of arrival (Authentication.as_json)
    _json("authentication", nullable=True),
    # inbound: the spam score, its threshold and signals (SpamVerdict.as_json)
    _json("spam", nullable=True),
    _text("source_key", 255, nullable=True),
    sa.Column("raw", sa.LargeBinary),
    # set by a mark_read rule (inbound); readers of the mailbox may change it
    sa.Column("read", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    _time(),
    sa.Index("messages_by_grant", "grant_id", "created_at"),
    sa.Index("messages_by_age", "application_id", "folder", "created_at"),
    sa.Index("messages_by_source", "grant_id", "source_key", unique=True),
    sa.Index("messages_by_thread_subject", "grant_id", "thread_subject"),
)

events_table = sa.Table(
    "events",
    metadata,
    _serial(),
    _application(),
    _text("grant_id", 36, nullable=True, index=True),
    _text("type", 64),
    _json("payload"),
    _time(),
    # PostgreSQL: the writing transaction's id (its default, set below); SQLite: 0
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Index("events_by_application", "application_id", "id"),
    sa.Index("events_by_commit", "application_id", "txid", "id"),
)
"""The outbox: one row per fact, written in the transaction of the change.

``txid`` lets a reader take events in an order no later commit can fall
behind: on PostgreSQL, ids are handed out before commit, so a lower id can
become visible after a higher one; every transaction whose id is below the
oldest one still running has ended, so the events with ``txid`` below it are
all there for good (``store/webhook_lanes.py`` reads them in ``(txid, id)`` order).
SQLite has one writer at a time: its ids commit in order and ``txid`` is 0.
"""

_PG_TXID = sa.DDL(  # type: ignore[no-untyped-call]
    "ALTER TABLE events ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint)"
)
sa.event.listen(events_table, "after_create", _PG_TXID.execute_if(dialect="postgresql"))

queue_table = sa.Table(
    "queue_entries",
    metadata,
    _serial(),
    _application(),
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False),
    _fk("message_id", "messages.id", ondelete="CASCADE"),
    _text("kind", 12, default="message", server_default="message"),
    _json("payload", nullable=True),
    _text("status", 8, default="ready"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("not_before", sa.Float),
    sa.Column("last_error", sa.Text),
    _time(),
    sa.Index("queue_entries_by_grant", "grant_id", "status", "id"),
)
"""A message waiting for its grant's handler; deleted once handled.

``kind`` names the handler: ``message`` (``on_message``, the entry's
message), ``bounce``, ``complaint`` or ``unsubscribe`` (``on_bounce`` /
``on_complaint`` / ``on_unsubscribe``, the typed record in ``payload``; the
message is the send it is about).

``id`` orders a grant's entries. A failing entry carries its ``attempts``
and the time before which it must not run again (``not_before``, epoch
seconds); past the last attempt it stays as a dead letter (``status='dead'``).
"""

leases_table = sa.Table(
    "grant_leases",
    metadata,
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False, primary_key=True),
    _text("worker", 64, index=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)
"""Which worker handles a grant's queue, until when (epoch seconds)."""

workers_table = sa.Table(
    "workers",
    metadata,
    _text("id", 64, primary_key=True),
    _application(),
    _json("agents"),
    sa.Column("serves_unnamed", sa.Boolean, nullable=False, default=False),
    _time("started_at"),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("workers_by_application", "application_id", "expires_at"),
)
"""A live worker process: the application and agent classes it serves, until when.

Each worker renews its row with its leases and deletes it when it stops;
a row past ``expires_at`` is a worker that died. The rows say which
grants no running process serves (``mailfleet grants list --unserved``).
"""

cursors_table = sa.Table(
    "source_cursors",
    metadata,
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False, primary_key=True),
    _text("source", 255, primary_key=True),
    _json("value"),
)
"""How far an inbound source (an IMAP mailbox...) has been read for a grant."""

outbound_table = sa.Table(
    "outbound",
    metadata,
    _serial(),
    _application(),
    _fk("grant_id", "grants.id", ondelete="CASCADE"),
    _fk("message_id", "messages.id", ondelete="CASCADE"),
    _text("verp_token", 40, unique=True),
    _text("mail_from", 320),
    _json("recipients"),
    _text("status", 12, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("not_before", sa.Float, nullable=False),
    _text("lease_owner", 64, nullable=True),
    sa.Column("lease_until", sa.Float),
    sa.Column("last_code", sa.Integer),
    sa.Column("last_response", sa.Text),
    # {recipient: [grant, workspace, domain, application sequence numbers]}: the send's
    # place in each reputation window, for the bounce or complaint that comes later
    _json("reputation", nullable=True),
    # the SHA-256 of the send's idempotency key, written with the message: a retry
    # after a crash between commit and answer finds the send instead of sending again
    _text("idempotency_key", 64, nullable=True),
    _time(),
    _time("updated_at"),
    sa.Index("outbound_due", "application_id", "status", "not_before"),
    sa.Index("outbound_by_idempotency_key", "application_id", "idempotency_key", unique=True),
)
"""An outbound message on its way to the relay (or captured, or delivered locally).

``verp_token`` makes the envelope sender ``bounces+TOKEN@domain`` unique to
this send, so a later bounce names the send it belongs to.
"""

suppressions_table = sa.Table(
    "suppressions",
    metadata,
    _serial(),
    _application(),
    # "" for the whole application, else the id of the one workspace it applies to
    _text("scope", 36, default=""),
    _text("address", 320),
    _text("reason", 20),
    sa.Column("detail", sa.Text),
    sa.Column("event_id", sa.BigInteger),
    _time(),
    sa.Index("suppressions_by_address", "application_id", "address", "scope", unique=True),
)
"""An address the application (or one of its workspaces) must not mail, and why:
``hard_bounce``, ``complaint``, ``soft_bounces``, ``unsubscribe`` or ``manual``.
``event_id`` is the event that caused it, when one did."""

reputation_table = sa.Table(
    "reputation",
    metadata,
    _application(primary_key=True),
    _text("kind", 12, primary_key=True),  # grant, workspace, domain, application
    _text("subject", 253, primary_key=True),  # its id (a domain: its name)
    _json("window"),  # RollingWindow.to_json
    _text("state", 12),  # healthy, under_review, paused
    sa.Column("reason", sa.Text),
    _time("updated_at"),
)
"""Bounce and complaint counts over the most recent sends of each subject, and its state."""

restrictions_table = sa.Table(
    "restrictions",
    metadata,
    _application(primary_key=True),
    _text("kind", 12, primary_key=True),  # workspace, domain, application
    _text("subject", 253, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    _text("by", 320),
    _time(),
)
"""Sending blocked by an operator (abuse), whatever the rates; a grant's is its status."""

send_clocks_table = sa.Table(
    "send_clocks",
    metadata,
    _application(primary_key=True),
    _text("kind", 12, primary_key=True),  # grant, domain
    _text("subject", 253, primary_key=True),  # its id (a domain: its name)
    _json("clock"),  # SendClock.to_json: rate, daily quota, warm-up
    _text("breaker", 12, default="closed"),  # closed, slow, held
    sa.Column("next_release", sa.Float, nullable=False, default=0.0),
    _time("updated_at"),
    sa.Index("send_clocks_open_breakers", "application_id", "breaker", "subject"),
)
"""When a grant (or a domain) may send next: its pacing clock, and its breaker's state
with the time its next slowed or probing message may leave."""

ramp_recipients_table = sa.Table(
    "ramp_recipients",
    metadata,
    _application(primary_key=True),
    _text("kind", 12, primary_key=True),
    _text("subject", 253, primary_key=True),
    _text("address", 320, primary_key=True),
)
"""The distinct recipients a warming grant or domain has mailed (kept while its ramp lasts)."""

soft_bounces_table = sa.Table(
    "soft_bounces",
    metadata,
    _application(primary_key=True),
    _text("address", 320, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    _time("updated_at"),
)
"""Soft bounces in a row per recipient; a delivery to it clears the count."""

reports_table = sa.Table(
    "reports",
    metadata,
    _id(),
    _application(),
    sa.Column("grant_id", sa.String(36), sa.ForeignKey("grants.id", ondelete="SET NULL")),
    sa.Column("outbound_id", sa.BigInteger, sa.ForeignKey("outbound.id", ondelete="SET NULL")),
    _text("kind", 12),
    _text("recipient", 320),
    _text("verp_token", 64, nullable=True),
    sa.Column("original_message_id", sa.Text),
    sa.Column("attributed", sa.Boolean, nullable=False),
    _json("summary"),
    _text("source_key", 255, nullable=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("raw", sa.LargeBinary),
    _time(),
    sa.Index("reports_by_application", "application_id", "created_at"),
    sa.Index("reports_by_source", "application_id", "source_key", unique=True),
)
"""Every bounce, complaint or other report the MX took at a bounce address, or
found among a grant's mail: what it said (``summary``, the ``inspect`` form),
and the send it was matched to. An unknown or forged token is kept here,
``attributed`` false, and acts on nothing."""


webhooks_table = sa.Table(
    "webhooks",
    metadata,
    _id(),
    _application(index=True),
    _text("url", 2000),
    sa.Column("description", sa.Text),
    _json("event_types"),  # [] for every type; "message.*" prefixes allowed
    _json("workspaces"),  # [] for every workspace; else workspace ids
    _json("grants"),  # [] for every grant; else grant ids
    _text("status", 10, default="active"),  # active, failing, disabled
    # [{"secret": "whsec_...", "expires_at": epoch seconds | null}]: secrets, never listed
    _json("secrets"),
    # how far the outbox has been fanned out: the last (txid, id) taken
    sa.Column("cursor_txid", sa.BigInteger, nullable=False, default=0),
    sa.Column("cursor_event", sa.BigInteger, nullable=False, default=0),
    # events up to this id were written before the subscription
    sa.Column("start_after", sa.BigInteger, nullable=False, default=0),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, default=0),
    _time("failing_since", nullable=True),
    sa.Column("retry_at", sa.Float, nullable=False, default=0.0),
    sa.Column("last_error", sa.Text),
    _time(),
    _time("updated_at"),
)
"""An application's webhook subscription: its endpoint, filters, state, secrets, and
how far the event outbox has been fanned out to it. While its endpoint fails,
``retry_at`` is when one delivery may probe it again (epoch seconds)."""

webhook_lanes_table = sa.Table(
    "webhook_lanes",
    metadata,
    _application(),
    _fk("webhook_id", "webhooks.id", ondelete="CASCADE", index=False, primary_key=True),
    _text("grant_key", 36, primary_key=True),  # the grant's id; "" for events of no grant
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    _text("lease_owner", 64, nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False, default=0.0),
    sa.Index("webhook_lanes_due", "application_id", "next_attempt_at"),
)
"""The deliveries of one grant to one subscription wait in line: a lane exists while
some are pending, is taken by one process at a time (a lease) and retried with
backoff when its first delivery fails (``failures`` in a row)."""

webhook_deliveries_table = sa.Table(
    "webhook_deliveries",
    metadata,
    _serial(),
    _application(),
    _fk("webhook_id", "webhooks.id", ondelete="CASCADE", index=False),
    sa.Column(
        "event_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("events.id", ondelete="CASCADE"),
        nullable=False,
    ),
    _text("grant_key", 36),
    _text("status", 10, default="pending"),  # pending, delivered
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    _time(),
    _time("delivered_at", nullable=True),
    sa.Index("webhook_deliveries_by_lane", "webhook_id", "grant_key", "status", "id"),
    sa.Index("webhook_deliveries_by_webhook", "webhook_id", "id"),
    sa.Index("webhook_deliveries_by_event", "webhook_id", "event_id"),
)
"""One event on its way to one subscription; ``id`` orders a lane's deliveries."""

webhook_attempts_table = sa.Table(
    "webhook_attempts",
    metadata,
    _serial(),
    _application(),
    sa.Column(
        "delivery_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    _text("webhook_id", 36),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    _time("attempted_at"),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("latency_ms", sa.Float, nullable=False),
    _text("response", 1024, nullable=True),
    sa.Column("error", sa.Text),
    sa.Index("webhook_attempts_by_webhook", "webhook_id", "id"),
)
"""One POST of a delivery: the status, the latency, the first KiB of the answer, the error."""
idempotency_table = sa.Table(
    "idempotency_keys",
    metadata,
    _application(primary_key=True),
    _text("key", 64, primary_key=True),  # the SHA-256 of the Idempotency-Key header
    _text("fingerprint", 64),  # the SHA-256 of the method, path and body
    _text("state", 10),  # in_flight, done
    sa.Column("locked_until", sa.Float, nullable=False),
    sa.Column("status", sa.Integer),
    _json("headers", nullable=True),
    sa.Column("body", sa.LargeBinary),
    sa.Column("expires_at", sa.Float, nullable=False),
    _time(),
    sa.Index("idempotency_keys_by_expiry", "application_id", "expires_at"),
)
"""A POST's ``Idempotency-Key`` and its first answer, remembered for a day per application;
``in_flight`` while the first request runs (until ``locked_until``: a process that died
meanwhile lets a retry take over)."""
application_secrets_table = sa.Table(
    "application_secrets",
    metadata,
    _application(primary_key=True),
    _text("name", 32, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    _time(),
)
"""Random keys an application made for itself, once: ``consent`` signs unsubscribe and
opt-in tokens with it when the setting ``unsubscribe_secret`` is unset."""

unsubscribe_tokens_table = sa.Table(
    "unsubscribe_tokens",
    metadata,
    _serial(),
    _application(),
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False),
    _text("address", 320),
    _text("token_key", 16),
    # the stored copy (messages.id) of the last send that carried the link; no foreign
    # key: a deleted message leaves it dangling, and on_unsubscribe is then not queued
    _text("message_id", 36, nullable=True),
    _time("unsubscribed_at", nullable=True),
    _text("via", 12, nullable=True),
    _time(),
    sa.Index("unsubscribe_tokens_by_recipient", "grant_id", "address", unique=True),
    sa.Index("unsubscribe_tokens_by_key", "application_id", "token_key"),
)
"""The recipients of a grant's bulk and campaign mail, each with the key of its one
unsubscribe token (``model/consent.py``), and whether and how it unsubscribed."""

opt_ins_table = sa.Table(
    "opt_ins",
    metadata,
    _serial(),
    _application(),
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False),
    _text("address", 320),
    _text("status", 10),  # pending, confirmed
    _text("token_key", 16),  # the nonce of the last request's token
    _text("header_message_id", 998, nullable=True),  # the confirmation mail's Message-ID
    _time("requested_at"),
    _time("expires_at"),
    _time("confirmed_at", nullable=True),
    _text("via", 8, nullable=True),  # link, reply
    sa.Index("opt_ins_by_recipient", "grant_id", "address", unique=True),
    sa.Index("opt_ins_by_key", "application_id", "token_key"),
    sa.Index("opt_ins_by_confirmation", "application_id", "header_message_id"),
)
"""Double opt-in per grant and recipient: a confirmation pending until ``expires_at``
(past it, expired), or confirmed. Only confirmed recipients get ``campaign`` mail."""

lists_table = sa.Table(
    "lists",
    metadata,
    _id(),
    _application(),
    _text("name", 200),
    _text("type", 8),  # address, domain, tld
    sa.Column("size", sa.Integer, nullable=False, default=0),
    sa.Column("revision", sa.Integer, nullable=False, default=1),
    _time(),
    _time("updated_at"),
    sa.UniqueConstraint("application_id", "name"),
)
"""A named list of addresses, domains or top-level domains; ``revision`` counts the
changes of its entries (the runtime reloads a list whose revision moved)."""

list_entries_table = sa.Table(
    "list_entries",
    metadata,
    _fk("list_id", "lists.id", ondelete="CASCADE", index=False, primary_key=True),
    _text("value", 320, primary_key=True),
)
"""One entry of a list, in its normal form (``model/lists.normalize_entry``)."""

rules_table = sa.Table(
    "rules",
    metadata,
    _id(),
    _application(index=True),
    sa.Column(
        "workspace_id",
        sa.String(36),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    ),
    _text("name", 200),
    _text("trigger", 8),  # inbound, outbound
    sa.Column("priority", sa.Integer, nullable=False),
    _text("match", 3),  # all, any
    _json("conditions"),  # [Condition.as_json()]: lists by id, never copied
    _text("action", 16),
    _text("folder", 20, nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    _time(),
    _time("updated_at"),
)
"""A rule of the application (``workspace_id`` NULL) or of one workspace."""

policy_versions_table = sa.Table(
    "policy_versions",
    metadata,
    _application(primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)
"""Bumped by every change of a list or a rule: what every worker's cache compares."""

rule_evaluations_table = sa.Table(
    "rule_evaluations",
    metadata,
    _serial(),
    _application(),
    _fk("grant_id", "grants.id", ondelete="CASCADE", index=False),
    _text("rule_id", 36),  # no key: the record outlives a deleted rule
    _text("rule_name", 200),
    _text("action", 16),
    _text("trigger", 8),
    # the stored message's id (inbound), the Message-ID of the send (outbound), or None
    _text("message_ref", 998, nullable=True),
    _json("detail"),  # {"stage": "rcpt"|"data"|..., "sender", "recipients", "subject"}
    _time(),
    sa.Index("rule_evaluations_by_grant", "grant_id", "id"),
)
"""A rule that matched a message of a grant: which, what it did, when."""

retention_sweeps_table = sa.Table(
    "retention_sweeps",
    metadata,
    _application(primary_key=True),
    sa.Column("next_at", sa.Float, nullable=False),  # epoch seconds
    _text("holder", 64, nullable=True),
    _time("updated_at"),
)
"""When the application's next retention sweep is due, and which worker took the last
one: a sweep is claimed by moving ``next_at`` on (compare and set), so one worker
sweeps each round however many run."""
