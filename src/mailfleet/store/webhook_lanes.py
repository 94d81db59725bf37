"""Carrying the event outbox to webhook subscriptions: fan-out, lanes, attempts.

Every function takes the caller's :class:`~mailfleet.store.scope.Tx` and is
limited to its application.

**Fan-out.** Each subscription keeps a cursor in the outbox, the last
``(txid, id)`` it took (see ``events_table``): :func:`fan_out` reads the
events after it, in that order, up to the oldest transaction still running
(PostgreSQL), turns those its filter lets through into ``webhook_deliveries``
rows and moves the cursor, in one transaction that holds the subscription's
row (``FOR UPDATE SKIP LOCKED``: one process fans out a subscription at a
time, the others pass it by). A subscription that is disabled is not fanned
out: its cursor waits, and re-enabling it continues where it stopped.

**Lanes.** The deliveries of one grant to one subscription form a lane
(``webhook_lanes``, ``""`` for events of no grant), delivered in ``id`` order:
a process takes a lane under a lease (:func:`claim`, ``FOR UPDATE SKIP
LOCKED``), posts its first deliveries one after the other, stops at the first
failure, and :func:`record_attempts` writes what happened and gives the lane
back, due at once or after its backoff. Different lanes go in parallel, on
any number of processes, and each delivery is posted by one of them at a
time; a process that dies leaves its leases to expire (at-least-once).
"""

from __future__ import annotations

import random as _random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..model.records import Event
from ..model.webhooks import (
    DeliveryStatus,
    FailurePolicy,
    Health,
    WebhookStatus,
    after_attempts,
    retry_delay,
)
from .events import record_many
from .prepared import Prepared
from .scope import Tx
from .tables import (
    events_table,
    utcnow,
    webhook_attempts_table,
    webhook_deliveries_table,
    webhook_lanes_table,
    webhooks_table,
)
from .timestamps import aware
from .webhooks import (
    commit_bound,
    deliveries_of,
    filter_of,
    open_lanes,
    signing_secrets,
    this_webhook,
    wake_lanes,
)

__all__ = [
    "AttemptResult",
    "DueDelivery",
    "LaneDone",
    "LaneWork",
    "WebhookBacklog",
    "backlog",
    "claim",
    "fan_out",
    "has_work",
    "record_attempts",
    "release",
]

_hooks = webhooks_table
_lanes = webhook_lanes_table
_deliveries = webhook_deliveries_table
_attempts = webhook_attempts_table
_events = events_table

# The statements run for every delivery, compiled once (store/prepared.py).
_insert_deliveries = Prepared(
    sa.insert(_deliveries),
    columns=(
        "application_id",
        "webhook_id",
        "event_id",
        "grant_key",
        "status",
        "attempts",
        "created_at",
    ),
)
_insert_attempts = Prepared(
    sa.insert(_attempts),
    columns=(
        "application_id",
        "delivery_id",
        "webhook_id",
        "event_id",
        "attempted_at",
        "ok",
        "status_code",
        "latency_ms",
        "response",
        "error",
    ),
)
_record_delivery = Prepared(
    sa.update(_deliveries)
    .where(
        _deliveries.c.application_id == sa.bindparam("app"),
        _deliveries.c.id == sa.bindparam("d"),
    )
    .values(
        status=sa.bindparam("s"),
        attempts=_deliveries.c.attempts + sa.literal_column("1"),
        last_status_code=sa.bindparam("code"),
        last_error=sa.bindparam("error"),
        delivered_at=sa.bindparam("at"),
    )
)
_give_lane_back = Prepared(
    sa.update(_lanes)
    .where(
        _lanes.c.application_id == sa.bindparam("app"),
        _lanes.c.webhook_id == sa.bindparam("w"),
        _lanes.c.grant_key == sa.bindparam("g"),
        _lanes.c.lease_owner == sa.bindparam("owner"),
    )
    .values(
        failures=sa.bindparam("f"),
        next_attempt_at=sa.bindparam("next"),
        lease_owner=sa.null(),
        lease_until=sa.literal_column("0.0"),
    )
)


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for posting, with its event."""

    id: int
    event: Event
    attempts: int


@dataclass(frozen=True, slots=True)
class LaneWork:
    """A lane claimed for posting: its subscription's endpoint and signing secrets, and
    its first pending deliveries in order."""

    webhook_id: str
    grant_key: str
    url: str
    secrets: tuple[str, ...]
    deliveries: tuple[DueDelivery, ...]
    failures: int
    """Failed tries in a row of its first delivery."""
    healthy: bool = True
    """Whether its endpoint had not failed since its last success, at the claim."""


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One POST and its answer."""

    delivery_id: int
    webhook_id: str
    event_id: int
    ok: bool
    status_code: int | None
    latency_ms: float
    response: str | None
    error: str | None
    at: float
    """When it was made (epoch seconds)."""


