"""Live workers, and the grants no live worker serves.

A worker announces itself (its application and the agent classes it runs)
when it starts, renews the announcement with its leases, and withdraws it
when it stops. From these rows the store can tell which grants of an
application no running process serves: their queues wait, untouched, until
a process serving their class starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.records import Grant
from .dialect import insert
from .grants import grant_rows
from .queue import backlog, served_condition
from .scope import ServedAgents, Tx
from .tables import grants_table, queue_table, utcnow, workers_table

__all__ = [
    "UnservedGrant",
    "announce",
    "count_unserved",
    "live_agents",
    "live_workers",
    "live_workers_anywhere",
    "unserved_grants",
    "withdraw",
]

_workers = workers_table
_grants = grants_table
_queue = queue_table


@dataclass(frozen=True, slots=True)
class UnservedGrant:
    """A grant whose agent class no live worker serves, with the messages it has waiting."""

    grant: Grant
    waiting: int


def announce(tx: Tx, worker: str, *, expires_at: float) -> None:
    """Record (or renew) this worker and the scope's agent classes until ``expires_at``."""
    agents = tx.agents
    statement = insert(tx.conn, _workers).values(
        id=worker,
        application_id=tx.application_id,
        agents=sorted(agents.names),
        serves_unnamed=agents.unnamed,
        started_at=utcnow(),
        expires_at=expires_at,
    )
    tx.conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_workers.c.id],
            set_={
                "expires_at": statement.excluded.expires_at,
                "agents": statement.excluded.agents,
                "serves_unnamed": statement.excluded.serves_unnamed,
            },
        )
    )


def withdraw(tx: Tx, worker: str) -> None:
    """Remove this worker's announcement (it stopped)."""
    tx.conn.execute(
        sa.delete(_workers).where(
            _workers.c.id == worker, _workers.c.application_id == tx.application_id
        )
    )


def live_workers(tx: Tx, *, now: float) -> int:
    """How many workers of the application are alive."""
    return int(
        tx.conn.execute(
            sa.select(sa.func.count()).where(
                _workers.c.application_id == tx.application_id, _workers.c.expires_at > now
            )
        ).scalar_one()
    )


def live_workers_anywhere(conn: Connection, *, now: float) -> int:
    """How many workers of any application are alive: a count, for health checks
    that speak for the store as a whole (it reveals nothing of any application)."""
    query = sa.select(sa.func.count()).where(_workers.c.expires_at > now)
    return int(conn.execute(query).scalar_one())


def live_agents(tx: Tx, *, now: float) -> ServedAgents:
    """The union of the agent classes the application's live workers serve."""
    rows = tx.conn.execute(
        sa.select(_workers.c.agents, _workers.c.serves_unnamed).where(
            _workers.c.application_id == tx.application_id, _workers.c.expires_at > now
        )
    ).all()
    names = {name for row in rows for name in row.agents}
    return ServedAgents.of(names, unnamed=any(row.serves_unnamed for row in rows))


def _unserved(tx: Tx, now: float) -> sa.ColumnElement[bool]:
    served = served_condition(live_agents(tx, now=now))
    owned = _grants.c.application_id == tx.application_id
    if served is None:
        return owned
    return sa.and_(owned, sa.not_(sa.func.coalesce(served, sa.false())))


def count_unserved(tx: Tx, *, now: float) -> tuple[int, int]:
    """How many grants no live worker serves, and how many messages they have waiting."""
    condition = _unserved(tx, now)
    grants = tx.conn.execute(sa.select(sa.func.count()).where(condition)).scalar_one()
    waiting = tx.conn.execute(
        sa.select(sa.func.count())
        .select_from(_queue.join(_grants, _grants.c.id == _queue.c.grant_id))
        .where(condition, _queue.c.status == "ready")
    ).scalar_one()
    return int(grants), int(waiting)


def unserved_grants(
    tx: Tx, *, now: float, limit: int | None = 100, after: str | None = None
) -> list[UnservedGrant]:
    """Grants no live worker serves, by address (after the address ``after``)."""
    condition = _unserved(tx, now)
    if after is not None:
        condition = sa.and_(condition, _grants.c.address > after)
    found = grant_rows(tx, condition, limit=limit)
    if not found:
        return []
    waiting = backlog(tx, (grant.id for grant in found))
    return [UnservedGrant(grant, waiting.get(grant.id, 0)) for grant in found]
