"""Applications (tenants) and their API keys, stored hashed."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.errors import ApplicationNotFound, InvalidInput
from ..model.records import ApiKey, Application
from .scope import Tx
from .tables import api_keys_table, applications_table, new_id, utcnow
from .timestamps import aware

__all__ = ["authenticate", "create_api_key", "ensure_application", "get_application"]

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


def create_api_key(tx: Tx, name: str) -> tuple[ApiKey, str]:
    """A new key for the application: its record and the secret, shown only now."""
    conn = tx.conn
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id(), application_id=tx.application_id, name=name, created_at=utcnow())
    conn.execute(
        sa.insert(_keys),
        {
            "id": key.id,
            "application_id": tx.application_id,
            "name": name,
            "secret_hash": _hash(secret),
            "created_at": key.created_at,
        },
    )
    return key, secret


def authenticate(conn: Connection, secret: str) -> Application | None:
    """The application a live key belongs to, or None for an unknown or revoked key."""
    row = conn.execute(
        sa.select(_applications)
        .join(_keys, _keys.c.application_id == _applications.c.id)
        .where(_keys.c.secret_hash == _hash(secret), _keys.c.revoked_at.is_(None))
    ).first()
    return None if row is None else _application(row)