@dataclass(frozen=True, slots=True)
class LaneDone:
    """A lane given back: ``failed`` when it stopped at a failed delivery, ``drained``
    when it delivered all it may have had (it is removed if nothing came meanwhile)."""

    webhook_id: str
    grant_key: str
    failed: bool
    drained: bool = False
    healthy: bool = True
    """As the claim found its endpoint (:attr:`LaneWork.healthy`)."""


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """What is left to deliver for the application's enabled subscriptions."""

    pending: int
    """Deliveries not yet answered 2xx."""
    unfanned: bool
    """Whether some event has not reached a subscription's deliveries yet."""
    oldest_waiting: datetime | None
    """When the oldest event not yet delivered was recorded (about: the oldest of the
    first pending delivery's event and the first event each cursor has not reached)."""
    subscriptions: int = 0
    """Enabled subscriptions."""

    @property
    def idle(self) -> bool:
        """Nothing left: every event so far has been delivered."""
        return not self.pending and not self.unfanned

    def lag(self, now: datetime) -> float | None:
        """Seconds the oldest event not yet delivered has waited at ``now``; None when
        nothing waits (or there is no enabled subscription)."""
        if self.oldest_waiting is None:
            return None
        return max((now - self.oldest_waiting).total_seconds(), 0.0)


def fan_out(tx: Tx, *, now: float, limit: int = 1000) -> int:
    """Turn the events after each enabled subscription's cursor into deliveries (up to
    ``limit`` events per subscription); how many deliveries were made."""
    conn = tx.conn
    subscriptions = conn.execute(
        sa.select(
            _hooks.c.id,
            _hooks.c.event_types,
            _hooks.c.workspaces,
            _hooks.c.grants,
            _hooks.c.cursor_txid,
            _hooks.c.cursor_event,
            _hooks.c.start_after,
        )
        .where(
            _hooks.c.application_id == tx.application_id,
            _hooks.c.status != WebhookStatus.DISABLED.value,
        )
        .order_by(_hooks.c.id)
        .with_for_update(skip_locked=True)
    ).all()
    if not subscriptions:
        return 0
    bound = commit_bound(tx)
    made = 0
    stamp = utcnow()
    for sub in subscriptions:
        wanted = filter_of(sub)
        columns = [_events.c.id, _events.c.txid, _events.c.grant_id, _events.c.type]
        if wanted.needs_workspace:
            columns.append(_events.c.payload)
        rows = conn.execute(
            sa.select(*columns)
            .where(
                _events.c.application_id == tx.application_id,
                sa.tuple_(_events.c.txid, _events.c.id)
                > sa.tuple_(sa.literal(sub.cursor_txid), sa.literal(sub.cursor_event)),
                _events.c.txid < bound,
                _events.c.id > sub.start_after,
            )
            .order_by(_events.c.txid, _events.c.id)
            .limit(limit)
        ).all()
        if not rows:
            continue
        deliveries = deliveries_of(tx, sub.id, wanted, rows, stamp)
        if deliveries:
            _insert_deliveries.execute_many(conn, deliveries)
            open_lanes(tx, sub.id, {d["grant_key"] for d in deliveries}, now)
            made += len(deliveries)
        last = rows[-1]
        conn.execute(
            sa.update(_hooks)
            .where(*this_webhook(tx, sub.id))
            .values(cursor_txid=last.txid, cursor_event=last.id)
        )
    return made


# -- claiming and recording -------------------------------------------------------------------


