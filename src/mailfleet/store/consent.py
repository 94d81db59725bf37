"""Consent in the store: the recipients of bulk mail, their unsubscribes, double opt-ins.

Plain functions of a :class:`~mailfleet.store.scope.Tx`, each limited to its
application. The store never sees a whole token: it keeps each token's key,
and the runtime checks the other half (``model/consent.py``) against the rows
found here, in the transaction that then acts on them.

An unsubscribe is recorded the one way, whatever brought it (the one-click
POST or a mail to the ``List-Unsubscribe`` address): the row marked, the
event ``recipient.unsubscribed``, the address suppressed in the grant's
workspace (reason ``unsubscribe``), the grant's opt-in of the address
withdrawn, and a queue entry for the agent's ``on_unsubscribe``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.deliverability import SuppressionReason, Unsubscribe
from .dialect import insert
from .scope import Tx
from .suppressions import NewSuppression, suppress, suppressed
from .tables import (
    application_secrets_table,
    events_table,
    grants_table,
    messages_table,
    opt_ins_table,
    queue_table,
    unsubscribe_tokens_table,
    utcnow,
)
from .timestamps import aware

__all__ = [
    "OptInRow",
    "RecipientToken",
    "RepliedConfirmation",
    "UnsubscribeRow",
    "application_secret",
    "applications_of_token",
    "begin_opt_in",
    "confirm_opt_in",
    "confirm_replies",
    "opt_in_by_key",
    "opt_in_of",
    "opt_ins_of",
    "record_unsubscribe",
    "remember_recipients",
    "still_unsubscribed",
    "unsubscribe_by_key",
]

_secrets = application_secrets_table
_tokens = unsubscribe_tokens_table
_opt = opt_ins_table
_grants = grants_table
_events = events_table
_messages = messages_table
_queue = queue_table


def application_secret(tx: Tx, name: str, *, size: int = 32) -> bytes:
    """The application's random key ``name``, made (``size`` random bytes) the first time
    it is asked for. Every process on the store gets the same key, whichever made it."""
    where = (_secrets.c.application_id == tx.application_id, _secrets.c.name == name)
    found = tx.conn.execute(sa.select(_secrets.c.value).where(*where)).scalar()
    if found is not None:
        return bytes(found)
    tx.conn.execute(
        insert(tx.conn, _secrets)
        .values(
            application_id=tx.application_id,
            name=name,
            value=os.urandom(size),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["application_id", "name"])
    )
    return bytes(tx.conn.execute(sa.select(_secrets.c.value).where(*where)).scalar_one())


# -- unsubscribes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientToken:
    """A recipient of a bulk or campaign send, to remember with its token's key."""

    grant_id: str
    address: str
    token_key: str
    message_id: str
    """The stored copy of the send (``messages.id``)."""


@dataclass(frozen=True, slots=True)
class UnsubscribeRow:
    """A recipient of a grant's bulk mail, as an unsubscribe finds it."""

    id: int
    grant_id: str
    address: str
    sender: str
    """The grant's address."""
    workspace_id: str
    message_id: str | None
    unsubscribed_at: datetime | None
    via: str | None


def remember_recipients(tx: Tx, recipients: Sequence[RecipientToken]) -> None:
    """Keep each recipient's token key, and the send that carried it last."""
    if not recipients:
        return
    now = utcnow()
    statement = insert(tx.conn, _tokens)
    statement = statement.on_conflict_do_update(
        index_elements=[_tokens.c.grant_id, _tokens.c.address],
        # the key changes only with the signing key: the latest link is the one that works
        set_={
            "message_id": statement.excluded.message_id,
            "token_key": statement.excluded.token_key,
        },
    )
    rows = {
        (r.grant_id, r.address): {
            "application_id": tx.application_id,
            "grant_id": r.grant_id,
            "address": r.address,
            "token_key": r.token_key,
            "message_id": r.message_id,
            "created_at": now,
        }
        for r in recipients
    }
    tx.conn.execute(statement, [rows[key] for key in sorted(rows)])  # one lock order


