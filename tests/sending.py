"""Sending through a fleet to a real relay peer, for the reputation, breaker and pacing tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio

from mailfleet import Fleet
from relay import RelayPeer

SENDER = "sales@example.com"
# The breaker (tests/test_breaker.py) would hold these grants before their pause.
FREE = {"breaker": {"enabled": False}, "send_burst": 1000, "send_rate_per_minute": 60_000}
SMALL = {"reputation_window": 20, "reputation_min_sample": 10, **FREE}


class Listening(Protocol):
    """A relay peer: aiosmtpd's (``relay.RelayPeer``) or a misbehaving one."""

    @property
    def port(self) -> int: ...


@asynccontextmanager
async def fleet_sending(
    database_url: str,
    peer: Listening,
    *,
    policy: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Fleet]:
    """A serving fleet whose grant ``SENDER`` sends to ``peer``; ``settings`` override."""
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        poll_interval=0.02,
        relay_host="127.0.0.1",
        relay_port=peer.port,
        relay_starttls=False,
        **{"retry_schedule": [0.05], **settings},
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.create_workspace("outreach", policy=policy or SMALL)
        await fleet.provision(SENDER, workspace="outreach")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def send_to(
    fleet: Fleet, peer: RelayPeer, recipients: list[str], sender: str = SENDER
) -> None:
    """Send one message to each recipient and wait until the relay answered them all."""
    before = len(await fleet.outbox(limit=10_000))
    for to in recipients:
        result = await fleet.send(sender, to, subject="Offer", text="Hello.")
        assert result.ok, result

    async def answered() -> bool:
        listed = await fleet.outbox(limit=10_000)
        return len(listed) >= before + len(recipients) and all(
            o.status in ("sent", "bounced") for o in listed
        )

    with anyio.fail_after(20):
        while not await answered():  # noqa: ASYNC110 - polling the store
            await anyio.sleep(0.02)


def refuse(peer: RelayPeer, *addresses: str) -> None:
    for address in addresses:
        peer.rcpt_replies[address] = f"550 5.1.1 <{address}>: user unknown"


async def levels(fleet: Fleet, grant: str = SENDER) -> dict[str, Any]:
    return {level.kind: level for level in await fleet.reputation(grant)}
