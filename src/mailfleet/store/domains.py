"""Domains registered to an application."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..model.addresses import normalize_domain
from ..model.errors import Conflict, DomainNotRegistered, DomainTaken, InvalidInput, NotFound
from ..model.records import DkimKeyInfo, DnsRecord, Domain
from .events import record
from .scope import Tx
from .tables import domains_table, new_id, utcnow
from .timestamps import aware

__all__ = [
    "add_domain",
    "add_next_keys",
    "dkim_keys",
    "domain_ids",
    "get_domain",
    "list_domains",
    "promote_next_keys",
    "remove_retiring_key",
    "replace_dkim_keys",
]

_domains = domains_table


def _key_info(domain: str, key: dict[str, Any]) -> DkimKeyInfo:
    created = key.get("created_at")
    return DkimKeyInfo(
        selector=key["selector"],
        algorithm=key.get("algorithm", "rsa"),
        status=key.get("status", "signing"),
        record=DnsRecord(f"{key['selector']}._domainkey.{domain}", key["dns_txt"]),
        created_at=datetime.fromisoformat(created) if isinstance(created, str) else None,
    )


def _domain(row: sa.Row[tuple[object, ...]]) -> Domain:
    keys = tuple(_key_info(row.name, key) for key in row.dkim_keys or () if "dns_txt" in key)
    return Domain(
        id=row.id,
        application_id=row.application_id,
        name=row.name,
        dkim_selector=row.dkim_selector,
        authenticated=row.authenticated,
        created_at=aware(row.created_at),
        state=row.state,
        audit=row.audit,
        audited_at=None if row.audited_at is None else aware(row.audited_at),
        dkim_records=tuple(key.record for key in keys),
        dkim_keys=keys,
    )


def add_domain(
    tx: Tx,
    name: str,
    *,
    selector: str = "mailfleet",
    dkim_keys: Sequence[dict[str, Any]] = (),
) -> tuple[Domain, bool]:
    """Register ``name``; returns the domain and whether it was new.

    ``dkim_keys`` (``{"selector", "algorithm", "private_pem"}``) are stored
    with a new domain. Registering a domain the application already has is a
    no-op; one that belongs to another application is a :class:`DomainTaken`.
    """
    conn = tx.conn
    domain = normalize_domain(name)
    if not selector.replace("-", "").replace("_", "").isalnum() or len(selector) > 63:
        raise InvalidInput("selector", f"{selector!r} is not a valid DKIM selector", value=selector)
    row = conn.execute(sa.select(_domains).where(_domains.c.name == domain)).first()
    if row is not None:
        if row.application_id != tx.application_id:
            raise DomainTaken("domain", f"{domain!r} is registered to another application")
        return _domain(row), False
    values = {
        "id": new_id(),
        "application_id": tx.application_id,
        "name": domain,
        "dkim_selector": selector,
        "authenticated": False,
        "state": "pending",
        "dkim_keys": list(dkim_keys),
        "created_at": utcnow(),
    }
    conn.execute(sa.insert(_domains), values)
    record(tx, "domain.created", {"domain_id": values["id"], "domain": domain})
    return get_domain(tx, domain), True


def get_domain(tx: Tx, name: str) -> Domain:
    """The registered domain ``name``; :class:`DomainNotRegistered` otherwise."""
    conn = tx.conn
    domain = normalize_domain(name)
    row = conn.execute(
        sa.select(_domains).where(
            _domains.c.name == domain, _domains.c.application_id == tx.application_id
        )
    ).first()
    if row is None:
        raise DomainNotRegistered(domain, field="domain")
    return _domain(row)


def list_domains(tx: Tx) -> list[Domain]:
    """Every domain of the application, by name."""
    conn = tx.conn
    rows = conn.execute(
        sa.select(_domains)
        .where(_domains.c.application_id == tx.application_id)
        .order_by(_domains.c.name)
    )
    return [_domain(row) for row in rows]


def dkim_keys(tx: Tx, name: str) -> list[dict[str, Any]]:
    """The DKIM keys of a registered domain (secrets: never log them)."""
    conn = tx.conn
    keys: list[dict[str, Any]] | None = conn.execute(
        sa.select(_domains.c.dkim_keys).where(
            _domains.c.name == name, _domains.c.application_id == tx.application_id
        )
    ).scalar()
    return list(keys or [])


def replace_dkim_keys(
    tx: Tx, name: str, keys: Sequence[dict[str, Any]], *, event: str, payload: dict[str, Any]
) -> Domain:
    """Store ``keys`` as the DKIM keys of ``name`` and record ``event`` (selectors only)."""
    domain = get_domain(tx, name)
    tx.conn.execute(
        sa.update(_domains)
        .where(_domains.c.application_id == tx.application_id, _domains.c.id == domain.id)
        .values(dkim_keys=list(keys))
    )
    record(tx, event, {"domain_id": domain.id, "domain": domain.name, **payload})
    return get_domain(tx, domain.name)


def _locked_keys(tx: Tx, name: str) -> tuple[str, list[dict[str, Any]]]:
    """The domain's normal name and its keys, its row locked (PostgreSQL) until the
    transaction ends, so that the changes below never lose a concurrent one (SQLite's
    write transactions are serialized already)."""
    domain = normalize_domain(name)
    row = tx.conn.execute(
        sa.select(_domains.c.dkim_keys)
        .where(_domains.c.name == domain, _domains.c.application_id == tx.application_id)
        .with_for_update()
    ).first()
    if row is None:
        raise DomainNotRegistered(domain, field="domain")
    return domain, list(row.dkim_keys or [])


def _status(key: dict[str, Any]) -> str:
    """A stored key's rotation status (rows from before rotation existed: ``signing``)."""
    return str(key.get("status", "signing"))


