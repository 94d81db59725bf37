"""``GET /metrics`` over a real socket: the text parses with prometheus_client's parser
and every family holds what the store and the runtime say, after provisioning, sends
through a real relay (delivered, hard and soft bounces), a complaint and inbound mail
through the MX."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import anyio
import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from apiserver import ApiServer, api_server
from mailers import arf, mail_to_mx
from mailfleet import Agent, Fleet, InboundMessage, SendStatus
from mailfleet.api import create_app, serve_api
from mailfleet.store.scope import Scope
from relay import RelayPeer, relay_peer
from support import wait_for_events, wait_until

pytestmark = pytest.mark.anyio

SALES = "sales@example.com"


class Counter(Agent):
    handled: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        await anyio.sleep(0.01)
        self.handled.append(message.id)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> tuple[set[str], Samples]:
    families = list(text_string_to_metric_families(text))
    samples: Samples = {}
    for family in families:
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {family.name for family in families}, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def _scrape(client: httpx.AsyncClient) -> tuple[set[str], Samples]:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return _parse(answer.text)


@asynccontextmanager
async def _serving(database_url: str, peer: RelayPeer) -> AsyncIterator[Fleet]:
    Counter.handled = []
    async with Fleet(
        database_url=database_url,
        application="test",
        smtp_port=0,
        poll_interval=0.05,
        relay_host="127.0.0.1",
        relay_port=peer.port,
        relay_starttls=False,
        retry_schedule=[0.05],
    ) as fleet:
        fleet.bind(Counter)
        await fleet.add_domain("example.com")
        await fleet.provision(SALES, agent=Counter)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def _send(fleet: Fleet, to: str) -> None:
    result = await fleet.send(SALES, to, subject="Our offer", text="Buy now.")
    assert result.status is SendStatus.QUEUED, result


async def test_metrics_count_what_the_fleet_did(database_url: str) -> None:
    async with relay_peer() as peer, _serving(database_url, peer) as fleet:
        peer.rcpt_replies["nobody@example.org"] = "550 5.1.1 <nobody@example.org>: user unknown"
        peer.rcpt_replies["strict@example.org"] = (
            "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"
        )
        await fleet.provision_many([f"idle{i}@example.com" for i in range(4)])
        await fleet.restrict("idle0@example.com", reason="abuse report", by="test")
        for to in ("ok@example.org", "nobody@example.org", "strict@example.org"):
            await _send(fleet, to)
        await _send(fleet, "annoyed@example.org")
        await wait_for_events(fleet, "message.bounced", count=2)
        await wait_until(lambda: len(peer.received) == 2, within=20)
        annoyed = peer.received[-1]
        assert annoyed.rcpt_tos == ["annoyed@example.org"]
        (queued,) = [
            e for e in await fleet.events(type="message.queued") if "annoyed" in str(e.payload)
        ]
        report = arf("annoyed@example.org", annoyed.mail_from, queued.payload["header_message_id"])
        assert (await mail_to_mx(fleet, "fbl@fbl.example.net", "bounces@example.com", report))[
            :3
        ] == "250"
        for n in range(3):
            inbound = f"From: someone@example.org\r\nSubject: hi {n}\r\n\r\nHello.\r\n".encode()
            assert (await mail_to_mx(fleet, "someone@example.org", SALES, inbound))[:3] == "250"
        await wait_for_events(fleet, "message.complained")
        await wait_until(lambda: len(Counter.handled) == 3, within=20)
        await fleet.wait_idle()

        async with api_server(fleet) as server:
            _, before = await _scrape(server.anonymous())  # no key needed
            await _check_families(server, fleet)
            # Counted again from where the last scrape stopped, not from the start.
            await fleet.provision_many(["late1@example.com", "late2@example.com"])
            await _send(fleet, "ok2@example.org")
            await wait_until(lambda: len(peer.received) == 3, within=20)
            await wait_for_events(fleet, "message.sent", count=3)
            _, after = await _scrape(server.anonymous())
            app = {"application": "test"}
            active = {"status": "active", **app}
            assert _value(after, "mailfleet_grants", **active) == (
                _value(before, "mailfleet_grants", **active) + 2
            )
            out = {"direction": "out", **app}
            assert _value(after, "mailfleet_messages_total", **out) == 5
            sent = {"outcome": "sent", **app}
            assert _value(after, "mailfleet_deliveries_total", **sent) == (
                _value(before, "mailfleet_deliveries_total", **sent) + 1
            )


async def _check_families(server: ApiServer, fleet: Fleet) -> None:
    names, samples = await _scrape(server.anonymous())
    assert {
        "mailfleet_grants",
        "mailfleet_messages",
        "mailfleet_deliveries",
        "mailfleet_bounces",
        "mailfleet_complaints",
        "mailfleet_queue_depth",
        "mailfleet_dispatch_latency_seconds",
        "mailfleet_handler_duration_seconds",
        "mailfleet_webhook_delivery_lag_seconds",
    } <= names
    test, other = {"application": "test"}, {"application": "other"}
    assert _value(samples, "mailfleet_grants", status="active", **test) == 4
    assert _value(samples, "mailfleet_grants", status="restricted", **test) == 1
    assert _value(samples, "mailfleet_grants", status="paused", **test) == 0
    received = await fleet.count_events(type="message.received")
    assert received >= 3
    assert _value(samples, "mailfleet_messages_total", direction="in", **test) == received
    assert _value(samples, "mailfleet_messages_total", direction="out", **test) == 4
    assert _value(samples, "mailfleet_deliveries_total", outcome="sent", **test) == 2
    assert _value(samples, "mailfleet_bounces_total", **{"class": "hard"}, **test) == 1
    assert _value(samples, "mailfleet_bounces_total", **{"class": "soft"}, **test) == 1
    assert _value(samples, "mailfleet_complaints_total", **{"class": "abuse"}, **test) == 1
    for queue in ("inbound", "outbound", "dead_letters"):
        assert _value(samples, "mailfleet_queue_depth", queue=queue, **test) == 0

    # The runtime's histograms: every inbound message handled, its latency observed.
    count = _value(samples, "mailfleet_dispatch_latency_seconds_count", **test)
    assert count == 3
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "mailfleet_dispatch_latency_seconds_bucket"
        and dict(labels)["application"] == "test"
    )
    assert buckets[-1] == (float("inf"), count)
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)
    assert _value(samples, "mailfleet_dispatch_latency_seconds_sum", **test) > 0
    assert _value(samples, "mailfleet_handler_duration_seconds_count", **test) >= 3
    assert _value(samples, "mailfleet_handler_duration_seconds_sum", **test) >= 0.03

    # Not wired to webhooks here: the family is there, without samples.
    assert not [n for n, _ in samples if n == "mailfleet_webhook_delivery_lag_seconds"]

    # The other application of the store is labelled apart, with nothing of test's.
    assert _value(samples, "mailfleet_grants", status="active", **other) == 0
    assert _value(samples, "mailfleet_messages_total", direction="out", **other) == 0
    assert _value(samples, "mailfleet_bounces_total", **{"class": "hard"}, **other) == 0


async def test_openmetrics_on_request_and_the_webhook_lag_from_its_callable(
    api: ApiServer,
) -> None:
    asked: list[str] = []

    async def lag(scope: Scope) -> float | None:
        asked.append(scope.application_id)
        return 2.5 if scope.application_id == api.fleet.application.id else None

    async with anyio.create_task_group() as tg:
        app = create_app(api.tenants, webhook_lag=lag)
        port = await tg.start(serve_api, app, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            _, samples = await _scrape(client)
            lag_of_test = _value(
                samples, "mailfleet_webhook_delivery_lag_seconds", application="test"
            )
            assert lag_of_test == 2.5
            assert ("mailfleet_webhook_delivery_lag_seconds", (("application", "other"),)) not in (
                samples
            )
            assert set(asked) == {api.fleet.application.id, api.others["other"].application.id}

            answer = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert answer.headers["content-type"].startswith("application/openmetrics-text")
            parsed = {family.name for family in openmetrics_families(answer.text)}
            assert {
                "mailfleet_grants",
                "mailfleet_bounces",
                "mailfleet_webhook_delivery_lag_seconds",
            } <= parsed
        tg.cancel_scope.cancel()
