"""Domains registered to an application."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from ..model.addresses import normalize_domain
from ..model.errors import Conflict, DomainNotRegistered, InvalidInput
from ..model.records import DnsRecord, Domain
from .events import record
from .scope import Tx
from .tables import domains_table, new_id, utcnow
from .timestamps import aware

__all__ = ["add_domain", "dkim_keys", "domain_ids", "get_domain", "list_domains"]

_domains = domains_table


def _domain(row: sa.Row[tuple[object, ...]]) -> Domain:
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
        dkim_records=tuple(
            DnsRecord(f"{key['selector']}._domainkey.{row.name}", key["dns_txt"])
            for key in row.dkim_keys or ()
            if "dns_txt" in key
        ),
    )


def add_domain(
    tx: Tx,
    name: str,
    *,
    selector: str = "mailfleet",
    dkim_keys: Sequence[dict[str, str]] = (),
) -> tuple[Domain, bool]:
    """Register ``name``; returns the domain and whether it was new.

    ``dkim_keys`` (``{"selector", "algorithm", "private_pem"}``) are stored
    with a new domain. Registering a domain the application already has is a
    no-op; one that belongs to another application is a :class:`Conflict`.
    """
    conn = tx.conn
    domain = normalize_domain(name)
    if not selector.replace("-", "").replace("_", "").isalnum() or len(selector) > 63:
        raise InvalidInput("selector", f"{selector!r} is not a valid DKIM selector", value=selector)
    row = conn.execute(sa.select(_domains).where(_domains.c.name == domain)).first()
    if row is not None:
        if row.application_id != tx.application_id:
            raise Conflict("domain", f"{domain!r} is registered to another application")
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


def dkim_keys(tx: Tx, name: str) -> list[dict[str, str]]:
    """The DKIM keys of a registered domain (secrets: never log them)."""
    conn = tx.conn
    keys: list[dict[str, str]] | None = conn.execute(
        sa.select(_domains.c.dkim_keys).where(
            _domains.c.name == name, _domains.c.application_id == tx.application_id
        )
    ).scalar()
    return list(keys or [])


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
