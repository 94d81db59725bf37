"""Webhooks end to end over real sockets: a fleet serving, an HTTP receiver on loopback,
every delivery verified with the ``standardwebhooks`` package (an independent
implementation of the signing scheme)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from mailers import arf, mail_to_mx
from mailfleet import Fleet, GrantStatus, InvalidInput
from mailfleet.model.errors import GrantNotFound, WebhookNotFound, WorkspaceNotFound
from mailfleet.model.webhooks import DeliveryStatus, WebhookStatus
from relay import relay_peer
from support import wait_until
from webhook_receiver import Received, Receiver, in_delivery_order, receiver

pytestmark = pytest.mark.anyio

FAST = {
    "webhook_poll_interval": 0.02,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "poll_interval": 0.02,
}
INBOUND = (
    b"From: someone@example.org\r\nTo: sales@example.com\r\nSubject: Hello\r\n"
    b"Message-ID: <in-1@example.org>\r\n\r\nAre you there?\r\n"
)


@asynccontextmanager
async def serving(database_url: str, **settings: Any) -> AsyncIterator[Fleet]:
    options = {**FAST, **settings}
    async with Fleet(database_url=database_url, application="test", **options) as fleet:
        await fleet.add_domain("example.com")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def delivered(fleet: Fleet, within: float = 20.0) -> None:
    with anyio.fail_after(within):
        await fleet.webhooks.wait_delivered()


async def last_event(fleet: Fleet) -> int:
    """The id of the newest event so far (0: none)."""
    found = await fleet.events(limit=100_000)
    return found[-1].id if found else 0


async def events_after(fleet: Fleet, start: int) -> list[Any]:
    return await fleet.events(after=start, limit=100_000)


def verified(requests: list[Received], secret: str) -> list[dict[str, Any]]:
    """The envelopes of the requests answered 2xx, each checked by standardwebhooks."""
    return [r.verified(secret) for r in requests]


def first_seen(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event once, in the order it was first delivered (delivery is at-least-once)."""
    seen: dict[str, dict[str, Any]] = {}
    for e in envelopes:
        seen.setdefault(e["id"], e)
    return list(seen.values())


def by_grant(envelopes: list[dict[str, Any]]) -> dict[str | None, list[int]]:
    found: dict[str | None, list[int]] = defaultdict(list)
    for e in envelopes:
        found[e["data"]["grant_id"]].append(int(e["id"]))
    return found


async def test_the_fleets_events_arrive_signed_and_in_order_per_grant(database_url: str) -> None:
    """Provisioning, inbound mail, a send, a bounce, a complaint and a pause, each signed,
    each grant's in the order they happened."""
    async with (
        receiver() as hook,
        relay_peer() as peer,
        serving(
            database_url,
            smtp_port=0,
            relay_host="127.0.0.1",
            relay_port=peer.port,
            relay_starttls=False,
        ) as fleet,
    ):
        start = await last_event(fleet)
        webhook, secret = await fleet.webhooks.create(hook.url, description="everything")
        sales = await fleet.provision("sales@example.com")
        others = [await fleet.provision(f"agent{i}@example.com") for i in range(3)]
        await fleet.deliver(sales, INBOUND)
        peer.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: user unknown"
        for to in ("friend@example.org", "gone@example.org", "annoyed@example.org"):
            result = await fleet.send(sales, to, subject="Our offer", text="Buy now.")
            assert result.ok, result
        await wait_until(lambda: len(peer.received) == 2, within=20)
        complained = next(r for r in peer.received if r.rcpt_tos == ["annoyed@example.org"])
        message_id = next(
            line.split(":", 1)[1].strip()
            for line in complained.data.decode().splitlines()
            if line.lower().startswith("message-id:")
        )
        report = arf("annoyed@example.org", complained.mail_from, message_id)
        answer = await mail_to_mx(fleet, "fbl@fbl.example.net", "bounces@example.com", report)
        assert answer.startswith("250")
        with anyio.fail_after(20):
            while not await fleet.events(type="message.complained"):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        await fleet.set_grant_status(sales.id, GrantStatus.PAUSED)
        await delivered(fleet)

        envelopes = verified(hook.ok(), secret)
        outbox = await in_delivery_order(fleet, await events_after(fleet, start))
        assert sorted({int(e["id"]) for e in envelopes}) == sorted(e.id for e in outbox)
        types = {e["type"] for e in envelopes if e["data"]["grant_id"] == sales.id}
        assert {
            "grant.created",
            "message.received",
            "message.sent",
            "message.bounced",
            "message.complained",
            "grant.status_changed",
        } <= types
        order = by_grant(first_seen(envelopes))
        for grant in [sales, *others]:
            expected = [e.id for e in outbox if e.grant_id == grant.id]
            assert order[grant.id] == expected  # each grant's events in order, none missing
        one = next(e for e in envelopes if e["type"] == "message.bounced")
        assert one["data"]["application_id"] == fleet.application.id
        assert one["data"]["object"]["recipient"] == "gone@example.org"
        assert one["time"].endswith("Z")
        request = next(r for r in hook.ok() if r.json["id"] == one["id"])
        assert request.headers["webhook-id"] == one["id"]
        assert request.headers["content-type"] == "application/json"

        deliveries = await fleet.webhooks.deliveries(webhook.id, limit=1000)
        assert {d.status for d in deliveries} == {DeliveryStatus.DELIVERED}
        assert len(deliveries) == len(outbox)
        attempts = await fleet.webhooks.attempts(webhook.id, delivery=deliveries[0].id)
        assert attempts[0].ok
        assert attempts[0].status_code == 200
        assert attempts[0].response == "ok"
        assert attempts[0].latency_ms > 0