def applications_of_token(conn: Connection, kind: str, token_key: str) -> list[str]:
    """The applications holding a token with this lookup key (``kind``: ``unsubscribe``
    or ``opt_in``): the one unscoped read of consent, for links that carry no key of
    their application. The token is verified by that application's scoped read next."""
    table = _tokens if kind == "unsubscribe" else _opt
    query = (
        sa.select(table.c.application_id)
        .where(table.c.token_key == token_key)
        .distinct()
        .order_by(table.c.application_id)
    )
    return list(conn.execute(query).scalars())


def unsubscribe_by_key(tx: Tx, token_key: str) -> list[UnsubscribeRow]:
    """The application's recipients whose token has this key (almost always one)."""
    rows = tx.conn.execute(
        sa.select(
            _tokens.c.id,
            _tokens.c.grant_id,
            _tokens.c.address,
            _tokens.c.message_id,
            _tokens.c.unsubscribed_at,
            _tokens.c.via,
            _grants.c.address.label("sender"),
            _grants.c.workspace_id,
        )
        .join(_grants, _grants.c.id == _tokens.c.grant_id)
        .where(
            _tokens.c.application_id == tx.application_id,
            _grants.c.application_id == tx.application_id,
            _tokens.c.token_key == token_key,
        )
        .order_by(_tokens.c.id)
    )
    return [
        UnsubscribeRow(
            id=row.id,
            grant_id=row.grant_id,
            address=row.address,
            sender=row.sender,
            workspace_id=row.workspace_id,
            message_id=row.message_id,
            unsubscribed_at=None if row.unsubscribed_at is None else aware(row.unsubscribed_at),
            via=row.via,
        )
        for row in rows
    ]


def still_unsubscribed(tx: Tx, row: UnsubscribeRow) -> bool:
    """Whether ``row`` unsubscribed and its address is still suppressed for its workspace
    (an operator may have lifted it since: then a new unsubscribe counts)."""
    if row.unsubscribed_at is None:
        return False
    return bool(suppressed(tx, [row.address], workspace_id=row.workspace_id))


def record_unsubscribe(tx: Tx, row: UnsubscribeRow, *, via: str) -> UnsubscribeRow | None:
    """Unsubscribe ``row`` (see the module docstring); the row as it now is, or None when
    another transaction recorded it first (read the row again)."""
    now = utcnow()
    marked = tx.conn.execute(
        sa.update(_tokens)
        .where(
            _tokens.c.application_id == tx.application_id,
            _tokens.c.id == row.id,
            _tokens.c.unsubscribed_at.is_(None)
            if row.unsubscribed_at is None
            else _tokens.c.unsubscribed_at == row.unsubscribed_at,
        )
        .values(unsubscribed_at=now, via=via)
    )
    if marked.rowcount != 1:
        return None
    # The send that carried the link, if its stored copy is still there: on_unsubscribe
    # is queued on it, as on_bounce is on the send that bounced.
    sent = None
    if row.message_id is not None:
        sent = tx.conn.execute(
            sa.select(_messages.c.message_id).where(
                _messages.c.application_id == tx.application_id,
                _messages.c.id == row.message_id,
            )
        ).first()
    header_message_id = None if sent is None else sent.message_id
    payload = {
        "grant_id": row.grant_id,
        "workspace_id": row.workspace_id,
        "recipient": row.address,
        "sender": row.sender,
        "via": via,
        "header_message_id": header_message_id,
    }
    event_id = _event(tx, "recipient.unsubscribed", row.grant_id, payload, now)
    suppress(
        tx,
        [
            NewSuppression(
                row.address,
                SuppressionReason.UNSUBSCRIBE,
                f"unsubscribed ({via.replace('_', '-')}) from the mail of {row.sender}",
                row.workspace_id,
                event_id,
            )
        ],
    )
    tx.conn.execute(
        sa.delete(_opt).where(
            _opt.c.application_id == tx.application_id,
            _opt.c.grant_id == row.grant_id,
            _opt.c.address == row.address,
        )
    )
    if sent is not None:
        record = Unsubscribe(row.address, via, header_message_id, row.workspace_id, now)
        tx.conn.execute(
            sa.insert(_queue).values(
                application_id=tx.application_id,
                grant_id=row.grant_id,
                message_id=row.message_id,
                kind="unsubscribe",
                payload=record.as_payload(),
                status="ready",
                attempts=0,
                created_at=now,
            )
        )
    return UnsubscribeRow(
        id=row.id,
        grant_id=row.grant_id,
        address=row.address,
        sender=row.sender,
        workspace_id=row.workspace_id,
        message_id=row.message_id,
        unsubscribed_at=now,
        via=via,
    )


