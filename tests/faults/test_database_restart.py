"""Database restarts: PostgreSQL restarted, or stopped for longer than the lease TTL, under load.

A private PostgreSQL server (``tests/faults/privatepg.py``) serves two ``mailfleet worker``
processes (``tests/worker_app.py``'s ``Journal``, lease TTL 1.5 s; the first also runs the
MX, both run a sender to an aiosmtpd relay peer) and, in the test's process, a fleet that
sends and the HTTP API. While mail arrives over SMTP (each grant's messages in sequence,
the next once the last got its 250, retried like an MTA on anything else) and ``send``
queues mail, the server is restarted (``pg_ctl restart -m fast``) or stopped for 3 s
(twice the TTL: every lease lapses) and started again. Then:

- nothing is lost: every message the MX acknowledged with 250 was handled to its end, and
  every reply and every send that ``send`` answered ``queued`` reached the relay;
- each grant's messages were handled in order and never by two handlers at once, across
  both processes (the journals record each run's start and end, or its interruption);
- both workers logged the outage and the recovery, and ``/healthz`` answered 503 with the
  store ``unavailable: ...`` while the server was down and 200 with the store ``ok`` after.
"""

from __future__ import annotations

import smtplib
import time
from collections import defaultdict
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from privatepg import PrivatePostgres

from apiserver import api_server
from dnsserver import DnsServer
from mailfleet import Fleet, StoreUnavailable
from relay import relay_peer
from sending import FREE
from support import free_port, wait_until
from test_workers import (
    assert_handled_in_order,
    handler_runs,
    read_journals,
    replies,
    start_worker,
    stop_workers,
    wait_serving,
)
from worker_app import Journal

pytestmark = pytest.mark.anyio

GRANTS = 6
PER_GRANT = 12
SENDS = 12
LEASE_TTL = 1.5  # the workers' lease here: the long stop outlasts it
OUTSIDE = "someone@outside.example"


def mail(to: str, seq: int) -> bytes:
    return (
        f"From: {OUTSIDE}\r\nTo: {to}\r\nSubject: {seq}\r\n"
        f"Message-ID: <{seq}.{to}@outside.example>\r\n\r\nHello.\r\n"
    ).encode()