async def test_a_receiver_down_for_a_while_misses_nothing(database_url: str) -> None:
    async with receiver() as hook, serving(database_url) as fleet:
        start = await last_event(fleet)
        webhook, secret = await fleet.webhooks.create(hook.url)
        grants = [await fleet.provision(f"agent{i}@example.com") for i in range(4)]
        await delivered(fleet)
        # Down: first answering 500, then not listening at all (connection refused).
        hook.status = 500
        for grant in grants:
            await fleet.set_grant_status(grant.id, GrantStatus.PAUSED)
        await wait_until(lambda: any(r.headers["x-answered"] == "500" for r in hook.received))
        await hook.stop()
        for grant in grants:
            await fleet.set_grant_status(grant.id, GrantStatus.ACTIVE)
        more = [await fleet.provision(f"late{i}@example.com") for i in range(3)]
        with anyio.fail_after(10):
            while not any(  # noqa: ASYNC110 - polling the store
                "cannot connect" in (a.error or "")
                for a in await fleet.webhooks.attempts(webhook.id)
            ):
                await anyio.sleep(0.02)
        listed = await fleet.webhooks.deliveries(webhook.id, status="pending", limit=1000)
        assert listed
        failed = await fleet.webhooks.attempts(webhook.id, limit=1000)
        assert any(a.status_code == 500 for a in failed)
        refused = [a for a in failed if a.status_code is None]
        assert all(a.error for a in refused)  # refused, or cut off by the stop
        await anyio.sleep(0.3)
        # Up again.
        hook.status = 200
        await hook.start()
        await delivered(fleet, within=30)

        envelopes = verified(hook.ok(), secret)
        outbox = await in_delivery_order(fleet, await events_after(fleet, start))
        assert sorted({int(e["id"]) for e in envelopes}) == sorted(e.id for e in outbox)
        order = by_grant(first_seen(envelopes))
        for grant in [*grants, *more]:
            assert order[grant.id] == [e.id for e in outbox if e.grant_id == grant.id]
        assert (await fleet.webhooks.get(webhook.id)).status is WebhookStatus.ACTIVE


async def test_failing_then_disabled_then_enabled_and_replayed(database_url: str) -> None:
    async with (
        receiver(status=503) as hook,
        serving(
            database_url,
            webhook_failing_after=2,
            webhook_disable_after_failures=4,
            webhook_disable_after_hours=0.5 / 3600,
        ) as fleet,
    ):
        webhook, secret = await fleet.webhooks.create(hook.url)
        _, watcher_secret = await fleet.webhooks.create(
            f"{hook.url}/watch", event_types=["webhook.*"]
        )
        first = await fleet.provision("first@example.com")
        hook.answer = lambda r: 200 if r.path.endswith("/watch") else 503
        with anyio.fail_after(20):
            while (await fleet.webhooks.get(webhook.id)).status is not WebhookStatus.DISABLED:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        disabled = await fleet.webhooks.get(webhook.id)
        assert disabled.consecutive_failures >= 4
        assert disabled.failing_since is not None
        assert disabled.last_error == "HTTP 503"
        await delivered(fleet)  # the watcher got its events; the disabled one waits
        told = [e["type"] for e in verified(hook.ok(), watcher_secret)]
        assert told[:2] == ["webhook.failing", "webhook.disabled"]
        (failing,) = await fleet.events(type="webhook.failing")
        assert failing.payload["webhook_id"] == webhook.id
        assert failing.payload["last_error"] == "HTTP 503"

        # Disabled: nothing is posted to it, its events wait.
        hook.answer = None
        hook.status = 200
        posted = len(hook.received)
        second = await fleet.provision("second@example.com")
        await anyio.sleep(0.5)
        assert [r for r in hook.received[posted:] if not r.path.endswith("/watch")] == []

        enabled = await fleet.webhooks.update(webhook.id, status="active")
        assert enabled.status is WebhookStatus.ACTIVE
        assert enabled.consecutive_failures == 0
        await delivered(fleet)
        mine = [r for r in hook.ok() if not r.path.endswith("/watch")]
        got = first_seen(verified(mine, secret))
        assert [e["data"]["grant_id"] for e in got if e["type"] == "grant.created"] == [
            first.id,
            second.id,
        ]  # nothing missed while disabled

        # Replay: from an event id, and given deliveries.
        before = len(mine)
        created = [e for e in got if e["type"] == "grant.created"]
        count = await fleet.webhooks.replay(webhook.id, after_event=int(created[0]["id"]) - 1)
        assert count == len([e for e in got if int(e["id"]) >= int(created[0]["id"])])
        await delivered(fleet)
        mine = [r for r in hook.ok() if not r.path.endswith("/watch")]
        again = verified(mine[before:], secret)
        assert {e["id"] for e in again} >= {e["id"] for e in created}
        assert by_grant(first_seen(again)) == {
            grant: ids for grant, ids in by_grant(got).items() if grant in by_grant(again)
        }
        (one, *_) = await fleet.webhooks.deliveries(webhook.id, event=created[0]["id"])
        assert await fleet.webhooks.replay(webhook.id, deliveries=[one.id]) == 1
        await delivered(fleet)
        last = [r for r in hook.ok() if not r.path.endswith("/watch")][-1]
        assert last.verified(secret)["id"] == created[0]["id"]
        with pytest.raises(InvalidInput):
            await fleet.webhooks.replay(webhook.id)


