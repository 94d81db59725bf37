"""Webhook subscriptions of an application: their endpoints, filters, secrets and
state, their deliveries and attempts as listed, replay and retention.

Every function takes the caller's :class:`~mailfleet.store.scope.Tx` and is
limited to its application. How the outbox reaches the deliveries, and how
they are claimed and recorded, is :mod:`mailfleet.store.webhook_lanes`; the
helpers both share (the filter of a row, the commit bound, lanes opened and
woken) are here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..model.errors import InvalidInput, WebhookNotFound
from ..model.webhooks import (
    DeliveryStatus,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookFilter,
    WebhookStatus,
)
from .scope import Tx
from .tables import (
    events_table,
    grants_table,
    new_id,
    utcnow,
    webhook_attempts_table,
    webhook_deliveries_table,
    webhook_lanes_table,
    webhooks_table,
)
from .timestamps import aware

__all__ = [
    "applications_with_webhooks",
    "commit_bound",
    "create_webhook",
    "delete_webhook",
    "filter_of",
    "get_webhook",
    "list_attempts",
    "list_deliveries",
    "list_webhooks",
    "open_lanes",
    "prune",
    "replay_deliveries",
    "replay_events",
    "rotate_secret",
    "signing_secrets",
    "this_webhook",
    "update_webhook",
    "wake_lanes",
    "workspaces_of",
]

_hooks = webhooks_table
_lanes = webhook_lanes_table
_deliveries = webhook_deliveries_table
_attempts = webhook_attempts_table
_events = events_table
_grants = grants_table

_NO_BOUND = 2**62
"""SQLite's bound on ``txid``: every event is committed in id order (txid 0)."""


# -- subscriptions ----------------------------------------------------------------------


def filter_of(row: Any) -> WebhookFilter:
    """The filter of a subscription's row."""
    return WebhookFilter(tuple(row.event_types), tuple(row.workspaces), tuple(row.grants))


def _valid_until(secrets: Sequence[dict[str, Any]], now: float) -> tuple[datetime | None, ...]:
    return tuple(
        None if s["expires_at"] is None else datetime.fromtimestamp(s["expires_at"], UTC)
        for s in secrets
        if s["expires_at"] is None or s["expires_at"] > now
    )


def _webhook(row: Any, now: float) -> Webhook:
    return Webhook(
        id=row.id,
        application_id=row.application_id,
        url=row.url,
        description=row.description,
        filter=filter_of(row),
        status=WebhookStatus(row.status),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        consecutive_failures=row.consecutive_failures,
        failing_since=None if row.failing_since is None else aware(row.failing_since),
        last_error=row.last_error,
        secrets_valid_until=_valid_until(row.secrets, now),
    )


def commit_bound(tx: Tx) -> int:
    """Events with a ``txid`` below this are all committed (or gone) for good."""
    if tx.conn.dialect.name != "postgresql":
        return _NO_BOUND
    value = tx.conn.exec_driver_sql(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    ).scalar_one()
    return int(value)


def create_webhook(
    tx: Tx,
    *,
    url: str,
    description: str | None,
    filter: WebhookFilter,
    secret: str,
    now: float,
) -> Webhook:
    """A new subscription, active, that receives the events recorded from now on."""
    conn = tx.conn
    latest = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(_events.c.id), 0)).where(
            _events.c.application_id == tx.application_id
        )
    ).scalar_one()
    bound = commit_bound(tx)
    # Everything below the bound is older than the subscription; above it, the ids tell.
    cursor_txid, cursor_event = (0, int(latest)) if bound == _NO_BOUND else (bound - 1, _NO_BOUND)
    stamp = utcnow()
    webhook_id = new_id()
    conn.execute(
        sa.insert(_hooks).values(
            id=webhook_id,
            application_id=tx.application_id,
            url=url,
            description=description,
            event_types=list(filter.event_types),
            workspaces=list(filter.workspaces),
            grants=list(filter.grants),
            status=WebhookStatus.ACTIVE.value,
            secrets=[{"secret": secret, "expires_at": None}],
            cursor_txid=cursor_txid,
            cursor_event=cursor_event,
            start_after=int(latest),
            consecutive_failures=0,
            retry_at=0.0,
            created_at=stamp,
            updated_at=stamp,
        )
    )
    return get_webhook(tx, webhook_id, now=now)


