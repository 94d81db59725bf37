"""How webhook delivery behaves under load and failure: commits that land late on
PostgreSQL, shutdown and restart, an endpoint that is down, delivery in its own task."""

from __future__ import annotations

import gc
import warnings
from datetime import timedelta
from functools import partial
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from mailfleet import Fleet, GrantStatus
from mailfleet.runtime.webhooks import serve_webhooks, webhook_lag
from mailfleet.store.database import normalize_url
from mailfleet.store.scope import Scope
from mailfleet.store.tables import events_table, utcnow, webhook_lanes_table
from support import wait_until
from webhook_receiver import Receiver, in_delivery_order, receiver

pytestmark = pytest.mark.anyio

FAST = {
    "webhook_poll_interval": 0.02,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
}


@pytest.mark.postgres
async def test_an_event_whose_transaction_commits_late_is_not_missed(postgres_url: str) -> None:
    """PostgreSQL hands out event ids before commit: a transaction that took a lower id
    and commits after a higher one became visible must still be delivered, first."""
    async with receiver() as hook, Fleet(database_url=postgres_url, **FAST) as fleet:
        await fleet.add_domain("example.com")
        _, secret = await fleet.webhooks.create(hook.url)
        engine = sa.create_engine(normalize_url(postgres_url))
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(fleet.webhooks.serve)
                with engine.connect() as conn:
                    late = conn.begin()
                    late_id = conn.execute(
                        sa.insert(events_table)
                        .values(
                            application_id=fleet.application.id,
                            grant_id=None,
                            type="test.late",
                            payload={},
                            created_at=utcnow(),
                        )
                        .returning(events_table.c.id)
                    ).scalar_one()
                    grant = await fleet.provision("early@example.com")  # a higher id, committed
                    await anyio.sleep(0.5)
                    assert hook.received == []  # it waits for the open transaction
                    late.commit()
                with anyio.fail_after(10):
                    await fleet.webhooks.wait_delivered()
                tg.cancel_scope.cancel()
        finally:
            engine.dispose()
        got = [r.verified(secret) for r in hook.ok()]
        assert [e["type"] for e in got] == ["test.late", "grant.created"]
        assert int(got[0]["id"]) == late_id < int(got[1]["id"])
        assert got[1]["data"]["grant_id"] == grant.id


async def test_stopping_gives_the_lanes_back_and_a_restart_goes_on(database_url: str) -> None:
    async with receiver(delay=0.05) as hook, Fleet(database_url=database_url, **FAST) as fleet:
        await fleet.add_domain("example.com")
        _, secret = await fleet.webhooks.create(hook.url)
        await fleet.provision_many([f"agent{i}@example.com" for i in range(3)])
        for _ in range(10):
            for i in range(3):
                await fleet.set_grant_status(f"agent{i}@example.com", GrantStatus.PAUSED)
                await fleet.set_grant_status(f"agent{i}@example.com", GrantStatus.ACTIVE)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.webhooks.serve)
            await wait_until(lambda: len(hook.received) >= 5)
            tg.cancel_scope.cancel()
        assert not (await fleet.webhooks.backlog()).idle
        leases = await fleet.database.read(
            lambda c: c.execute(sa.select(webhook_lanes_table.c.lease_owner)).scalars().all()
        )
        assert leases
        assert set(leases) == {None}  # given back at once, not left to expire
        hook.delay = 0.0
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.webhooks.serve)
            with anyio.fail_after(10):  # far sooner than a lease would expire
                await fleet.webhooks.wait_delivered()
            tg.cancel_scope.cancel()
        outbox = [e for e in await fleet.events(limit=1000) if e.grant_id is not None]
        outbox = await in_delivery_order(fleet, outbox)
        got = [r.verified(secret) for r in hook.ok()]
        assert {int(e["id"]) for e in got} == {e.id for e in outbox}
        first: dict[str, list[int]] = {}
        for e in got:
            ids = first.setdefault(e["data"]["grant_id"], [])
            if int(e["id"]) not in ids:
                ids.append(int(e["id"]))
        for grant_id, ids in first.items():
            assert ids == [e.id for e in outbox if e.grant_id == grant_id]