async def test_filters_by_type_workspace_and_grant(database_url: str) -> None:
    async with (
        receiver() as by_type,
        receiver() as by_workspace,
        receiver() as by_grant_,
        serving(database_url) as fleet,
    ):
        await fleet.create_workspace("triage")
        picked = await fleet.provision("picked@example.com")
        _, s1 = await fleet.webhooks.create(by_type.url, event_types=["grant.status_changed"])
        _, s2 = await fleet.webhooks.create(by_workspace.url, workspaces=["triage"])
        hook3, s3 = await fleet.webhooks.create(by_grant_.url, grants=["picked@example.com"])
        assert hook3.grants == (picked.id,)
        in_triage = await fleet.provision("t@example.com", workspace="triage")
        other = await fleet.provision("o@example.com")
        for grant in (picked, in_triage, other):
            await fleet.set_grant_status(grant.id, GrantStatus.PAUSED)
        await delivered(fleet)

        typed = verified(by_type.ok(), s1)
        assert {e["type"] for e in typed} == {"grant.status_changed"}
        assert len(typed) == 3
        spaced = verified(by_workspace.ok(), s2)
        assert {e["data"]["grant_id"] for e in spaced} == {in_triage.id}
        assert {e["type"] for e in spaced} == {"grant.created", "grant.status_changed"}
        granted = verified(by_grant_.ok(), s3)
        assert [e["type"] for e in granted] == ["grant.status_changed"]
        assert {e["data"]["grant_id"] for e in granted} == {picked.id}

        with pytest.raises(WorkspaceNotFound):
            await fleet.webhooks.create(by_type.url, workspaces=["nowhere"])
        with pytest.raises(GrantNotFound):
            await fleet.webhooks.create(by_type.url, grants=["nobody@example.com"])
        with pytest.raises(InvalidInput) as raised:
            await fleet.webhooks.create(by_type.url, event_types=["Not A Type"])
        assert raised.value.field == "event_types"
        with pytest.raises(InvalidInput) as raised:
            await fleet.webhooks.create("ftp://example.com/hook")
        assert raised.value.field == "url"


async def test_a_rotated_secret_signs_beside_the_new_one_for_its_grace(database_url: str) -> None:
    async with receiver() as hook, serving(database_url) as fleet:
        webhook, old = await fleet.webhooks.create(hook.url)
        rotated, new = await fleet.webhooks.rotate_secret(webhook.id, grace_hours=3 / 3600)
        assert new != old
        assert len(rotated.secrets_valid_until) == 2
        await fleet.provision("during@example.com")
        await delivered(fleet)
        (during,) = hook.ok()
        assert len(during.headers["webhook-signature"].split()) == 2
        assert during.verified(old) == during.verified(new)  # both verify

        await anyio.sleep(3.1)  # the grace is over
        await fleet.provision("after@example.com")
        await delivered(fleet)
        after = hook.ok()[-1]
        assert len(after.headers["webhook-signature"].split()) == 1
        assert after.verified(new)["type"] == "grant.created"
        from standardwebhooks.webhooks import WebhookVerificationError

        with pytest.raises(WebhookVerificationError):
            after.verified(old)
        assert len((await fleet.webhooks.get(webhook.id)).secrets_valid_until) == 1