def this_webhook(tx: Tx, webhook_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    """The conditions that name one subscription of the application."""
    return (_hooks.c.application_id == tx.application_id, _hooks.c.id == webhook_id)


def _row(tx: Tx, webhook_id: str, *, lock: bool = False) -> Any:
    query = sa.select(_hooks).where(
        _hooks.c.application_id == tx.application_id, _hooks.c.id == webhook_id
    )
    if lock:
        query = query.with_for_update()
    row = tx.conn.execute(query).first()
    if row is None:
        raise WebhookNotFound(webhook_id)
    return row


def get_webhook(tx: Tx, webhook_id: str, *, now: float) -> Webhook:
    """A subscription by id; :class:`~mailfleet.WebhookNotFound` otherwise."""
    return _webhook(_row(tx, webhook_id), now)


def list_webhooks(tx: Tx, *, now: float) -> list[Webhook]:
    """The application's subscriptions, oldest first."""
    rows = tx.conn.execute(
        sa.select(_hooks)
        .where(_hooks.c.application_id == tx.application_id)
        .order_by(_hooks.c.created_at, _hooks.c.id)
    )
    return [_webhook(row, now) for row in rows]


def update_webhook(
    tx: Tx,
    webhook_id: str,
    *,
    now: float,
    url: str | None = None,
    description: str | None = None,
    filter: WebhookFilter | None = None,
    status: WebhookStatus | None = None,
    clear_description: bool = False,
) -> Webhook:
    """Change a subscription's endpoint, description, filter or status.

    ``active`` on a failing or disabled subscription re-enables it: its
    failures are forgotten and its lanes due at once (a disabled one's cursor
    continues where it stopped, so no event is missed). ``disabled`` stops
    its deliveries; ``failing`` is the runtime's verdict, not to be set.
    """
    row = _row(tx, webhook_id, lock=True)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if url is not None:
        values["url"] = url
    if description is not None or clear_description:
        values["description"] = description
    if filter is not None:
        values.update(
            event_types=list(filter.event_types),
            workspaces=list(filter.workspaces),
            grants=list(filter.grants),
        )
    if status is not None:
        if status is WebhookStatus.FAILING:
            raise InvalidInput(
                "status", "failing is the delivery's verdict: set active or disabled", value=status
            )
        values["status"] = status.value
        if status is WebhookStatus.ACTIVE and row.status != WebhookStatus.ACTIVE:
            values.update(consecutive_failures=0, failing_since=None, retry_at=0.0, last_error=None)
            wake_lanes(tx, webhook_id, now)
    tx.conn.execute(sa.update(_hooks).where(*this_webhook(tx, row.id)).values(**values))
    return get_webhook(tx, webhook_id, now=now)


def delete_webhook(tx: Tx, webhook_id: str) -> bool:
    """Delete a subscription with its lanes, deliveries and attempts; whether it existed."""
    conn = tx.conn
    found = conn.execute(
        sa.select(_hooks.c.id).where(
            _hooks.c.application_id == tx.application_id, _hooks.c.id == webhook_id
        )
    ).first()
    if found is None:
        return False
    # Children first: SQLite's cascades need foreign keys on, PostgreSQL's cost the same.
    deliveries = sa.select(_deliveries.c.id).where(_deliveries.c.webhook_id == webhook_id)
    conn.execute(
        sa.delete(_attempts).where(
            _attempts.c.application_id == tx.application_id,
            _attempts.c.delivery_id.in_(deliveries),
        )
    )
    for table in (_deliveries, _lanes):
        conn.execute(
            sa.delete(table).where(
                table.c.application_id == tx.application_id, table.c.webhook_id == webhook_id
            )
        )
    conn.execute(sa.delete(_hooks).where(*this_webhook(tx, webhook_id)))
    return True


def rotate_secret(tx: Tx, webhook_id: str, secret: str, *, grace: float, now: float) -> Webhook:
    """Make ``secret`` the signing secret; the ones in use keep signing beside it for
    ``grace`` seconds (or until they expire, if sooner), then stop."""
    row = _row(tx, webhook_id, lock=True)
    until = now + grace
    kept = [
        {
            "secret": s["secret"],
            "expires_at": until if s["expires_at"] is None else min(s["expires_at"], until),
        }
        for s in row.secrets
        if (s["expires_at"] is None or s["expires_at"] > now) and grace > 0
    ]
    tx.conn.execute(
        sa.update(_hooks)
        .where(*this_webhook(tx, row.id))
        .values(secrets=[{"secret": secret, "expires_at": None}, *kept], updated_at=utcnow())
    )
    return get_webhook(tx, webhook_id, now=now)


def signing_secrets(secrets: Sequence[dict[str, Any]], now: float) -> tuple[str, ...]:
    """The secrets that sign now: the current one first."""
    return tuple(s["secret"] for s in secrets if s["expires_at"] is None or s["expires_at"] > now)


# -- fan-out ------------------------------------------------------------------------------


def deliveries_of(
    tx: Tx, webhook_id: str, wanted: WebhookFilter, rows: Sequence[Any], stamp: datetime
) -> list[dict[str, Any]]:
    """The delivery rows of the event ``rows`` (``id``, ``grant_id``, ``type``, and
    ``payload`` when the filter names workspaces) that ``wanted`` lets through."""
    workspace_of = workspaces_of(tx, rows) if wanted.needs_workspace else {}
    deliveries = []
    for event in rows:
        workspace = None
        if wanted.needs_workspace:
            workspace = (event.payload or {}).get("workspace_id") or workspace_of.get(
                event.grant_id
            )
        if wanted.matches(event.type, event.grant_id, workspace):
            deliveries.append(
                {
                    "application_id": tx.application_id,
                    "webhook_id": webhook_id,
                    "event_id": event.id,
                    "grant_key": event.grant_id or "",
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "created_at": stamp,
                }
            )
    return deliveries


def workspaces_of(tx: Tx, rows: Sequence[Any]) -> dict[str | None, str]:
    """The workspace of each grant the event rows name (for a workspace filter)."""
    grant_ids = sorted({r.grant_id for r in rows if r.grant_id is not None})
    found: dict[str | None, str] = {}
    for start in range(0, len(grant_ids), 500):
        chunk = grant_ids[start : start + 500]
        grants = tx.conn.execute(
            sa.select(_grants.c.id, _grants.c.workspace_id).where(
                _grants.c.application_id == tx.application_id, _grants.c.id.in_(chunk)
            )
        )
        found.update((grant.id, grant.workspace_id) for grant in grants)
    return found


def open_lanes(tx: Tx, webhook_id: str, keys: Iterable[str], now: float) -> None:
    """Make sure each lane exists; an existing one keeps its schedule. The upsert
    locks an existing lane, so a claim cannot find it empty and drop it meanwhile."""
    from .dialect import insert

    statement = insert(tx.conn, _lanes)
    statement = statement.on_conflict_do_update(
        index_elements=[_lanes.c.webhook_id, _lanes.c.grant_key],
        set_={"failures": statement.excluded.failures + _lanes.c.failures},
    )
    tx.conn.execute(
        statement,
        [
            {
                "application_id": tx.application_id,
                "webhook_id": webhook_id,
                "grant_key": key,
                "next_attempt_at": now,
                "failures": 0,
                "lease_owner": None,
                "lease_until": 0.0,
            }
            for key in sorted(keys)
        ],
    )


def wake_lanes(tx: Tx, webhook_id: str, now: float) -> None:
    """Make every waiting lane of a subscription due now (its endpoint is back)."""
    tx.conn.execute(
        sa.update(_lanes)
        .where(
            _lanes.c.application_id == tx.application_id,
            _lanes.c.webhook_id == webhook_id,
            _lanes.c.next_attempt_at > now,
        )
        .values(next_attempt_at=now, failures=0)
    )


def applications_with_webhooks(conn: sa.Connection) -> set[str]:
    """The ids of the applications that have an enabled subscription: the one question
    asked across applications, by a process that delivers for all of them."""
    return set(
        conn.execute(
            sa.select(_hooks.c.application_id)
            .where(_hooks.c.status != WebhookStatus.DISABLED.value)
            .distinct()
        ).scalars()
    )


def prune(tx: Tx, *, before: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` deliveries delivered before ``before``, with their attempts
    (pending ones are kept, whatever their age); how many."""
    conn = tx.conn
    ids = list(
        conn.execute(
            sa.select(_deliveries.c.id)
            .where(
                _deliveries.c.application_id == tx.application_id,
                _deliveries.c.status == DeliveryStatus.DELIVERED.value,
                _deliveries.c.delivered_at < before,
            )
            .order_by(_deliveries.c.id)
            .limit(limit)
        ).scalars()
    )
    if ids:
        conn.execute(
            sa.delete(_attempts).where(
                _attempts.c.application_id == tx.application_id, _attempts.c.delivery_id.in_(ids)
            )
        )
        conn.execute(
            sa.delete(_deliveries).where(
                _deliveries.c.application_id == tx.application_id, _deliveries.c.id.in_(ids)
            )
        )
    return len(ids)


# -- listing and replay -----------------------------------------------------------------------


def list_deliveries(
    tx: Tx,
    webhook_id: str,
    *,
    status: DeliveryStatus | None = None,
    before: int | None = None,
    event_id: int | None = None,
    limit: int = 100,
) -> list[WebhookDelivery]:
    """A subscription's deliveries, newest first (``before``: the last id of the
    previous page)."""
    _row(tx, webhook_id)
    query = (
        sa.select(
            _deliveries,
            _events.c.type,
            _events.c.grant_id,
            _lanes.c.next_attempt_at,
        )
        .join(_events, _events.c.id == _deliveries.c.event_id)
        .outerjoin(
            _lanes,
            sa.and_(
                _lanes.c.webhook_id == _deliveries.c.webhook_id,
                _lanes.c.grant_key == _deliveries.c.grant_key,
                _deliveries.c.status == DeliveryStatus.PENDING.value,
            ),
        )
        .where(
            _deliveries.c.application_id == tx.application_id,
            _deliveries.c.webhook_id == webhook_id,
        )
        .order_by(_deliveries.c.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(_deliveries.c.status == DeliveryStatus(status).value)
    if before is not None:
        query = query.where(_deliveries.c.id < before)
    if event_id is not None:
        query = query.where(_deliveries.c.event_id == event_id)
    return [
        WebhookDelivery(
            id=row.id,
            webhook_id=row.webhook_id,
            event_id=row.event_id,
            event_type=row.type,
            grant_id=row.grant_id,
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            created_at=aware(row.created_at),
            next_attempt_at=None
            if row.next_attempt_at is None
            else datetime.fromtimestamp(row.next_attempt_at, UTC),
            delivered_at=None if row.delivered_at is None else aware(row.delivered_at),
            last_status_code=row.last_status_code,
            last_error=row.last_error,
        )
        for row in tx.conn.execute(query)
    ]


def list_attempts(
    tx: Tx,
    webhook_id: str,
    *,
    delivery_id: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[WebhookAttempt]:
    """A subscription's attempts (of one delivery), newest first."""
    _row(tx, webhook_id)
    query = (
        sa.select(_attempts)
        .where(
            _attempts.c.application_id == tx.application_id,
            _attempts.c.webhook_id == webhook_id,
        )
        .order_by(_attempts.c.id.desc())
        .limit(limit)
    )
    if delivery_id is not None:
        query = query.where(_attempts.c.delivery_id == delivery_id)
    if before is not None:
        query = query.where(_attempts.c.id < before)
    return [
        WebhookAttempt(
            id=row.id,
            delivery_id=row.delivery_id,
            webhook_id=row.webhook_id,
            event_id=row.event_id,
            attempted_at=aware(row.attempted_at),
            ok=row.ok,
            status_code=row.status_code,
            latency_ms=row.latency_ms,
            response=row.response,
            error=row.error,
        )
        for row in tx.conn.execute(query)
    ]


def replay_events(
    tx: Tx,
    webhook_id: str,
    *,
    now: float,
    after_event: int | None = None,
    since: datetime | None = None,
    limit: int = 100_000,
) -> int:
    """Deliver again every event the subscription's filter lets through recorded after
    the event ``after_event`` (or at or after ``since``), up to what it has been fanned
    out so far (later ones come anyway), at most ``limit``: how many were queued.

    Each is a new delivery, behind those already waiting in its grant's lane.
    """
    row = _row(tx, webhook_id, lock=True)
    wanted = filter_of(row)
    conn = tx.conn
    conditions: list[sa.ColumnElement[bool]] = [
        _events.c.application_id == tx.application_id,
        sa.tuple_(_events.c.txid, _events.c.id)
        <= sa.tuple_(sa.literal(row.cursor_txid), sa.literal(row.cursor_event)),
    ]
    if after_event is not None:
        conditions.append(_events.c.id > after_event)
    if since is not None:
        conditions.append(_events.c.created_at >= since)
    columns = [_events.c.id, _events.c.grant_id, _events.c.type]
    if wanted.needs_workspace:
        columns.append(_events.c.payload)
    rows = conn.execute(
        sa.select(*columns).where(*conditions).order_by(_events.c.txid, _events.c.id).limit(limit)
    ).all()
    deliveries = deliveries_of(tx, row.id, wanted, rows, utcnow())
    for start in range(0, len(deliveries), 5000):
        conn.execute(sa.insert(_deliveries), deliveries[start : start + 5000])
    if deliveries:
        open_lanes(tx, row.id, {d["grant_key"] for d in deliveries}, now)
    return len(deliveries)


def replay_deliveries(tx: Tx, webhook_id: str, delivery_ids: Iterable[int], *, now: float) -> int:
    """Deliver again the given deliveries of the subscription (each a new delivery of
    its event, behind those waiting in its lane); how many were queued."""
    row = _row(tx, webhook_id, lock=True)
    wanted = sorted({int(i) for i in delivery_ids})
    if not wanted:
        return 0
    conn = tx.conn
    found: list[Any] = []
    for start in range(0, len(wanted), 500):
        found.extend(
            conn.execute(
                sa.select(_deliveries.c.event_id, _deliveries.c.grant_key)
                .where(
                    _deliveries.c.application_id == tx.application_id,
                    _deliveries.c.webhook_id == row.id,
                    _deliveries.c.id.in_(wanted[start : start + 500]),
                )
                .order_by(_deliveries.c.id)
            ).all()
        )
    stamp = utcnow()
    if found:
        conn.execute(
            sa.insert(_deliveries),
            [
                {
                    "application_id": tx.application_id,
                    "webhook_id": row.id,
                    "event_id": f.event_id,
                    "grant_key": f.grant_key,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "created_at": stamp,
                }
                for f in found
            ],
        )
        open_lanes(tx, row.id, {f.grant_key for f in found}, now)
    return len(found)