async def test_an_endpoint_that_is_down_is_probed_one_delivery_at_a_time(
    database_url: str,
) -> None:
    async with (
        receiver(status=500) as hook,
        Fleet(database_url=database_url, webhook_lanes=8, **FAST) as fleet,
    ):
        await fleet.add_domain("example.com")
        webhook, _ = await fleet.webhooks.create(hook.url)
        await fleet.provision_many([f"agent{i}@example.com" for i in range(30)])
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.webhooks.serve)
            await wait_until(lambda: len(hook.received) >= 1)
            await anyio.sleep(0.3)  # the lanes in flight at the first failure come back
            before = len(hook.received)
            await anyio.sleep(1.0)
            probes = len(hook.received) - before
            assert 1 <= probes <= 12  # about one every 0.2 s, not 30 lanes each time
            assert (await fleet.webhooks.get(webhook.id)).status.value == "failing"
            scope = Scope(fleet.database, fleet.application.id)
            lag = await webhook_lag(scope)
            assert lag is not None
            assert lag >= 1.0  # the oldest event has waited since before the first failure
            hook.status = 200
            with anyio.fail_after(10):
                await fleet.webhooks.wait_delivered()
            tg.cancel_scope.cancel()
        assert (await fleet.webhooks.get(webhook.id)).status.value == "active"
        assert await webhook_lag(scope) is None
        (recovered,) = await fleet.events(type="webhook.recovered")
        assert recovered.payload["webhook_id"] == webhook.id


async def test_delivery_runs_in_a_task_of_its_own_when_serve_does_not(database_url: str) -> None:
    """``mailfleet api`` processes deliver with ``fleet.webhooks.serve`` beside a fleet
    that serves without ``webhook_delivery``."""
    hook = Receiver()
    await hook.start()
    try:
        async with Fleet(
            database_url=database_url, webhook_delivery=False, poll_interval=0.02, **FAST
        ) as fleet:
            await fleet.add_domain("example.com")
            _, secret = await fleet.webhooks.create(hook.url)
            async with anyio.create_task_group() as tg:
                await tg.start(fleet.serve)
                grant = await fleet.provision("a@example.com")
                await anyio.sleep(0.3)
                assert hook.received == []
                await tg.start(fleet.webhooks.serve)
                with anyio.fail_after(10):
                    await fleet.webhooks.wait_delivered()
                tg.cancel_scope.cancel()
        (one,) = [r.verified(secret) for r in hook.ok()]
        assert one["data"]["grant_id"] == grant.id
    finally:
        await hook.stop()


async def test_a_subscription_deleted_while_delivering_takes_its_deliveries_along(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        receiver(delay=0.2) as slow,
        receiver() as other,
        Fleet(database_url=database_url, **FAST) as fleet,
    ):
        await fleet.add_domain("example.com")
        doomed, _ = await fleet.webhooks.create(slow.url)
        _, secret = await fleet.webhooks.create(other.url)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.webhooks.serve)
            await fleet.provision_many([f"agent{i}@example.com" for i in range(5)])
            await wait_until(lambda: len(slow.received) >= 1)
            assert await fleet.webhooks.delete(doomed.id)
            with anyio.fail_after(10):
                await fleet.webhooks.wait_delivered()
            await anyio.sleep(0.4)  # the posts in flight came back and were recorded
            tg.cancel_scope.cancel()
        assert len({r.verified(secret)["id"] for r in other.ok()}) == 5
        assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_delivered_deliveries_past_their_retention_are_pruned(database_url: str) -> None:
    async with receiver() as hook, Fleet(database_url=database_url, **FAST) as fleet:
        await fleet.add_domain("example.com")
        webhook, _ = await fleet.webhooks.create(hook.url)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.webhooks.serve)
            await fleet.provision_many([f"agent{i}@example.com" for i in range(3)])
            with anyio.fail_after(10):
                await fleet.webhooks.wait_delivered()
            hook.status = 500
            await fleet.provision("waiting@example.com")
            await wait_until(lambda: any(r.headers["x-answered"] == "500" for r in hook.received))
            tg.cancel_scope.cancel()
        sender = fleet.webhooks.delivery()
        assert await sender.prune(utcnow() - timedelta(days=1)) == 0  # all too recent
        assert await sender.prune(utcnow() + timedelta(seconds=1)) == 3
        (left,) = await fleet.webhooks.deliveries(webhook.id)
        assert left.status == "pending"  # never pruned before it is delivered
        attempts = await fleet.webhooks.attempts(webhook.id)
        assert {a.delivery_id for a in attempts} == {left.id}


