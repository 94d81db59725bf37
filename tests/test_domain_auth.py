"""Domain authentication end to end: records to publish, checks, the sending gate, audits.

A real authoritative DNS server on loopback serves the zones (``dns_server``),
the fleet asks it through ``dns_nameservers``, and a real aiosmtpd relay peer
shows whether mail left. Outside dev mode a domain sends only once verified.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from dnsserver import DnsServer
from mailfleet import Fleet
from mailfleet.model.outbound import SendStatus
from mailfleet.model.records import DnsRecord
from relay import RelayPeer, relay_peer
from support import publish, wait_for_events, wait_until

pytestmark = pytest.mark.anyio

DOMAIN = "example.com"
SENDER = f"desk@{DOMAIN}"
MX_HOST = "mx.example.net"


def strict_settings(dns: DnsServer, peer: RelayPeer, **settings: Any) -> dict[str, Any]:
    """A fleet outside dev mode, asking the loopback DNS server, sending to the peer."""
    return {
        "dev_mode": False,
        "dns_nameservers": [dns.address],
        "dns_timeout": 2,
        "mx_host": MX_HOST,
        "relay_host": "127.0.0.1",
        "relay_port": peer.port,
        "relay_starttls": False,
        "retry_schedule": [0.05],
        "poll_interval": 0.05,
        "dkim_key_secret": "correct horse battery staple",
        **settings,
    }


@asynccontextmanager
async def strict_fleet(
    database_url: str, dns: DnsServer, peer: RelayPeer, **settings: Any
) -> AsyncIterator[Fleet]:
    async with Fleet(database_url=database_url, **strict_settings(dns, peer, **settings)) as fleet:
        await fleet.add_domain(DOMAIN)
        await fleet.provision(SENDER)
        yield fleet


async def send(fleet: Fleet) -> Any:
    return await fleet.send(SENDER, "you@example.org", subject="Hi", text="Hello.")


async def delivered(fleet: Fleet, peer: RelayPeer, count: int) -> None:
    """Serve the fleet until the peer holds ``count`` messages."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.serve)
        await wait_until(lambda: len(peer.received) >= count, within=20)
        tg.cancel_scope.cancel()


def by_purpose(records: list[DnsRecord]) -> dict[str, DnsRecord]:
    return {record.purpose: record for record in records}