def claim(
    tx: Tx, owner: str, *, now: float, lease: float, lanes: int, per_lane: int
) -> list[LaneWork]:
    """Lease up to ``lanes`` due lanes with their first ``per_lane`` pending deliveries.

    A subscription whose endpoint failed last time gets one lane at most, once
    its ``retry_at`` has come (a probe); a disabled one none. Lanes found empty
    are removed.
    """
    conn = tx.conn
    subs = {
        row.id: row
        for row in conn.execute(
            sa.select(
                _hooks.c.id,
                _hooks.c.url,
                _hooks.c.secrets,
                _hooks.c.consecutive_failures,
                _hooks.c.retry_at,
            ).where(
                _hooks.c.application_id == tx.application_id,
                _hooks.c.status != WebhookStatus.DISABLED.value,
            )
        )
    }
    healthy = [i for i, s in subs.items() if s.consecutive_failures == 0]
    probing = [i for i, s in subs.items() if s.consecutive_failures > 0 and s.retry_at <= now]
    due = sa.select(_lanes.c.webhook_id, _lanes.c.grant_key, _lanes.c.failures).where(
        _lanes.c.application_id == tx.application_id,
        _lanes.c.next_attempt_at <= now,
        _lanes.c.lease_until <= now,
    )
    taken: list[Any] = []
    if healthy:
        taken = [
            *conn.execute(
                due.where(_lanes.c.webhook_id.in_(healthy))
                .order_by(_lanes.c.next_attempt_at)
                .limit(lanes)
                .with_for_update(skip_locked=True)
            )
        ]
    for webhook_id in probing:
        probe = conn.execute(
            due.where(_lanes.c.webhook_id == webhook_id)
            .order_by(_lanes.c.next_attempt_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if probe is None:
            continue
        # Compare-and-set: one process probes the endpoint at a time.
        won = conn.execute(
            sa.update(_hooks)
            .where(*this_webhook(tx, webhook_id), _hooks.c.retry_at <= now)
            .values(retry_at=now + lease)
        ).rowcount
        if won:
            taken.append(probe)
    if not taken:
        return []
    conn.execute(
        sa.update(_lanes)
        .where(
            _lanes.c.application_id == tx.application_id,
            sa.tuple_(_lanes.c.webhook_id, _lanes.c.grant_key).in_(
                [(lane.webhook_id, lane.grant_key) for lane in taken]
            ),
        )
        .values(lease_owner=owner, lease_until=now + lease)
    )
    loaded = _load(tx, [(lane.webhook_id, lane.grant_key) for lane in taken], per_lane)
    work: list[LaneWork] = []
    empty: list[tuple[str, str]] = []
    for lane in taken:
        key = (lane.webhook_id, lane.grant_key)
        items = loaded.get(key)
        if not items:
            empty.append(key)
            continue
        sub = subs[lane.webhook_id]
        work.append(
            LaneWork(
                webhook_id=lane.webhook_id,
                grant_key=lane.grant_key,
                url=sub.url,
                secrets=signing_secrets(sub.secrets, now),
                deliveries=tuple(items),
                failures=lane.failures,
                healthy=sub.consecutive_failures == 0,
            )
        )
    if empty:
        conn.execute(
            sa.delete(_lanes).where(
                _lanes.c.application_id == tx.application_id,
                sa.tuple_(_lanes.c.webhook_id, _lanes.c.grant_key).in_(empty),
            )
        )
    return work


def _load(
    tx: Tx, keys: Sequence[tuple[str, str]], per_lane: int
) -> dict[tuple[str, str], list[DueDelivery]]:
    """The first ``per_lane`` pending deliveries of each lane, with their events."""
    ranked = (
        sa.select(
            _deliveries.c.id,
            _deliveries.c.webhook_id,
            _deliveries.c.grant_key,
            _deliveries.c.event_id,
            _deliveries.c.attempts,
            sa.func.row_number()
            .over(
                partition_by=(_deliveries.c.webhook_id, _deliveries.c.grant_key),
                order_by=_deliveries.c.id,
            )
            .label("place"),
        )
        .where(
            _deliveries.c.application_id == tx.application_id,
            sa.tuple_(_deliveries.c.webhook_id, _deliveries.c.grant_key).in_(keys),
            _deliveries.c.status == DeliveryStatus.PENDING.value,
        )
        .subquery()
    )
    rows = tx.conn.execute(
        sa.select(
            ranked.c.id,
            ranked.c.webhook_id,
            ranked.c.grant_key,
            ranked.c.attempts,
            _events.c.id.label("event_id"),
            _events.c.grant_id,
            _events.c.type,
            _events.c.payload,
            _events.c.created_at,
        )
        .join(
            _events,
            sa.and_(
                _events.c.id == ranked.c.event_id, _events.c.application_id == tx.application_id
            ),
        )
        .where(ranked.c.place <= per_lane)
        .order_by(ranked.c.webhook_id, ranked.c.grant_key, ranked.c.id)
    )
    wanted = set(keys)
    found: dict[tuple[str, str], list[DueDelivery]] = defaultdict(list)
    for row in rows:
        key = (row.webhook_id, row.grant_key)
        if key not in wanted:
            continue
        event = Event(
            id=row.event_id,
            application_id=tx.application_id,
            grant_id=row.grant_id,
            type=row.type,
            payload=row.payload,
            created_at=aware(row.created_at),
        )
        found[key].append(DueDelivery(row.id, event, row.attempts))
    return found


def record_attempts(
    tx: Tx,
    owner: str,
    attempts: Sequence[AttemptResult],
    lanes: Sequence[LaneDone],
    policy: FailurePolicy,
    *,
    now: float,
    random: _random.Random | None = None,
) -> list[tuple[str, WebhookStatus]]:
    """Write attempts and their deliveries' state, give the lanes back (due now, or
    after their backoff when they stopped at a failure), and judge each endpoint:
    the subscriptions that became failing, disabled or active again (their events
    are recorded here)."""
    conn = tx.conn
    stamp = utcnow()
    if attempts:
        # A subscription deleted while its deliveries were in flight takes them along;
        # the lock waits for a deletion under way, and keeps the rows until commit.
        present = set(
            conn.execute(
                sa.select(_deliveries.c.id)
                .where(
                    _deliveries.c.application_id == tx.application_id,
                    _deliveries.c.id.in_(sorted({a.delivery_id for a in attempts})),
                )
                .with_for_update(key_share=True)
            ).scalars()
        )
        attempts = [a for a in attempts if a.delivery_id in present]
    if attempts:
        _insert_attempts.execute_many(
            conn,
            [
                {
                    "application_id": tx.application_id,
                    "delivery_id": a.delivery_id,
                    "webhook_id": a.webhook_id,
                    "event_id": a.event_id,
                    "attempted_at": datetime.fromtimestamp(a.at, UTC),
                    "ok": a.ok,
                    "status_code": a.status_code,
                    "latency_ms": a.latency_ms,
                    "response": a.response,
                    "error": a.error,
                }
                for a in attempts
            ],
        )
        delivered, pending = DeliveryStatus.DELIVERED.value, DeliveryStatus.PENDING.value
        _record_delivery.execute_many(
            conn,
            [
                {
                    "app": tx.application_id,
                    "d": a.delivery_id,
                    "s": delivered if a.ok else pending,
                    "code": a.status_code,
                    "error": a.error,
                    "at": stamp if a.ok else None,
                }
                for a in attempts
            ],
        )
    _give_back(tx, owner, lanes, policy, now, random)
    # Only endpoints that failed now, or had failed before, change state.
    judged = {a.webhook_id for a in attempts if not a.ok}
    judged.update(lane.webhook_id for lane in lanes if not lane.healthy)
    return _judge(tx, [a for a in attempts if a.webhook_id in judged], policy, now, random)


def _give_back(
    tx: Tx,
    owner: str,
    lanes: Sequence[LaneDone],
    policy: FailurePolicy,
    now: float,
    random: _random.Random | None,
) -> None:
    failed = [lane for lane in lanes if lane.failed]
    counts: dict[tuple[str, str], int] = {}
    if failed:
        rows = tx.conn.execute(
            sa.select(_lanes.c.webhook_id, _lanes.c.grant_key, _lanes.c.failures).where(
                _lanes.c.application_id == tx.application_id,
                _lanes.c.webhook_id.in_(sorted({lane.webhook_id for lane in failed})),
                _lanes.c.grant_key.in_(sorted({lane.grant_key for lane in failed})),
            )
        )
        counts = {(r.webhook_id, r.grant_key): r.failures for r in rows}
    drained = [lane for lane in lanes if lane.drained and not lane.failed]
    if drained:
        lanes = _drop_empty(tx, owner, lanes, drained)
    rows_out = []
    for lane in lanes:
        failures = counts.get((lane.webhook_id, lane.grant_key), 0) + 1 if lane.failed else 0
        wait = (
            retry_delay(failures, base=policy.retry_base, maximum=policy.retry_max, random=random)
            if lane.failed
            else 0.0
        )
        rows_out.append(
            {
                "app": tx.application_id,
                "w": lane.webhook_id,
                "g": lane.grant_key,
                "owner": owner,
                "f": failures,
                "next": now + wait,
            }
        )
    _give_lane_back.execute_many(tx.conn, rows_out)


def _drop_empty(
    tx: Tx, owner: str, lanes: Sequence[LaneDone], drained: Sequence[LaneDone]
) -> list[LaneDone]:
    """Remove the drained lanes that have no pending delivery; the lanes left to give back."""
    conn = tx.conn
    pairs = sorted({(lane.webhook_id, lane.grant_key) for lane in drained})
    lane_key = sa.tuple_(_lanes.c.webhook_id, _lanes.c.grant_key)
    mine = [_lanes.c.application_id == tx.application_id, _lanes.c.lease_owner == owner]
    if conn.dialect.name != "postgresql":  # one writer: nothing can come in between
        pending = (
            sa.select(_deliveries.c.id)
            .where(
                _deliveries.c.webhook_id == _lanes.c.webhook_id,
                _deliveries.c.grant_key == _lanes.c.grant_key,
                _deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .exists()
        )
        removed = conn.execute(
            sa.delete(_lanes)
            .where(*mine, lane_key.in_(pairs), ~pending)
            .returning(_lanes.c.webhook_id, _lanes.c.grant_key)
        ).all()
    else:
        # Lock the lanes first, and only then look for deliveries: a later statement
        # sees every fan-out that committed while it waited for the lock (a subquery
        # rechecked after a lock wait would not).
        locked = sa.select(_lanes.c.grant_key).where(*mine, lane_key.in_(pairs))
        conn.execute(locked.with_for_update()).all()
        busy = {
            (row.webhook_id, row.grant_key)
            for row in conn.execute(
                sa.select(_deliveries.c.webhook_id, _deliveries.c.grant_key)
                .where(
                    _deliveries.c.application_id == tx.application_id,
                    sa.tuple_(_deliveries.c.webhook_id, _deliveries.c.grant_key).in_(pairs),
                    _deliveries.c.status == DeliveryStatus.PENDING.value,
                )
                .distinct()
            )
        }
        empty = [pair for pair in pairs if pair not in busy]
        removed = []
        if empty:
            removed = list(
                conn.execute(
                    sa.delete(_lanes)
                    .where(*mine, lane_key.in_(empty))
                    .returning(_lanes.c.webhook_id, _lanes.c.grant_key)
                )
            )
    gone = {(row.webhook_id, row.grant_key) for row in removed}
    return [lane for lane in lanes if (lane.webhook_id, lane.grant_key) not in gone]


def _judge(
    tx: Tx,
    attempts: Sequence[AttemptResult],
    policy: FailurePolicy,
    now: float,
    random: _random.Random | None,
) -> list[tuple[str, WebhookStatus]]:
    by_webhook: dict[str, list[AttemptResult]] = defaultdict(list)
    for attempt in attempts:
        by_webhook[attempt.webhook_id].append(attempt)
    if not by_webhook:
        return []
    rows = tx.conn.execute(
        sa.select(_hooks)
        .where(
            _hooks.c.application_id == tx.application_id,
            _hooks.c.id.in_(sorted(by_webhook)),
        )
        .order_by(_hooks.c.id)
        .with_for_update()
    ).all()
    changed: list[tuple[str, WebhookStatus]] = []
    events: list[tuple[str, tuple[str | None, dict[str, Any]]]] = []
    for row in rows:
        made = sorted(by_webhook[row.id], key=lambda a: a.at)
        before = Health(
            WebhookStatus(row.status),
            row.consecutive_failures,
            None if row.failing_since is None else aware(row.failing_since).timestamp(),
            row.retry_at,
        )
        health, entered = after_attempts(
            before, [(a.ok, a.at) for a in made], policy, now=now, random=random
        )
        last_failure = next((a for a in reversed(made) if not a.ok), None)
        values: dict[str, Any] = {
            "status": health.status.value,
            "consecutive_failures": health.consecutive_failures,
            "failing_since": None
            if health.failing_since is None
            else datetime.fromtimestamp(health.failing_since, UTC),
            "retry_at": health.retry_at,
        }
        if health.consecutive_failures and last_failure is not None:
            values["last_error"] = _describe(last_failure)
        if entered:
            values["updated_at"] = utcnow()
        tx.conn.execute(sa.update(_hooks).where(*this_webhook(tx, row.id)).values(**values))
        if before.consecutive_failures and not health.consecutive_failures:
            wake_lanes(tx, row.id, now)
        for status in entered:
            changed.append((row.id, status))
            kind = {
                WebhookStatus.FAILING: "webhook.failing",
                WebhookStatus.DISABLED: "webhook.disabled",
                WebhookStatus.ACTIVE: "webhook.recovered",
            }[status]
            payload: dict[str, Any] = {
                "webhook_id": row.id,
                "url": row.url,
                "status": status.value,
                "consecutive_failures": health.consecutive_failures,
                "failing_since": values["failing_since"].isoformat()
                if values["failing_since"] is not None
                else None,
            }
            if last_failure is not None and status is not WebhookStatus.ACTIVE:
                payload["last_error"] = _describe(last_failure)
            events.append((kind, (None, payload)))
    for kind, item in events:
        record_many(tx, kind, [item])
    return changed


def _describe(attempt: AttemptResult) -> str:
    if attempt.error:
        return attempt.error
    return f"HTTP {attempt.status_code}"


def release(tx: Tx, owner: str, lanes: Iterable[tuple[str, str]]) -> None:
    """Give back leased lanes untouched (a shutdown before they were posted)."""
    rows = [{"w": w, "g": g} for w, g in lanes]
    if rows:
        tx.conn.execute(
            sa.update(_lanes)
            .where(
                _lanes.c.application_id == tx.application_id,
                _lanes.c.webhook_id == sa.bindparam("w"),
                _lanes.c.grant_key == sa.bindparam("g"),
                _lanes.c.lease_owner == owner,
            )
            .values(lease_owner=None, lease_until=0.0),
            rows,
        )


def has_work(tx: Tx, *, now: float) -> bool:
    """Whether a delivery round would find anything: an enabled subscription with
    events past its cursor, or a lane due (a cheap read before taking the writer)."""
    conn = tx.conn
    subs = conn.execute(
        sa.select(
            _hooks.c.cursor_txid,
            _hooks.c.cursor_event,
            _hooks.c.start_after,
            _hooks.c.consecutive_failures,
            _hooks.c.retry_at,
        ).where(
            _hooks.c.application_id == tx.application_id,
            _hooks.c.status != WebhookStatus.DISABLED.value,
        )
    ).all()
    if not subs:
        return False
    if any(sub.consecutive_failures == 0 or sub.retry_at <= now for sub in subs):
        lane = conn.execute(
            sa.select(_lanes.c.grant_key)
            .where(
                _lanes.c.application_id == tx.application_id,
                _lanes.c.next_attempt_at <= now,
                _lanes.c.lease_until <= now,
            )
            .limit(1)
        ).first()
        if lane is not None:
            return True
    bound = commit_bound(tx)
    for sub in subs:
        behind = conn.execute(
            sa.select(_events.c.id)
            .where(
                _events.c.application_id == tx.application_id,
                sa.tuple_(_events.c.txid, _events.c.id)
                > sa.tuple_(sa.literal(sub.cursor_txid), sa.literal(sub.cursor_event)),
                _events.c.txid < bound,
                _events.c.id > sub.start_after,
            )
            .limit(1)
        ).first()
        if behind is not None:
            return True
    return False


def backlog(tx: Tx) -> WebhookBacklog:
    """What is left to deliver to the enabled subscriptions."""
    conn = tx.conn
    subs = conn.execute(
        sa.select(
            _hooks.c.id, _hooks.c.cursor_txid, _hooks.c.cursor_event, _hooks.c.start_after
        ).where(
            _hooks.c.application_id == tx.application_id,
            _hooks.c.status != WebhookStatus.DISABLED.value,
        )
    ).all()
    if not subs:
        return WebhookBacklog(0, False, None, subscriptions=0)
    pending, first = conn.execute(
        sa.select(sa.func.count(), sa.func.min(_deliveries.c.event_id)).where(
            _deliveries.c.application_id == tx.application_id,
            _deliveries.c.status == DeliveryStatus.PENDING.value,
            _deliveries.c.webhook_id.in_([sub.id for sub in subs]),
        )
    ).one()
    waiting = [] if first is None else [first]
    unfanned = False
    for sub in subs:
        behind = conn.execute(
            sa.select(_events.c.id)
            .where(
                _events.c.application_id == tx.application_id,
                sa.tuple_(_events.c.txid, _events.c.id)
                > sa.tuple_(sa.literal(sub.cursor_txid), sa.literal(sub.cursor_event)),
                _events.c.id > sub.start_after,
            )
            .order_by(_events.c.txid, _events.c.id)
            .limit(1)
        ).scalar()
        if behind is not None:
            unfanned = True
            waiting.append(behind)
    oldest = None
    if waiting:
        oldest = conn.execute(
            sa.select(_events.c.created_at).where(
                _events.c.application_id == tx.application_id, _events.c.id == min(waiting)
            )
        ).scalar()
    return WebhookBacklog(
        int(pending), unfanned, None if oldest is None else aware(oldest), subscriptions=len(subs)
    )
