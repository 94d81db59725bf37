"""A fleet serving an agent that records its unsubscribes and mail, with a real relay peer
and a real MX: what the unsubscribe and opt-in tests share."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any, ClassVar

import anyio
import sqlalchemy as sa

from mailfleet import Agent, Fleet, InboundMessage, SendCategory, SendResult, Unsubscribe
from mailfleet.store.tables import events_table, suppressions_table
from relay import Received, RelayPeer
from sending import FREE
from support import wait_until

SENDER = "news@example.com"
TOKEN = re.compile(r"[a-z2-7]{32}")


class Newsletter(Agent):
    unsubscribes: ClassVar[list[Unsubscribe]] = []
    messages: ClassVar[list[InboundMessage]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.messages.append(message)

    async def on_unsubscribe(self, event: Unsubscribe) -> None:
        self.unsubscribes.append(event)


@asynccontextmanager
async def consent_fleet(
    database_url: str, peer: RelayPeer, **settings: Any
) -> AsyncIterator[Fleet]:
    """A serving fleet (MX on a free port, sender to ``peer``) with ``news@example.com``."""
    Newsletter.unsubscribes, Newsletter.messages = [], []
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        poll_interval=0.02,
        relay_host="127.0.0.1",
        relay_port=peer.port,
        relay_starttls=False,
        retry_schedule=[0.05],
        **settings,
    ) as fleet:
        fleet.bind(Newsletter)
        await fleet.add_domain("example.com")
        await fleet.create_workspace("letters", policy=FREE)
        await fleet.provision(SENDER, workspace="letters", agent=Newsletter)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def send_and_receive(
    fleet: Fleet, peer: RelayPeer, to: str, *, category: SendCategory | str
) -> tuple[SendResult, Received]:
    """Send one message; wait until the relay received it and the send is recorded."""
    before = len(peer.received)
    result = await fleet.send(SENDER, to, subject="News", text="This month.", category=category)
    assert result.ok, result
    await wait_until(lambda: len(peer.received) > before, within=20)
    await settled(fleet)
    return result, peer.received[-1]


async def settled(fleet: Fleet) -> None:
    """Wait until every queued message was sent and its result recorded."""
    with anyio.fail_after(20):
        while await fleet.outbox_count("pending"):  # noqa: ASYNC110 - polling the store
            await anyio.sleep(0.02)


def header(data: bytes, name: str) -> str | None:
    """A header field of a received message, unfolded, as a mail client reads it."""
    value = message_from_bytes(data, policy=default_policy)[name]
    return None if value is None else str(value)


def list_unsubscribe(data: bytes) -> tuple[str, str]:
    """The mailto address and the https URL of a received message's List-Unsubscribe."""
    value = header(data, "List-Unsubscribe")
    assert value is not None
    match = re.fullmatch(r"<mailto:([^>]+)>, <([^>]+)>", value)
    assert match is not None, value
    return match[1], match[2]


async def count(fleet: Fleet, table: sa.Table, **where: str) -> int:
    """Rows of ``table`` of the fleet's application matching ``where`` (column = value),
    read straight from the store."""
    query = (
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.application_id == fleet.application.id)
    )
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    return int(await fleet.database.read(lambda conn: conn.execute(query).scalar_one()))


async def facts(fleet: Fleet) -> tuple[int, int]:
    """How many events and suppressions the store holds: what a refused token must not move."""
    return await count(fleet, events_table), await count(fleet, suppressions_table)