def add_next_keys(tx: Tx, name: str, new: Sequence[dict[str, Any]]) -> Domain:
    """Add a rotation's ``new`` keys (status ``next``) to ``name``'s keys.

    A :class:`Conflict` when the domain already has ``next`` keys or uses one of
    the new selectors (checked under the row lock: two rotations at once cannot
    both succeed). Records ``domain.dkim_rotated`` (selectors only).
    """
    domain, keys = _locked_keys(tx, name)
    if any(_status(key) == "next" for key in keys):
        raise Conflict(
            "domain",
            f"{domain} has a rotation waiting for its records: publish them "
            f"(mailfleet domains records {domain}) and check the domain",
        )
    used = {key["selector"] for key in keys}
    taken = sorted(used.intersection(key["selector"] for key in new))
    if taken:
        raise Conflict("selector", f"{domain} already used the selector {taken[0]!r}")
    added = [{**key, "status": "next"} for key in new]
    return replace_dkim_keys(
        tx,
        domain,
        [*keys, *added],
        event="domain.dkim_rotated",
        payload={"selectors": [key["selector"] for key in added]},
    )


def promote_next_keys(tx: Tx, name: str) -> bool:
    """A rotation's ``next`` keys start signing; the ``signing`` ones become ``retiring``.

    Returns whether there was anything to promote (records
    ``domain.dkim_promoted``).
    """
    domain, keys = _locked_keys(tx, name)
    promoted = [key["selector"] for key in keys if _status(key) == "next"]
    if not promoted:
        return False
    moved = {"next": "signing", "signing": "retiring"}
    changed = [{**key, "status": moved.get(_status(key), _status(key))} for key in keys]
    replace_dkim_keys(
        tx, domain, changed, event="domain.dkim_promoted", payload={"selectors": promoted}
    )
    return True


def remove_retiring_key(tx: Tx, name: str, selector: str) -> tuple[Domain, dict[str, Any]]:
    """Remove the ``retiring`` key ``selector`` of ``name``; the domain and the removed entry.

    :class:`NotFound` for a selector the domain does not have, :class:`Conflict`
    for a key that signs or is still ``next``. Records ``domain.dkim_retired``.
    """
    domain, keys = _locked_keys(tx, name)
    found = next((key for key in keys if key["selector"] == selector), None)
    if found is None:
        raise NotFound("selector", f"{domain} has no DKIM key {selector!r}")
    if _status(found) != "retiring":
        raise Conflict(
            "selector",
            f"the key {selector!r} of {domain} is {_status(found)}: only a key a rotation "
            "replaced (retiring) can be retired",
        )
    remaining = [key for key in keys if key is not found]
    retired = replace_dkim_keys(
        tx, domain, remaining, event="domain.dkim_retired", payload={"selectors": [selector]}
    )
    return retired, found


def domain_ids(tx: Tx, names: Iterable[str]) -> dict[str, str]:
    """Map each registered domain among ``names`` (normal form) to its id."""
    conn = tx.conn
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(_domains.c.name, _domains.c.id).where(
            _domains.c.application_id == tx.application_id, _domains.c.name.in_(wanted)
        )
    )
    return {row.name: row.id for row in rows}