async def test_subscriptions_are_managed_and_kept_per_application(database_url: str) -> None:
    async with receiver() as hook, serving(database_url) as fleet:
        webhook, secret = await fleet.webhooks.create(hook.url, event_types=["grant.*"])
        shown = json.dumps(webhook.as_json())
        assert secret not in shown
        assert json.loads(shown)["event_types"] == ["grant.*"]
        assert json.loads(shown)["created_at"].endswith("Z")
        changed = await fleet.webhooks.update(
            webhook.id, url=f"{hook.url}/v2", description="v2", event_types=[]
        )
        assert changed.url.endswith("/v2")
        assert changed.description == "v2"
        assert changed.event_types == ()
        cleared = await fleet.webhooks.update(webhook.id, description="")
        assert cleared.description is None
        assert cleared.url.endswith("/v2")
        with pytest.raises(InvalidInput):
            await fleet.webhooks.update(webhook.id, status="failing")
        paused = await fleet.webhooks.update(webhook.id, status="disabled")
        assert paused.status is WebhookStatus.DISABLED
        async with Fleet(database_url=database_url, application="other") as other:
            assert await other.webhooks.list() == []
            with pytest.raises(WebhookNotFound):
                await other.webhooks.get(webhook.id)
            with pytest.raises(WebhookNotFound):
                await other.webhooks.deliveries(webhook.id)
            assert not await other.webhooks.delete(webhook.id)
        assert await fleet.webhooks.delete(webhook.id)
        assert await fleet.webhooks.list() == []
        with pytest.raises(WebhookNotFound):
            await fleet.webhooks.get(webhook.id)


async def test_attempts_keep_a_kib_of_the_answer(database_url: str) -> None:
    async with receiver(status=500, reply=b"x" * 3000) as hook, serving(database_url) as fleet:
        webhook, _ = await fleet.webhooks.create(hook.url)
        await fleet.provision("a@example.com")
        await wait_until(lambda: bool(hook.received))
        with anyio.fail_after(10):
            while not (attempts := await fleet.webhooks.attempts(webhook.id)):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        (attempt, *_) = attempts
        assert not attempt.ok
        assert attempt.status_code == 500
        assert attempt.response == "x" * 1024
        (pending, *_) = await fleet.webhooks.deliveries(webhook.id, status="pending")
        assert pending.last_status_code == 500
        assert pending.next_attempt_at is not None
        assert json.loads(json.dumps(pending.as_json()))["status"] == "pending"
        assert json.loads(json.dumps(attempt.as_json()))["status_code"] == 500


@pytest.mark.postgres
async def test_two_fleets_on_postgresql_deliver_each_event_once(postgres_url: str) -> None:
    hook = Receiver()
    await hook.start()
    try:
        options = {**FAST, "database_url": postgres_url, "application": "test"}
        async with Fleet(**options) as one, Fleet(**options) as two:
            await one.add_domain("example.com")
            _, secret = await one.webhooks.create(hook.url)
            async with anyio.create_task_group() as tg:
                await tg.start(one.webhooks.serve)
                await tg.start(two.webhooks.serve)
                addresses = [f"agent{i}@example.com" for i in range(40)]
                await one.provision_many(addresses[:20])
                await two.provision_many(addresses[20:])
                for i, address in enumerate(addresses):
                    fleet = one if i % 2 else two
                    await fleet.set_grant_status(address, GrantStatus.PAUSED)
                    await fleet.set_grant_status(address, GrantStatus.ACTIVE)
                with anyio.fail_after(30):
                    await one.webhooks.wait_delivered()
                tg.cancel_scope.cancel()
            outbox = [e for e in await one.events(limit=10_000) if e.grant_id is not None]
            outbox = await in_delivery_order(one, outbox)
        ids = [r.headers["webhook-id"] for r in hook.received]
        assert len(ids) == len(set(ids))  # none twice
        envelopes = verified(hook.ok(), secret)
        assert sorted(int(e["id"]) for e in envelopes if e["data"]["grant_id"]) == sorted(
            e.id for e in outbox
        )
        order = by_grant(envelopes)
        for grant_id, got in order.items():
            if grant_id is not None:
                assert got == [e.id for e in outbox if e.grant_id == grant_id]
    finally:
        await hook.stop()


async def test_replay_since_a_time(database_url: str) -> None:
    async with receiver() as hook, serving(database_url) as fleet:
        webhook, secret = await fleet.webhooks.create(hook.url)
        await fleet.provision("before@example.com")
        await delivered(fleet)
        await anyio.sleep(0.05)
        since = datetime.now(timezone(timedelta(hours=-5)))  # any zone: compared in UTC
        later = await fleet.provision("after@example.com")
        await delivered(fleet)
        assert await fleet.webhooks.replay(webhook.id, since=since) == 1
        await delivered(fleet)
        again = hook.ok()[-1].verified(secret)
        assert again["data"]["grant_id"] == later.id
        assert len(hook.ok()) == 3
