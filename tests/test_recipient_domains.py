"""Recipient domains: a send to a domain that accepts no mail is refused before it is queued.

The loopback DNS server (``dns_server``) serves the zones; the fleet asks it
through ``dns_nameservers``; an aiosmtpd relay peer shows what left.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from dnsserver import DnsServer
from mailfleet import Fleet
from mailfleet.auth.dns import Resolver
from mailfleet.auth.recipients import check_recipient_domain
from mailfleet.model.outbound import SendStatus
from mailfleet.settings import Settings
from relay import relay_peer
from support import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def zones(dns_server: DnsServer) -> DnsServer:
    dns_server.set("mail.example.net", "MX", [(10, "mx.example.net")])
    dns_server.set("nullmx.example.net", "MX", [(0, ".")])
    dns_server.set("rootmx.example.net", "MX", [(10, ".")])
    dns_server.set("mixedmx.example.net", "MX", [(0, "."), (10, "mx.example.net")])
    dns_server.set("web.example.net", "A", ["192.0.2.80"])
    dns_server.set("web6.example.net", "AAAA", ["2001:db8::80"])
    dns_server.set("text.example.net", "TXT", ["nothing to see"])
    dns_server.set("broken.example.net", "A", ["192.0.2.1"])
    dns_server.servfail("broken.example.net")
    dns_server.set("slow.example.net", "A", ["192.0.2.1"])
    dns_server.silence("slow.example.net")
    return dns_server


@pytest.mark.parametrize(
    ("domain", "accepts", "says"),
    [
        ("mail.example.net", True, "has MX records"),
        ("nullmx.example.net", False, "null MX, RFC 7505"),
        ("rootmx.example.net", False, "its MX names no host"),
        ("mixedmx.example.net", True, "has MX records"),
        ("web.example.net", True, "implicit MX"),
        ("web6.example.net", True, "implicit MX"),
        ("text.example.net", False, "no MX and no address"),
        ("gone.example.net", False, "does not exist (NXDOMAIN)"),
        ("broken.example.net", None, "could not be looked up"),
        ("slow.example.net", None, "could not be looked up"),
    ],
)
async def test_a_domain_accepts_mail_by_its_mx_or_address(
    zones: DnsServer, domain: str, accepts: bool | None, says: str
) -> None:
    verdict = await check_recipient_domain(Resolver([zones.address], timeout=0.5), domain)
    assert (verdict.domain, verdict.accepts) == (domain, accepts)
    assert says in verdict.reason


def test_the_check_is_on_outside_dev_mode_or_with_nameservers() -> None:
    assert not Settings.load(dev_mode=True).check_recipient_domains
    assert Settings.load(dev_mode=True, dns_nameservers="127.0.0.1:53").check_recipient_domains
    assert Settings.load(dev_mode=False).check_recipient_domains
    assert not Settings.load(dev_mode=False, recipient_domain_check="off").check_recipient_domains
    assert Settings.load(recipient_domain_check="ON").check_recipient_domains


async def test_sends_to_dead_domains_never_reach_the_relay(
    database_url: str, zones: DnsServer
) -> None:
    async with (
        relay_peer() as peer,
        Fleet(
            database_url=database_url,
            dns_nameservers=[zones.address],
            dns_timeout=0.5,
            relay_host="127.0.0.1",
            relay_port=peer.port,
            relay_starttls=False,
            poll_interval=0.05,
        ) as fleet,
    ):
        await fleet.add_domain("example.com")
        zones.set("example.com", "MX", [(0, ".")])  # looked up, the fleet's own would fail
        await fleet.provision("desk@example.com")
        await fleet.provision("other@example.com")

        async def send(*to: str) -> Any:
            return await fleet.send("desk@example.com", list(to), subject="Hi", text="Hello.")

        null = await send("a@nullmx.example.net")
        assert null.status is SendStatus.INVALID_RECIPIENT
        assert null.detail == (
            "to: a@nullmx.example.net: nullmx.example.net does not accept mail (null MX, RFC 7505)"
        )
        gone = await send("ok@mail.example.net", "b@gone.example.net")
        assert gone.status is SendStatus.INVALID_RECIPIENT
        assert gone.detail == "to: b@gone.example.net: gone.example.net does not exist (NXDOMAIN)"
        assert await fleet.outbox() == []  # nothing queued

        for result in (
            await send("ok@mail.example.net"),
            await send("x@slow.example.net"),  # a timeout does not refuse
            await send("y@broken.example.net"),  # nor does a failing server
            await send("other@example.com"),  # the fleet's own domain: not looked up
        ):
            assert result.ok, result
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: len(peer.received) >= 4, within=20)
            tg.cancel_scope.cancel()
        assert sorted(r for m in peer.received for r in m.rcpt_tos) == [
            "ok@mail.example.net",
            "other@example.com",
            "x@slow.example.net",
            "y@broken.example.net",
        ]