# -- double opt-in ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptInRow:
    """A recipient's opt-in for one grant, as stored."""

    id: int
    grant_id: str
    address: str
    sender: str
    status: str
    """``pending`` or ``confirmed`` (a pending one past ``expires_at`` has expired)."""
    token_key: str
    header_message_id: str | None
    requested_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None
    via: str | None

    def expired(self, now: datetime) -> bool:
        """Whether this is a confirmation that went unanswered past its expiry."""
        return self.status == "pending" and self.expires_at <= now


def _opt_in_select() -> sa.Select[Any]:
    return sa.select(
        _opt.c.id,
        _opt.c.grant_id,
        _opt.c.address,
        _opt.c.status,
        _opt.c.token_key,
        _opt.c.header_message_id,
        _opt.c.requested_at,
        _opt.c.expires_at,
        _opt.c.confirmed_at,
        _opt.c.via,
        _grants.c.address.label("sender"),
    ).join(_grants, _grants.c.id == _opt.c.grant_id)


def _scoped(tx: Tx) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        _opt.c.application_id == tx.application_id,
        _grants.c.application_id == tx.application_id,
    )


def _opt_in_row(row: Any) -> OptInRow:
    return OptInRow(
        id=row.id,
        grant_id=row.grant_id,
        address=row.address,
        sender=row.sender,
        status=row.status,
        token_key=row.token_key,
        header_message_id=row.header_message_id,
        requested_at=aware(row.requested_at),
        expires_at=aware(row.expires_at),
        confirmed_at=None if row.confirmed_at is None else aware(row.confirmed_at),
        via=row.via,
    )


def opt_in_of(tx: Tx, grant_id: str, address: str) -> OptInRow | None:
    """The opt-in of ``address`` for ``grant_id``, if one was ever requested."""
    row = tx.conn.execute(
        _opt_in_select().where(*_scoped(tx), _opt.c.grant_id == grant_id, _opt.c.address == address)
    ).first()
    return None if row is None else _opt_in_row(row)


def opt_ins_of(tx: Tx, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], OptInRow]:
    """The opt-ins of these (grant id, address) pairs that were requested."""
    wanted = set(pairs)
    if not wanted:
        return {}
    found: dict[tuple[str, str], OptInRow] = {}
    by_grant: dict[str, set[str]] = {}
    for grant_id, address in wanted:
        by_grant.setdefault(grant_id, set()).add(address)
    for grant_id, addresses in sorted(by_grant.items()):
        rows = tx.conn.execute(
            _opt_in_select().where(
                *_scoped(tx), _opt.c.grant_id == grant_id, _opt.c.address.in_(sorted(addresses))
            )
        )
        for row in rows:
            found[(row.grant_id, row.address)] = _opt_in_row(row)
    return found


def opt_in_by_key(tx: Tx, token_key: str) -> list[OptInRow]:
    """The application's opt-ins whose last request's token has this key."""
    rows = tx.conn.execute(
        _opt_in_select().where(*_scoped(tx), _opt.c.token_key == token_key).order_by(_opt.c.id)
    )
    return [_opt_in_row(row) for row in rows]