def smtp_send(port: int, to: str, data: bytes) -> bool:
    """One try at the MX: whether it answered 250 to the message."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(OUTSIDE, [to], data)
        return True
    except (smtplib.SMTPException, OSError):
        return False


@pytest.mark.parametrize("outage", ["restart", "stop"])
async def test_workers_mx_and_sender_live_through_a_database_restart(
    outage: str, private_pg: PrivatePostgres, dns_server: DnsServer, tmp_path: Path
) -> None:
    url = private_pg.url
    journal = tmp_path / "journal"
    journal.mkdir()
    # Each worker is an MX for half the grants: woken by its own deliveries, each
    # claims its half at once (an MX's worker would otherwise take every grant first).
    smtp_ports = (free_port(), free_port())
    acked: dict[str, list[int]] = defaultdict(list)  # address -> seqs answered 250
    queued: list[str] = []  # subjects of the sends answered "queued"
    health: list[tuple[float, int, str]] = []  # (time, HTTP status, the store part)
    async with (
        relay_peer() as relay,
        Fleet(
            database_url=url,
            application="test",
            agents=[Journal],
            recipient_domain_check="off",
            dns_nameservers=[dns_server.address],
        ) as fleet,
    ):
        await fleet.add_domain("example.com")
        await fleet.create_workspace("free", policy=FREE)
        addresses = [f"journal{i}@example.com" for i in range(GRANTS)]
        provisioned = await fleet.provision_many(addresses, agent=Journal, workspace="free")
        grant_of = {r.grant.address: r.grant.id for r in provisioned if r.grant is not None}
        env = {
            "MAILFLEET_RELAY_HOST": "127.0.0.1",
            "MAILFLEET_RELAY_PORT": str(relay.port),
            "MAILFLEET_RELAY_STARTTLS": "false",
            "MAILFLEET_DNS_NAMESERVERS": dns_server.address,
            "MAILFLEET_RECIPIENT_DOMAIN_CHECK": "off",
            "MAILFLEET_RETRY_SCHEDULE": "[0.2, 0.5, 1]",
            "MAILFLEET_LEASE_TTL": str(LEASE_TTL),
        }
        workers = [
            start_worker(
                url, journal, "worker-mx", env={**env, "MAILFLEET_SMTP_PORT": str(smtp_ports[0])}
            ),
            start_worker(
                url, journal, "worker-2", env={**env, "MAILFLEET_SMTP_PORT": str(smtp_ports[1])}
            ),
        ]
        try:
            await wait_serving(workers)
            async with api_server(fleet, others=()) as api, anyio.create_task_group() as tg:

                async def watch_health() -> None:
                    async with httpx.AsyncClient(base_url=api.url, timeout=2) as client:
                        while True:
                            try:
                                answer = await client.get("/healthz")
                                store = str(answer.json().get("store"))
                                health.append((time.monotonic(), answer.status_code, store))
                            except httpx.HTTPError as exc:
                                health.append((time.monotonic(), 0, repr(exc)))
                            await anyio.sleep(0.1)

                async def mail_in() -> None:
                    for seq in range(PER_GRANT):
                        for n, address in enumerate(addresses):
                            data = mail(address, seq)
                            # Tried again until it gets its 250, as an MTA would (sooner).
                            while True:
                                if await anyio.to_thread.run_sync(
                                    smtp_send, smtp_ports[n % 2], address, data
                                ):
                                    break
                                await anyio.sleep(0.2)
                            acked[address].append(seq)
                        await anyio.sleep(0.05)

                async def send_out() -> None:
                    for n in range(SENDS):
                        subject = f"send {n}"
                        while True:
                            try:
                                result = await fleet.send(
                                    grant_of[addresses[n % GRANTS]],
                                    OUTSIDE,
                                    subject=subject,
                                    text="Hello.",
                                    idempotency_key=subject,
                                )
                            except StoreUnavailable:
                                await anyio.sleep(0.2)
                                continue
                            if result.status.value == "queued":
                                queued.append(subject)
                            break
                        await anyio.sleep(0.15)

                tg.start_soon(watch_health)
                with anyio.fail_after(90):
                    async with anyio.create_task_group() as load:
                        load.start_soon(mail_in)
                        load.start_soon(send_out)
                        await wait_until(
                            lambda: sum(map(len, acked.values())) >= GRANTS * PER_GRANT // 3,
                            within=60,
                        )
                        down_at = time.monotonic()
                        if outage == "restart":
                            await anyio.to_thread.run_sync(private_pg.restart)
                        else:
                            await anyio.to_thread.run_sync(private_pg.stop)
                            await anyio.sleep(2 * LEASE_TTL)
                            await anyio.to_thread.run_sync(private_pg.start)
                        up_at = time.monotonic()
                    # Everything acknowledged is handled, and every reply and send is out.
                    expected = {
                        (address, f"Re: {seq}") for address in addresses for seq in range(PER_GRANT)
                    }
                    await wait_until(
                        lambda: (
                            _ended(journal) >= GRANTS * PER_GRANT
                            and expected <= set(replies(relay))
                            and set(queued) <= _subjects(relay)
                        ),
                        within=60,
                    )
                    await wait_until(lambda: bool(health) and health[-1][1] == 200, within=20)
                await anyio.sleep(0.3)  # a message wrongly run again would show up by now
                tg.cancel_scope.cancel()
        finally:
            await stop_workers(workers)

    # nothing lost: what the MX acknowledged and what send queued
    assert {a: sorted(s) for a, s in acked.items()} == {
        a: list(range(PER_GRANT)) for a in addresses
    }
    assert len(queued) == SENDS
    assert set(queued) <= _subjects(relay)
    # each grant's messages in order, one handler at a time, across both workers
    entries = read_journals(journal)
    runs = handler_runs(entries, victim=-1, killed_at=0)
    for address in addresses:
        assert_handled_in_order(grant_of[address], runs[grant_of[address]], PER_GRANT)
    assert len({e.pid for e in entries}) == 2, "both workers had work"
    # the outage is in the logs: each worker saw it and saw it end
    for worker in workers:
        errors = worker.errors()
        assert worker.process.returncode == 0, errors
        assert "Traceback" not in errors, errors
        if outage == "stop":
            assert "retrying with backoff" in errors, errors
            assert "the store works again" in errors, errors
        else:
            assert "was lost" in errors or "retrying with backoff" in errors, errors
    # /healthz: 503 with the store unavailable while the server was down, 200 and ok after
    during = [h for h in health if down_at <= h[0] <= up_at]
    if outage == "stop":
        assert any(
            status == 503 and store.startswith("unavailable") for _, status, store in during
        ), during
    assert all(
        (status, store) == (200, "ok") or (status == 503 and store.startswith("unavailable"))
        for _, status, store in health
        if status
    ), health
    assert health[-1][1:] == (200, "ok"), health[-5:]


def _ended(journal: Path) -> int:
    """Distinct (grant, seq) handled to their end so far."""
    return len({(e.grant, e.seq) for e in read_journals(journal) if e.kind == "end"})


def _subjects(relay: object) -> set[str]:
    return {subject for _, subject in replies(relay)}  # type: ignore[arg-type]
