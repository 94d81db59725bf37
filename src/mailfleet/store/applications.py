"""Applications (tenants) and their API keys, stored hashed."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.errors import ApplicationNotFound, Conflict, InvalidInput
from ..model.records import ApiKey, Application
from .scope import Tx
from .tables import api_keys_table, applications_table, new_id, utcnow
from .timestamps import aware

__all__ = [
    "application_by_id",
    "authenticate",
    "create_api_key",
    "ensure_application",
    "find_api_key",
    "get_application",
    "list_applications",
    "revoke_api_keys",
]

_applications = applications_table
_keys = api_keys_table
KEY_PREFIX = "mf_"


def _hash(secret: str) -> str:
    # Keys are 256 random bits: a fast hash is as safe as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


def _application(row: sa.Row[tuple[str, str, object]]) -> Application:
    return Application(id=row.id, name=row.name, created_at=aware(row.created_at))


def get_application(conn: Connection, name: str) -> Application:
    """The application called ``name``; :class:`ApplicationNotFound` otherwise."""
    row = conn.execute(sa.select(_applications).where(_applications.c.name == name)).first()
    if row is None:
        known = conn.execute(sa.select(_applications.c.name).order_by(_applications.c.name))
        names = ", ".join(known.scalars()) or "none yet"
        raise ApplicationNotFound(name, known=names)
    return _application(row)


def list_applications(conn: Connection) -> list[Application]:
    """Every application of the store, by name (for operator views such as ``/metrics``)."""
    rows = conn.execute(sa.select(_applications).order_by(_applications.c.name))
    return [_application(row) for row in rows]


def ensure_application(conn: Connection, name: str) -> Application:
    """The application called ``name``, created if missing."""
    if not name or len(name) > 200:
        raise InvalidInput("application", "a name of 1 to 200 characters is required", value=name)
    try:
        return get_application(conn, name)
    except ApplicationNotFound:
        conn.execute(
            sa.insert(_applications), {"id": new_id(), "name": name, "created_at": utcnow()}
        )
        return get_application(conn, name)


def create_api_key(
    tx: Tx, name: str, *, admin: bool = False, secret: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for the application: its record and the secret, shown only now.

    ``secret`` registers a secret the caller chose (``MAILFLEET_API_KEY`` in dev
    mode); a secret that exists already is a :class:`Conflict`, whoever owns it.
    """
    conn = tx.conn
    if secret is None:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
    elif len(secret) < 16:
        raise InvalidInput("api_key", "an API key needs at least 16 characters")
    if conn.execute(sa.select(_keys.c.id).where(_keys.c.secret_hash == _hash(secret))).first():
        raise Conflict("api_key", "this secret is registered already")
    key = ApiKey(
        id=new_id(),
        application_id=tx.application_id,
        name=name,
        created_at=utcnow(),
        admin=admin,
    )
    conn.execute(
        sa.insert(_keys),
        {
            "id": key.id,
            "application_id": tx.application_id,
            "name": name,
            "secret_hash": _hash(secret),
            "admin": admin,
            "created_at": key.created_at,
        },
    )
    return key, secret


def revoke_api_keys(tx: Tx, name: str) -> int:
    """Revoke the application's live keys called ``name``; how many were."""
    result = tx.conn.execute(
        sa.update(_keys)
        .where(
            _keys.c.application_id == tx.application_id,
            _keys.c.name == name,
            _keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


def find_api_key(conn: Connection, secret: str) -> tuple[ApiKey, Application] | None:
    """The live key ``secret`` is, with its application; None when unknown or revoked.

    The one query that is not scoped to an application: it is how a caller's
    application is found.
    """
    row = conn.execute(
        sa.select(
            _keys.c.id.label("key_id"),
            _keys.c.name.label("key_name"),
            _keys.c.admin,
            _keys.c.created_at.label("key_created_at"),
            _applications,
        )
        .join(_keys, _keys.c.application_id == _applications.c.id)
        .where(_keys.c.secret_hash == _hash(secret), _keys.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    application = _application(row)
    key = ApiKey(
        id=row.key_id,
        application_id=application.id,
        name=row.key_name,
        created_at=aware(row.key_created_at),
        admin=bool(row.admin),
    )
    return key, application


def authenticate(conn: Connection, secret: str) -> Application | None:
    """The application a live key belongs to, or None for an unknown or revoked key."""
    found = find_api_key(conn, secret)
    return None if found is None else found[1]


def application_by_id(conn: Connection, application_id: str) -> Application:
    """The application with this id; :class:`ApplicationNotFound` otherwise."""
    row = conn.execute(sa.select(_applications).where(_applications.c.id == application_id)).first()
    if row is None:
        raise ApplicationNotFound(application_id)
    return _application(row)
