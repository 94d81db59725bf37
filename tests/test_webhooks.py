"""Webhooks end to end over real sockets: a fleet serving, an HTTP receiver on loopback,
every delivery verified with the ``standardwebhooks`` package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from mailfleet import Fleet
from webhook_receiver import Received, receiver

pytestmark = pytest.mark.anyio

FAST = {
    "webhook_poll_interval": 0.02,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "poll_interval": 0.02,
}


@asynccontextmanager
async def serving(database_url: str, **settings: Any) -> AsyncIterator[Fleet]:
    options = {**FAST, **settings}
    async with Fleet(database_url=database_url, application="test", **options) as fleet:
        await fleet.add_domain("example.com")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


def envelopes(requests: list[Received], secret: str) -> list[dict[str, Any]]:
    return [r.verified(secret) for r in requests]


async def test_provisioning_events_arrive_signed(database_url: str) -> None:
    async with receiver() as hook, serving(database_url) as fleet:
        webhook, secret = await fleet.webhooks.create(hook.url)
        assert secret.startswith("whsec_")
        granted = [await fleet.provision(f"agent{i}@example.com") for i in range(5)]
        with anyio.fail_after(10):
            await fleet.webhooks.wait_delivered()
        got = envelopes(hook.ok(), secret)
        created = [e for e in got if e["type"] == "grant.created"]
        assert sorted(e["data"]["grant_id"] for e in created) == sorted(g.id for g in granted)
        for e in created:
            assert e["data"]["application_id"] == fleet.application.id
            assert e["time"].endswith("Z")
        (listed,) = await fleet.webhooks.list()
        assert listed.id == webhook.id
        deliveries = await fleet.webhooks.deliveries(webhook.id)
        assert {d.status for d in deliveries} == {"delivered"}
