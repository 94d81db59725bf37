"""The one exception tree of mailfleet.

Every exception the library raises derives from :class:`MailfleetError`;
builtins are mixed in where they fit, so ``except ValueError`` and
``except LookupError`` work as a Python user expects::

    MailfleetError
    ├── InvalidInput (ValueError)            .field names what was wrong
    │   ├── InvalidAddress
    │   ├── InvalidPolicy
    │   ├── InvalidPattern
    │   ├── InvalidToken                     an unsubscribe or opt-in token not issued here
    │   │   └── TokenExpired                 an opt-in confirmation past its expiry
    │   └── InvalidListItems                 .errors: one per entry of a bulk call
    ├── NotFound (LookupError)
    │   ├── DatabaseNotFound                 no database there, and it may not be created
    │   ├── DomainNotRegistered
    │   ├── WorkspaceNotFound
    │   ├── GrantNotFound
    │   ├── MessageNotFound
    │   ├── ThreadNotFound
    │   ├── WebhookNotFound
    │   ├── ApplicationNotFound
    │   ├── ListNotFound
    │   └── RuleNotFound
    ├── Conflict
    │   ├── DefaultWorkspaceProtected
    │   ├── DomainTaken                      the domain is registered to another application
    │   ├── PatternInUse
    │   ├── WorkspaceExists
    │   ├── WorkspaceNotEmpty
    │   ├── ListExists
    │   └── ListInUse                        rules still refer to the list
    ├── MessageBlocked                       an inbound rule refused the message (SMTP 550 5.7.1)
    ├── QueueFull                            a grant's queue is at its limit (SMTP 451)
    ├── InvalidAgent (TypeError)             an Agent subclass is malformed
    ├── FleetNotOpen (RuntimeError)          used before ``async with`` or after it
    ├── SigningFailed                        a message could not be DKIM-signed
    ├── StoreUnavailable (ConnectionError)   the database cannot be reached
    ├── ListenFailed (OSError)               a server cannot listen on its address
    └── DnsError                             a DNS lookup failed (.name, .rdtype)
        ├── DnsNameNotFound (LookupError)    the name does not exist (NXDOMAIN)
        ├── DnsServerFailure                 no server would answer (SERVFAIL, REFUSED...)
        └── DnsTimeout (TimeoutError)        no answer in time

Expected operational states of a grant (rate-limited, paused, restricted,
suppressed) are *values* a caller inspects, never exceptions; so is a DNS
name that exists without records of the type asked (an empty answer).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "ApplicationNotFound",
    "Conflict",
    "DatabaseNotFound",
    "DefaultWorkspaceProtected",
    "DnsError",
    "DnsNameNotFound",
    "DnsServerFailure",
    "DnsTimeout",
    "DomainNotRegistered",
    "DomainTaken",
    "FleetNotOpen",
    "GrantNotFound",
    "InvalidAddress",
    "InvalidAgent",
    "InvalidInput",
    "InvalidListItems",
    "InvalidPattern",
    "InvalidPolicy",
    "InvalidToken",
    "ListExists",
    "ListInUse",
    "ListNotFound",
    "ListenFailed",
    "MailfleetError",
    "MessageBlocked",
    "MessageNotFound",
    "NotFound",
    "PatternInUse",
    "QueueFull",
    "RuleNotFound",
    "SigningFailed",
    "StoreUnavailable",
    "ThreadNotFound",
    "TokenExpired",
    "WebhookNotFound",
    "WorkspaceExists",
    "WorkspaceNotEmpty",
    "WorkspaceNotFound",
]


class MailfleetError(Exception):
    """Root of every exception raised by mailfleet."""


class _FieldError(MailfleetError):
    """An error that blames one field: ``field``, the ``value`` given, the ``message``."""

    def __init__(self, field: str, message: str, *, value: object = None) -> None:
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"{field}: {message}")


class InvalidInput(_FieldError, ValueError):
    """A value given by the caller is not acceptable.

    ``field`` names the offending field (``"address"``, ``"policy.daily_send_quota"``...),
    ``value`` is what was given.
    """


class InvalidAddress(InvalidInput):
    """An email address is not valid."""

    def __init__(self, address: str, message: str, *, field: str = "address") -> None:
        super().__init__(field, f"{address!r} is not a valid address: {message}", value=address)
        self.address = address


class InvalidPolicy(InvalidInput):
    """A policy value is out of range or inconsistent."""


class InvalidPattern(InvalidInput):
    """An auto-group pattern is neither ``domain`` nor ``*.domain``."""


class InvalidToken(InvalidInput):
    """A token of an unsubscribe or opt-in link (or address) that this application did not
    issue: malformed, forged, mistyped, superseded by a newer request, or of a grant
    deleted since. Nothing was changed. ``kind`` is ``unsubscribe`` or ``opt_in``."""

    def __init__(self, kind: str, message: str, *, value: object = None) -> None:
        super().__init__("token", message, value=value)
        self.kind = kind


class TokenExpired(InvalidToken):
    """An opt-in confirmation used after it expired (setting ``opt_in_expiry_days``):
    nothing was confirmed; a new request sends a new confirmation. ``expired_at`` says when."""

    def __init__(
        self, kind: str, message: str, *, expired_at: datetime, value: object = None
    ) -> None:
        super().__init__(kind, message, value=value)
        self.expired_at = expired_at


class InvalidListItems(InvalidInput):
    """Entries of a bulk add or remove are not valid: nothing was applied.

    ``errors`` holds one :class:`~mailfleet.model.lists.EntryError` per faulty entry
    (its index, the value given, why); ``field`` names the first (``items[3]``).
    """

    def __init__(self, errors: Sequence[Any]) -> None:
        first = errors[0]
        more = f" (and {len(errors) - 1:,} more)" if len(errors) > 1 else ""
        super().__init__(
            first.field, f"{first.message}{more}; nothing was applied", value=first.value
        )
        self.errors = tuple(errors)


class NotFound(_FieldError, LookupError):
    """Something named by the caller does not exist (``field`` names what was looked up)."""


class DatabaseNotFound(NotFound):
    """A fleet opened with ``create=False`` found no mailfleet database to open.

    Either the SQLite file does not exist (``path``, resolved; nothing is
    created, not even its folder), or the database has no mailfleet schema
    (an empty SQLite file, a PostgreSQL database never set up); ``url`` is
    the database URL with its password hidden. An older schema is not this:
    it is migrated.
    """

    def __init__(self, url: str, *, path: str | None = None) -> None:
        where = f"no mailfleet database at {path}" if path else f"{url} has no mailfleet schema"
        super().__init__("database_url", where, value=url)
        self.url = url
        self.path = path


class DomainNotRegistered(NotFound):
    """The domain of an address is not registered to the application."""

    def __init__(self, domain: str, *, field: str = "address") -> None:
        super().__init__(
            field,
            f"domain {domain!r} is not registered to this application "
            f"(register it first: `mailfleet domains add {domain}`)",
            value=domain,
        )
        self.domain = domain


class WorkspaceNotFound(NotFound):
    """No workspace of that name or id in the application."""

    def __init__(self, workspace: str, *, field: str = "workspace") -> None:
        super().__init__(field, f"no workspace named {workspace!r}", value=workspace)
        self.workspace = workspace


class GrantNotFound(NotFound):
    """No grant with that id or address in the application."""

    def __init__(self, grant: str, *, field: str = "grant") -> None:
        super().__init__(field, f"no grant {grant!r}", value=grant)
        self.grant = grant


class WebhookNotFound(NotFound):
    """No webhook subscription with that id in the application."""

    def __init__(self, webhook: str, *, field: str = "webhook") -> None:
        super().__init__(field, f"no webhook {webhook!r}", value=webhook)
        self.webhook = webhook


class MessageNotFound(NotFound):
    """No stored message with that id among a grant's mail."""

    def __init__(self, message: str, *, field: str = "message") -> None:
        super().__init__(field, f"no message {message!r} of this grant", value=message)
        self.message_key = message


