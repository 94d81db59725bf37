"""Idempotency keys: a POST's ``Idempotency-Key`` and the first answer to it, per application.

A key is claimed before the request acts (:func:`claim`, its own committed
transaction): the row is ``in_flight`` until :func:`complete` stores the
answer (``done``), or :func:`release` forgets it (an answer not worth
keeping, such as a 429, or a failure). A claim finds one of four things:

- nothing (or an expired row): the caller acts (``new``);
- the same request, answered: the stored answer (``replay``);
- another request under the same key: ``reused``;
- the same request still in flight: ``in_flight``, until its lock runs out
  (``locked_until``): a process that died mid-way lets a retry take over.

Keys and fingerprints are stored as SHA-256 digests. Rows live ``ttl``
seconds after their answer; :func:`sweep` deletes the expired ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from .dialect import insert
from .scope import Tx
from .tables import idempotency_table, utcnow

__all__ = ["Claim", "ClaimOutcome", "claim", "complete", "digest", "release", "sweep"]

_keys = idempotency_table


def digest(value: str | bytes) -> str:
    """The SHA-256 of ``value`` in hex: how keys and fingerprints are stored."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


class ClaimOutcome(StrEnum):
    """What a claim found."""

    NEW = "new"
    REPLAY = "replay"
    REUSED = "reused"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :func:`claim`; a ``replay`` carries the stored answer."""

    outcome: ClaimOutcome
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    locked_until: float | None = None
    """``in_flight``: when the first request's lock runs out (epoch seconds)."""


def claim(tx: Tx, key: str, fingerprint: str, *, now: float, lock: float, ttl: float) -> Claim:
    """Claim the key digest ``key`` for the request ``fingerprint`` (see the module)."""
    conn = tx.conn
    values: dict[str, Any] = {
        "application_id": tx.application_id,
        "key": key,
        "fingerprint": fingerprint,
        "state": "in_flight",
        "locked_until": now + lock,
        "status": None,
        "headers": None,
        "body": None,
        "expires_at": now + ttl,
        "created_at": utcnow(),
    }
    inserted = conn.execute(
        insert(conn, _keys).values(values).on_conflict_do_nothing().returning(_keys.c.key)
    ).first()
    if inserted is not None:
        return Claim(ClaimOutcome.NEW)
    row = conn.execute(
        sa.select(_keys)
        .where(_keys.c.application_id == tx.application_id, _keys.c.key == key)
        .with_for_update()
    ).first()
    if (
        row is None
        or row.expires_at <= now
        or (row.state == "in_flight" and row.locked_until <= now and row.fingerprint == fingerprint)
    ):
        # expired, or abandoned by a process that died: this request takes it over
        conn.execute(
            sa.update(_keys)
            .where(_keys.c.application_id == tx.application_id, _keys.c.key == key)
            .values({k: v for k, v in values.items() if k not in ("application_id", "key")})
        )
        return Claim(ClaimOutcome.NEW)
    if row.fingerprint != fingerprint:
        return Claim(ClaimOutcome.REUSED)
    if row.state == "in_flight":
        return Claim(ClaimOutcome.IN_FLIGHT, locked_until=row.locked_until)
    return Claim(
        ClaimOutcome.REPLAY,
        status=row.status,
        headers=tuple((str(name), str(value)) for name, value in row.headers or ()),
        body=row.body or b"",
    )


def complete(
    tx: Tx,
    key: str,
    *,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    now: float,
    ttl: float,
) -> None:
    """Store the answer to the request that claimed ``key``; kept ``ttl`` seconds."""
    tx.conn.execute(
        sa.update(_keys)
        .where(_keys.c.application_id == tx.application_id, _keys.c.key == key)
        .values(
            state="done",
            status=status,
            headers=[list(pair) for pair in headers],
            body=body,
            expires_at=now + ttl,
        )
    )


def release(tx: Tx, key: str) -> None:
    """Forget a claim still in flight (its answer is not kept: a retry acts again)."""
    tx.conn.execute(
        sa.delete(_keys).where(
            _keys.c.application_id == tx.application_id,
            _keys.c.key == key,
            _keys.c.state == "in_flight",
        )
    )


def sweep(tx: Tx, *, now: float) -> int:
    """Delete the application's expired keys; how many."""
    result = tx.conn.execute(
        sa.delete(_keys).where(
            _keys.c.application_id == tx.application_id, _keys.c.expires_at < now
        )
    )
    return int(result.rowcount or 0)