async def test_one_process_delivers_for_every_application(database_url: str) -> None:
    """What ``mailfleet api`` runs: a sender per application that has a subscription."""
    async with (
        receiver() as hook_a,
        receiver() as hook_b,
        Fleet(database_url=database_url, application="a", **FAST) as a,
        Fleet(database_url=database_url, application="b", **FAST) as b,
    ):
        await a.add_domain("a.example.com")
        await b.add_domain("b.example.com")
        _, secret_a = await a.webhooks.create(hook_a.url)
        _, secret_b = await b.webhooks.create(hook_b.url)
        async with anyio.create_task_group() as tg:
            await tg.start(partial(serve_webhooks, a.database, a.settings, rescan=0.05))
            grant_a = await a.provision("x@a.example.com")
            grant_b = await b.provision("x@b.example.com")
            with anyio.fail_after(10):
                await a.webhooks.wait_delivered()
                await b.webhooks.wait_delivered()
            tg.cancel_scope.cancel()
        (got_a,) = [r.verified(secret_a) for r in hook_a.ok()]
        (got_b,) = [r.verified(secret_b) for r in hook_b.ok()]
        assert got_a["data"]["grant_id"] == grant_a.id
        assert got_a["data"]["application_id"] == a.application.id
        assert got_b["data"]["grant_id"] == grant_b.id
        assert got_b["data"]["application_id"] == b.application.id


async def test_stopping_closes_every_connection(database_url: str) -> None:
    async with receiver() as hook, Fleet(database_url=database_url, **FAST) as fleet:
        await fleet.add_domain("example.com")
        await fleet.webhooks.create(hook.url)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with anyio.create_task_group() as tg:
                await tg.start(fleet.webhooks.serve)
                await fleet.provision_many([f"agent{i}@example.com" for i in range(20)])
                with anyio.fail_after(10):
                    await fleet.webhooks.wait_delivered()
                tg.cancel_scope.cancel()
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert len(hook.ok()) == 20
        await wait_until(lambda: not hook._writers)  # the receiver saw every connection close


@pytest.mark.postgres
async def test_two_worker_processes_deliver_each_event_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """``mailfleet worker`` processes on one PostgreSQL database: every event reaches the
    receiver once, each grant's in order."""
    from test_workers import start_worker, stop_workers, wait_serving

    journal = tmp_path / "journal"
    journal.mkdir()
    hook = Receiver()
    await hook.start()
    try:
        async with Fleet(database_url=postgres_url, application="test") as fleet:
            await fleet.add_domain("example.com")
            _, secret = await fleet.webhooks.create(hook.url)
            env = {"MAILFLEET_WEBHOOK_POLL_INTERVAL": "0.02", "MAILFLEET_WEBHOOK_LANES": "8"}
            workers = [start_worker(postgres_url, journal, f"w{i}", env=env) for i in range(2)]
            try:
                await wait_serving(workers)
                addresses = [f"agent{i}@example.com" for i in range(40)]
                await fleet.provision_many(addresses)
                for address in addresses:
                    await fleet.set_grant_status(address, GrantStatus.PAUSED)
                    await fleet.set_grant_status(address, GrantStatus.ACTIVE)
                with anyio.fail_after(60):
                    await fleet.webhooks.wait_delivered()
            finally:
                await stop_workers(workers)
            for worker in workers:
                assert worker.process.returncode == 0, worker.errors()
            outbox = [e for e in await fleet.events(limit=10_000) if e.grant_id is not None]
            outbox = await in_delivery_order(fleet, outbox)
            deliveries = {
                attempt.delivery_id
                for attempt in await fleet.webhooks.attempts(
                    (await fleet.webhooks.list())[0].id, limit=10_000
                )
            }
        ids = [r.headers["webhook-id"] for r in hook.received]
        assert len(ids) == len(set(ids)) == len(outbox) == len(deliveries)  # each once
        got: dict[str, list[int]] = {}
        for request in hook.ok():
            envelope = request.verified(secret)
            got.setdefault(envelope["data"]["grant_id"], []).append(int(envelope["id"]))
        for grant_id, ids_of_grant in got.items():
            assert ids_of_grant == [e.id for e in outbox if e.grant_id == grant_id]
    finally:
        await hook.stop()