class ThreadNotFound(NotFound):
    """No thread with that id among a grant's mail."""

    def __init__(self, thread: str, *, field: str = "thread") -> None:
        super().__init__(field, f"no thread {thread!r} of this grant", value=thread)
        self.thread = thread


class ApplicationNotFound(NotFound):
    """No application with that name."""

    def __init__(
        self, application: str, *, field: str = "application", known: str | None = None
    ) -> None:
        hint = "" if known is None else f" in this database (applications: {known})"
        super().__init__(field, f"no application {application!r}{hint}", value=application)


class ListNotFound(NotFound):
    """No list with that id (or name) in the application."""

    def __init__(self, key: str, *, field: str = "list") -> None:
        super().__init__(field, f"no list {key!r}", value=key)
        self.key = key


class RuleNotFound(NotFound):
    """No rule with that id in the application."""

    def __init__(self, key: str, *, field: str = "rule") -> None:
        super().__init__(field, f"no rule {key!r}", value=key)
        self.key = key


class Conflict(MailfleetError):
    """The request contradicts the current state."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DomainTaken(Conflict):
    """The domain is registered to another application (domains are unique in a store)."""


class DefaultWorkspaceProtected(Conflict):
    """The default workspace cannot be deleted or renamed."""


class PatternInUse(Conflict):
    """An auto-group pattern already routes to another workspace."""


class WorkspaceExists(Conflict):
    """A workspace of that name exists already (``exist_ok=True`` accepts an identical one)."""


class WorkspaceNotEmpty(Conflict):
    """A workspace that still holds grants cannot be deleted."""


class ListExists(Conflict):
    """A list of that name exists already in the application."""


class ListInUse(Conflict):
    """A list that rules still refer to cannot be deleted (``rules`` names their ids)."""

    def __init__(self, field: str, message: str, *, rules: Sequence[str] = ()) -> None:
        super().__init__(field, message)
        self.rules = tuple(rules)


class MessageBlocked(MailfleetError):
    """An inbound rule refused the message: nothing was stored.

    The MX answers ``550 5.7.1``; other sources (IMAP) skip the message.
    ``rule_id`` and ``rule`` (its name) say which rule.
    """

    def __init__(self, rule_id: str, rule: str) -> None:
        super().__init__(f"refused by rule {rule!r} ({rule_id})")
        self.rule_id = rule_id
        self.rule = rule


class InvalidAgent(MailfleetError, TypeError):
    """An ``Agent`` subclass is malformed (a misspelt or mistyped handler...).

    Raised when the class is created, so the mistake shows at import time.
    """


class StoreUnavailable(MailfleetError, ConnectionError):
    """The database could not be reached or opened, or failed under a running fleet.

    The driver's error is chained (``__cause__``).
    """


class FleetNotOpen(MailfleetError, RuntimeError):
    """A fleet was used before it was opened (``async with Fleet() as fleet``) or after."""

    def __init__(self, what: str = "the fleet") -> None:
        super().__init__(
            f"the fleet is not open ({what} needs it): use `async with Fleet(...) as fleet:` "
            "and call it inside the block"
        )


class SigningFailed(MailfleetError):
    """A message could not be DKIM-signed (a broken key...); nothing was queued."""


class ListenFailed(MailfleetError, OSError):
    """A server cannot listen on its address: the port is taken, needs privileges...

    ``address`` is ``host:port``; ``errno`` and ``strerror`` are the operating
    system's, as on the ``OSError`` it comes from. The message names both::

        cannot listen for SMTP on 127.0.0.1:2525: address already in use ([Errno 98])
    """

    def __init__(self, service: str, address: str, errno: int | None, reason: str) -> None:
        super().__init__(errno, reason)
        self.service = service
        self.address = address

    @classmethod
    def from_os_error(cls, service: str, host: str, port: int, exc: OSError) -> ListenFailed:
        """``exc`` of a bind as a :class:`ListenFailed` with the system's reason (asyncio
        puts its own words around it: "error while attempting to bind...")."""
        if exc.errno and not isinstance(exc, socket.gaierror):  # resolver codes are no errnos
            reason = os.strerror(exc.errno)
        else:
            reason = exc.strerror or str(exc)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(service, address, exc.errno, reason[:1].lower() + reason[1:])

    def __str__(self) -> str:
        number = "" if self.errno is None else f" ([Errno {self.errno}])"
        return f"cannot listen for {self.service} on {self.address}: {self.strerror}{number}"


class QueueFull(MailfleetError):
    """A grant's queue is at its limit; the producer should slow down and retry.

    The SMTP server answers ``451 4.3.0`` with it; nothing was stored.
    """

    def __init__(self, grant_id: str, limit: int) -> None:
        super().__init__(f"the queue of grant {grant_id} is full ({limit} messages)")
        self.grant_id = grant_id
        self.limit = limit


class DnsError(MailfleetError):
    """A DNS lookup failed; ``name`` (no final dot) and ``rdtype`` (``"TXT"``...) say which.

    ``reason`` says why, in words. A name that exists without records of the
    type asked is no error: the lookup answers an empty list.
    """

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(f"DNS {rdtype} lookup of {name or '.'}: {reason}")
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


class DnsNameNotFound(DnsError, LookupError):
    """The name does not exist (NXDOMAIN): no record of any type is published there."""


class DnsServerFailure(DnsError):
    """No nameserver would answer: each one failed (SERVFAIL), refused (REFUSED), sent a
    malformed reply, or none is configured. Often temporary: worth asking again later."""


class DnsTimeout(DnsError, TimeoutError):
    """No answer came within the resolver's timeout (``dns_timeout``)."""
