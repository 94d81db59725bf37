"""The mailroom: what inbound sources get of a fleet, and no more."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ..model.errors import GrantNotFound, InvalidInput
from ..model.records import Grant
from ..store import cursors, domains, grants
from ..store.scope import Scope
from .batching import FLEET_CLOSED, GroupCommit
from .intake import Intake

if TYPE_CHECKING:
    from ..mail.inbound import InboundMessage

__all__ = ["Mailroom", "check_json"]


class Mailroom:
    """Delivers mail to the application's grants and keeps the sources' read positions.

    It implements :class:`~mailfleet.plugins.Deliverer`: plugin sources (IMAP
    mailboxes, provider webhooks) receive this object, never the whole fleet.
    """

    def __init__(
        self,
        scope: Scope,
        intake: Intake,
        *,
        bounce_domain_of: Callable[[str], str | None] = lambda domain: None,
    ) -> None:
        self._scope = scope
        self._intake = intake
        self._bounce_domain_of = bounce_domain_of
        # Concurrent lookups (every Fleet.send reads its grant) share one read.
        self._lookups: GroupCommit[str, Grant] = GroupCommit(
            self._look_up, closed_error=FLEET_CLOSED
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Answer batched grant lookups until cancelled (run while the fleet is open)."""
        await self._lookups.run(task_status=task_status)

    async def deliver(
        self, grant: str | Grant, raw: bytes, *, source_key: str | None = None
    ) -> InboundMessage:
        """Store a message for a grant (id, address or record) and queue it.

        Returns once the message and its queue entry are committed: from then
        on it is handled at least once, in order with the grant's other
        messages, by whichever worker serves the grant. Raises
        :class:`~mailfleet.GrantNotFound` for an unknown grant and
        :class:`~mailfleet.QueueFull` when the grant's backlog is at
        ``queue_limit``; nothing is stored then.

        ``source_key`` makes the delivery idempotent (an IMAP source passes
        its UIDVALIDITY and UID): a grant stores one message per key, and
        delivering it again returns the stored message.
        """
        if not isinstance(raw, bytes | bytearray):
            raise InvalidInput("message", "a message is given as raw RFC 5322 bytes")
        from ..mail.inbound import InboundMessage  # parsing is imported by the first delivery

        key = grant.id if isinstance(grant, Grant) else grant
        stored = await self._intake.deliver(key, bytes(raw), source_key=source_key)
        return InboundMessage.from_stored(stored)

    async def grant(self, key: str) -> Grant:
        """A grant by id or address, with its effective policy; read afresh, in one read
        with the lookups made meanwhile."""
        if not self._lookups.running:  # opening or closing: a read of its own
            return await self._scope.read(lambda tx: grants.get_grant(tx, key))
        return await self._lookups.submit(key)

    async def _look_up(self, keys: Sequence[str]) -> list[Grant | Exception]:
        found = await self._scope.read(lambda tx: grants.get_grants(tx, keys))
        return [found.get(key) or GrantNotFound(key) for key in keys]

    async def grant_or_none(self, key: str) -> Grant | None:
        """A grant by id or address, or None."""
        try:
            return await self.grant(key)
        except GrantNotFound:
            return None

    async def grant_id(self, address: str) -> str | None:
        """The id of the grant at ``address``, or None."""
        found = await self.grant_or_none(address)
        return None if found is None else found.id

    async def owns_domain(self, domain: str) -> bool:
        """Whether ``domain`` is one of the application's registered domains, or the
        bounce (envelope) domain of one (setting ``bounce_domain``)."""
        sender = self._bounce_domain_of(domain)
        if sender == "":  # the one fixed bounce domain of every sender
            return True
        wanted = [domain] if sender is None else [domain, sender]
        found = await self._scope.read(lambda tx: domains.domain_ids(tx, wanted))
        return bool(found)

    async def cursor(self, grant: str, source: str) -> dict[str, Any] | None:
        """How far ``source`` (e.g. an IMAP mailbox) has been read for a grant."""
        return await self._scope.read(lambda tx: cursors.get_cursor(tx, grant, source))

    async def set_cursor(self, grant: str, source: str, value: dict[str, Any]) -> None:
        """Remember how far ``source`` has been read for a grant (a JSON value)."""
        check_json("value", value)
        await self._scope.write(lambda tx: cursors.set_cursor(tx, grant, source, value))


def check_json(field: str, value: Any) -> None:
    """Raise :class:`~mailfleet.InvalidInput` unless ``value`` is JSON-serialisable."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"must be JSON-serialisable: {exc}", value=value) from None