async def test_the_printed_records_published_pass_every_check(
    database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, strict_fleet(database_url, dns_server, peer) as fleet:
        records = await fleet.domain_records(DOMAIN)
        purposes = [record.purpose for record in records]
        assert purposes == [
            "mx",
            "spf",
            "dkim:mailfleet",
            "dkim:mailfleet-ed25519",
            "dmarc",
            "mta_sts",
            "tls_rpt",
        ]
        found = by_purpose(records)
        assert found["mx"].value == f"10 {MX_HOST}"
        assert found["spf"].value == "v=spf1 ip4:127.0.0.1 -all"  # the relay's address
        assert found["dmarc"].name == f"_dmarc.{DOMAIN}"
        assert not found["mta_sts"].required
        publish(dns_server, records)

        report = await fleet.check_domain(DOMAIN)
        assert {check.name: check.status for check in report.checks} == {
            "mx": "pass",
            "spf": "pass",
            "dkim:mailfleet": "pass",
            "dkim:mailfleet-ed25519": "pass",
            "dmarc": "pass",
            "mta_sts": "pass",
            "tls_rpt": "pass",
        }
        assert report.state == "verified"
        (domain,) = await fleet.domains()
        assert (domain.state, domain.authenticated) == ("verified", True)
        assert domain.audit is not None
        assert domain.audit["state"] == "verified"
        (event,) = await fleet.events(type="domain.audit_passed")
        assert event.payload["domain"] == DOMAIN


async def test_a_domain_not_checked_yet_cannot_send(
    database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, strict_fleet(database_url, dns_server, peer) as fleet:
        result = await send(fleet)
        assert result.status is SendStatus.DOMAIN_NOT_AUTHENTICATED
        assert result.detail is not None
        assert f"mailfleet domains check {DOMAIN}" in result.detail
        assert await fleet.outbox() == []


BREAKS = ["mx", "spf", "dkim:mailfleet", "dkim:mailfleet-ed25519", "dmarc"]


@pytest.mark.parametrize("purpose", BREAKS)
async def test_breaking_a_record_blocks_sending_and_fixing_it_restores_it(
    purpose: str, database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, strict_fleet(database_url, dns_server, peer) as fleet:
        records = await fleet.domain_records(DOMAIN)
        publish(dns_server, records)
        assert (await fleet.check_domain(DOMAIN)).state == "verified"
        assert (await send(fleet)).ok
        await delivered(fleet, peer, 1)

        broken = by_purpose(records)[purpose]
        dns_server.remove(broken.name, broken.type)
        report = await fleet.check_domain(DOMAIN)
        assert report.state == "failed"
        assert [check.name for check in report.failing] == [purpose]
        (failing,) = report.failing
        assert failing.fix  # says what to publish
        refused = await send(fleet)
        assert refused.status is SendStatus.DOMAIN_NOT_AUTHENTICATED
        assert refused.failing_checks == (purpose,)
        assert refused.detail is not None
        assert purpose in refused.detail
        (event,) = await fleet.events(type="domain.audit_failed")
        assert [check["name"] for check in event.payload["failing"]] == [purpose]

        publish(dns_server, [broken])
        assert (await fleet.check_domain(DOMAIN)).state == "verified"
        assert (await send(fleet)).ok
        await delivered(fleet, peer, 2)
        assert len(await fleet.events(type="domain.audit_passed")) == 2


async def test_a_wrong_spf_record_names_the_relay_address(
    database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, strict_fleet(database_url, dns_server, peer) as fleet:
        publish(dns_server, await fleet.domain_records(DOMAIN))
        dns_server.set(DOMAIN, "TXT", ["v=spf1 ip4:192.0.2.1 -all"])
        report = await fleet.check_domain(DOMAIN)
        (failing,) = report.failing
        assert failing.name == "spf"
        assert "127.0.0.1" in failing.explanation


async def test_a_dns_failure_keeps_a_verified_domain_sending(
    database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, strict_fleet(database_url, dns_server, peer) as fleet:
        publish(dns_server, await fleet.domain_records(DOMAIN))
        assert (await fleet.check_domain(DOMAIN)).state == "verified"
        dns_server.servfail(f"_dmarc.{DOMAIN}")
        report = await fleet.check_domain(DOMAIN)
        assert report.temporary
        (failing,) = report.failing
        assert (failing.name, failing.dns_error) == ("dmarc", "servfail")
        (domain,) = await fleet.domains()
        assert domain.state == "verified"  # our DNS trouble does not stop the mail
        assert (await send(fleet)).ok


async def test_audits_catch_drift_and_the_fix(database_url: str, dns_server: DnsServer) -> None:
    async with (
        relay_peer() as peer,
        strict_fleet(database_url, dns_server, peer, domain_audit_interval=0.2) as fleet,
    ):
        records = await fleet.domain_records(DOMAIN)
        publish(dns_server, records)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_for_events(fleet, "domain.audit_passed")
            assert (await send(fleet)).ok

            dns_server.set(DOMAIN, "TXT", ["v=spf1 ip4:192.0.2.1 -all"])  # drift
            await wait_for_events(fleet, "domain.audit_failed")
            (event,) = await fleet.events(type="domain.audit_failed")
            assert [check["name"] for check in event.payload["failing"]] == ["spf"]
            assert (await send(fleet)).status is SendStatus.DOMAIN_NOT_AUTHENTICATED

            publish(dns_server, [by_purpose(records)["spf"]])  # fixed
            await wait_for_events(fleet, "domain.audit_passed", count=2)
            assert (await send(fleet)).ok
            await wait_until(lambda: len(peer.received) >= 2, within=20)
            tg.cancel_scope.cancel()


async def test_each_due_domain_is_audited_by_one_worker(
    database_url: str, dns_server: DnsServer
) -> None:
    names = [f"d{n}.example.com" for n in range(6)]
    async with relay_peer() as peer:
        settings = strict_settings(dns_server, peer, domain_audit_interval=3600)
        async with (
            Fleet(database_url=database_url, **settings) as first,
            Fleet(database_url=database_url, **settings) as second,
        ):
            for name in names:
                await first.add_domain(name)
            counts: list[int] = []

            async def audit(fleet: Fleet) -> None:
                counts.append(await fleet.audit_domains())

            async with anyio.create_task_group() as tg:
                for fleet in (first, second, first, second):
                    tg.start_soon(audit, fleet)
            assert sum(counts) == len(names)
            assert all(domain.audited_at is not None for domain in await first.domains())
            assert await first.audit_domains() == 0  # not due again for an hour


async def test_the_bounce_domain_publishes_its_own_mx_and_spf(
    database_url: str, dns_server: DnsServer
) -> None:
    async with (
        relay_peer() as peer,
        strict_fleet(database_url, dns_server, peer, bounce_domain="bounces.{domain}") as fleet,
    ):
        records = await fleet.domain_records(DOMAIN)
        found = by_purpose(records)
        assert found["bounce_mx"].name == found["bounce_spf"].name == f"bounces.{DOMAIN}"
        publish(dns_server, records)
        report = await fleet.check_domain(DOMAIN)
        statuses = {check.name: check.status for check in report.checks}
        assert statuses["bounce_mx"] == statuses["bounce_spf"] == "pass"
        assert report.state == "verified"
        assert (await send(fleet)).ok
        await delivered(fleet, peer, 1)
        (received,) = peer.received
        assert received.mail_from.startswith("bounces+")
        assert received.mail_from.endswith(f"@bounces.{DOMAIN}")
        assert await fleet.mailroom.owns_domain(f"bounces.{DOMAIN}")
        assert not await fleet.mailroom.owns_domain("bounces.example.org")


def test_the_cli_adds_prints_and_checks_a_domain(mailfleet: Any, dns_server: DnsServer) -> None:
    """`domains add`, publish what `domains records --json` prints, `domains check`: all pass;
    breaking SPF fails the check with exit code 1."""
    import json

    env = {
        "MAILFLEET_DNS_NAMESERVERS": dns_server.address,
        "MAILFLEET_DNS_TIMEOUT": "2",
        "MAILFLEET_MX_HOST": MX_HOST,
        "MAILFLEET_RELAY_ADDRESSES": "192.0.2.25",
        "MAILFLEET_DKIM_KEY_SECRET": "correct horse battery staple",
    }
    added = mailfleet("domains", "add", DOMAIN, env=env)
    assert added.exit_code == 0, added.output
    assert f"mailfleet domains records {DOMAIN}" in added.output

    printed = mailfleet("domains", "records", DOMAIN, env=env)
    assert printed.exit_code == 0, printed.output
    assert f"{DOMAIN}. IN MX 10 {MX_HOST}." in printed.output
    assert f'{DOMAIN}. IN TXT "v=spf1 ip4:192.0.2.25 -all"' in printed.output
    listed = mailfleet("domains", "records", DOMAIN, "--json", env=env)
    records = [
        DnsRecord(r["name"], r["value"], r["type"], r["purpose"], r["required"])
        for r in json.loads(listed.stdout)
    ]
    publish(dns_server, records)

    checked = mailfleet("domains", "check", DOMAIN, "--json", env=env)
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["state"] == "verified"
    assert {check["status"] for check in report["checks"]} == {"pass"}
    text = mailfleet("domains", "check", DOMAIN, env=env)
    assert text.exit_code == 0
    assert text.output.rstrip().endswith(f"{DOMAIN}: verified")

    dns_server.set(DOMAIN, "TXT", ["v=spf1 ip4:198.51.100.7 -all"])
    failed = mailfleet("domains", "check", DOMAIN, env=env)
    assert failed.exit_code == 1
    assert "fail  spf" in failed.output
    assert "192.0.2.25" in failed.output
    assert failed.output.rstrip().endswith(f"{DOMAIN}: failed")
    listed_domains = json.loads(mailfleet("domains", "list", "--json", env=env).stdout)
    assert listed_domains[0]["state"] == "failed"