def begin_opt_in(
    tx: Tx,
    grant_id: str,
    address: str,
    *,
    sender: str,
    token_key: str,
    header_message_id: str,
    expires_at: datetime,
) -> bool:
    """Record a confirmation request (and its event ``recipient.opt_in_requested``),
    unless the address is confirmed or awaits an unexpired confirmation: then False and
    nothing is written. A request that expired is replaced."""
    now = utcnow()
    row = {
        "application_id": tx.application_id,
        "grant_id": grant_id,
        "address": address,
        "status": "pending",
        "token_key": token_key,
        "header_message_id": header_message_id,
        "requested_at": now,
        "expires_at": expires_at,
        "confirmed_at": None,
        "via": None,
    }
    values = insert(tx.conn, _opt).values(**row)
    statement = values.on_conflict_do_update(
        index_elements=[_opt.c.grant_id, _opt.c.address],
        set_={name: values.excluded[name] for name in row if name != "application_id"},
        where=sa.and_(
            _opt.c.application_id == tx.application_id,
            _opt.c.status == "pending",
            _opt.c.expires_at <= now,
        ),
    ).returning(_opt.c.id)
    if tx.conn.execute(statement).first() is None:
        return False
    payload = {
        "grant_id": grant_id,
        "recipient": address,
        "sender": sender,
        "header_message_id": header_message_id,
        "expires_at": expires_at.isoformat(),
    }
    _event(tx, "recipient.opt_in_requested", grant_id, payload, now)
    return True


def confirm_opt_in(tx: Tx, row: OptInRow, *, via: str) -> OptInRow | None:
    """Confirm a pending, unexpired opt-in (event ``recipient.opted_in``); the row as it
    now is, or None when it was no longer pending and unexpired (read it again)."""
    now = utcnow()
    changed = tx.conn.execute(
        sa.update(_opt)
        .where(
            _opt.c.application_id == tx.application_id,
            _opt.c.id == row.id,
            _opt.c.status == "pending",
            _opt.c.expires_at > now,
        )
        .values(status="confirmed", confirmed_at=now, via=via)
    )
    if changed.rowcount != 1:
        return None
    payload = {
        "grant_id": row.grant_id,
        "recipient": row.address,
        "sender": row.sender,
        "via": via,
        "requested_at": row.requested_at.isoformat(),
    }
    _event(tx, "recipient.opted_in", row.grant_id, payload, now)
    return OptInRow(
        id=row.id,
        grant_id=row.grant_id,
        address=row.address,
        sender=row.sender,
        status="confirmed",
        token_key=row.token_key,
        header_message_id=row.header_message_id,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        confirmed_at=now,
        via=via,
    )


@dataclass(frozen=True, slots=True)
class RepliedConfirmation:
    """An inbound message that may answer a confirmation: to ``grant_id`` from ``sender``,
    citing ``references`` (In-Reply-To and References, with their angle brackets)."""

    grant_id: str
    sender: str
    references: tuple[str, ...]


def confirm_replies(tx: Tx, replies: Sequence[RepliedConfirmation]) -> int:
    """Confirm the pending opt-ins these messages answer: a reply to the confirmation
    mail (it cites its Message-ID) from the address it was sent to, before it expired.
    How many were confirmed."""
    cited = sorted({i for reply in replies for i in reply.references})
    if not cited:
        return 0
    now = utcnow()
    rows = [
        _opt_in_row(row)
        for start in range(0, len(cited), 500)
        for row in tx.conn.execute(
            _opt_in_select().where(
                *_scoped(tx),
                _opt.c.header_message_id.in_(cited[start : start + 500]),
                _opt.c.status == "pending",
            )
        )
    ]
    confirmed = 0
    for row in rows:
        answered = any(
            reply.grant_id == row.grant_id
            and reply.sender == row.address
            and row.header_message_id in reply.references
            for reply in replies
        )
        if answered and not row.expired(now) and confirm_opt_in(tx, row, via="reply"):
            confirmed += 1
    return confirmed


def _event(tx: Tx, type: str, grant_id: str, payload: dict[str, Any], now: datetime) -> int:
    """Append one event; its id (a suppression names the event that caused it)."""
    return int(
        tx.conn.execute(
            sa.insert(_events)
            .values(
                application_id=tx.application_id,
                grant_id=grant_id,
                type=type,
                payload=payload,
                created_at=now,
            )
            .returning(_events.c.id)
        ).scalar_one()
    )
