"""One-click unsubscribe (RFC 8058) and the mailto address (RFC 2369), over real sockets.

Bulk mail leaves through the fleet's sender to an aiosmtpd relay peer on
loopback; its DKIM signatures are verified with dkimpy, the keys served by a
DNS server on loopback. The mailto path is a real SMTP session with the
fleet's own MX. The HTTP routes (``POST /v1/unsubscribe/TOKEN``) belong to the
API and are tested there; they call ``fleet.unsubscribe``, tested here.
"""

from __future__ import annotations

import smtplib

import anyio
import dkim
import pytest
import sqlalchemy as sa

from consenting import (
    SENDER,
    TOKEN,
    Newsletter,
    consent_fleet,
    count,
    facts,
    header,
    list_unsubscribe,
    send_and_receive,
)
from dnsserver import DnsServer
from mailers import mail_to_mx
from mailfleet import (
    Fleet,
    InvalidInput,
    InvalidToken,
    SendCategory,
    SendStatus,
    SuppressionReason,
)
from mailfleet.store.tables import events_table, queue_table, unsubscribe_tokens_table
from relay import relay_peer
from support import dkim_dns, wait_until

pytestmark = pytest.mark.anyio


def unsubscribe_request(sender: str, to: str) -> bytes:
    """What a mail client sends to the mailto address of List-Unsubscribe."""
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: unsubscribe\r\n"
        "Message-ID: <unsub-1@example.org>\r\n\r\nPlease remove me.\r\n"
    ).encode()


async def test_a_bulk_send_carries_one_click_headers_signed_by_dkim(
    database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")

        mailto, url = list_unsubscribe(sent.data)
        local, _, domain = mailto.partition("@")
        assert local.startswith("unsubscribe+")
        token = local.removeprefix("unsubscribe+")
        assert TOKEN.fullmatch(token)
        assert len(local) <= 64  # RFC 5321's limit on a local part
        assert domain == "example.com"  # no bounce domain set: the sending domain
        assert url == f"http://127.0.0.1:8025/v1/unsubscribe/{token}"
        assert header(sent.data, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        assert b"=?utf-8?" not in sent.data  # the URL is not mangled into encoded words

        (domain_record,) = await fleet.domains()
        dnsfunc = dkim_dns(dns_server, domain_record)
        signatures = sent.data.count(b"DKIM-Signature:")
        assert signatures == 2  # RSA and Ed25519
        verifier = dkim.DKIM(sent.data)
        for index in range(signatures):
            assert verifier.verify(idx=index, dnsfunc=dnsfunc)
            signed = {name.lower() for name, _ in verifier.signed_headers}
            assert {b"list-unsubscribe", b"list-unsubscribe-post"} <= signed
        # Covered: a relay that rewrites the link breaks every signature.
        forged = sent.data.replace(token.encode(), b"a" * 32)
        assert not any(
            dkim.DKIM(forged).verify(idx=index, dnsfunc=dnsfunc) for index in range(signatures)
        )


async def test_the_headers_name_the_bounce_domain_and_the_public_url(database_url: str) -> None:
    async with (
        relay_peer() as peer,
        consent_fleet(
            database_url,
            peer,
            bounce_domain="bounces.{domain}",
            public_url="https://mail.example.com/",
        ) as fleet,
    ):
        _, sent = await send_and_receive(fleet, peer, "bob@example.org", category="bulk")
        mailto, url = list_unsubscribe(sent.data)
        token = mailto.split("+", 1)[1].split("@", 1)[0]
        assert mailto.endswith("@bounces.example.com")
        assert url == f"https://mail.example.com/v1/unsubscribe/{token}"


async def test_each_recipient_has_its_own_token_and_keeps_it(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, first = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        _, again = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        _, other = await send_and_receive(fleet, peer, "bob@example.org", category="bulk")
        assert list_unsubscribe(first.data) == list_unsubscribe(again.data)
        assert list_unsubscribe(other.data)[0] != list_unsubscribe(first.data)[0]
        assert await count(fleet, unsubscribe_tokens_table) == 2


async def test_transactional_mail_has_no_unsubscribe_headers_and_bulk_has_one_recipient(
    database_url: str,
) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="transactional")
        assert header(sent.data, "List-Unsubscribe") is None
        assert header(sent.data, "List-Unsubscribe-Post") is None

        two = await fleet.send(
            SENDER, ["ada@example.org", "bob@example.org"], subject="x", text="x", category="bulk"
        )
        assert two.status is SendStatus.REJECTED
        assert "one recipient" in (two.detail or "")
        unknown = await fleet.send(SENDER, "ada@example.org", subject="x", text="x", category="x")
        assert unknown.status is SendStatus.REJECTED
        assert "category" in (unknown.detail or "")


async def test_the_token_unsubscribes_at_once_and_only_once(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        sent_result, sent = await send_and_receive(
            fleet, peer, "ada@example.org", category=SendCategory.BULK
        )
        token = list_unsubscribe(sent.data)[1].rsplit("/", 1)[1]
        grant = await fleet.grant(SENDER)

        before = await fleet.unsubscribe_status(token)
        assert not before.unsubscribed
        assert (before.recipient, before.sender) == ("ada@example.org", SENDER)

        result = await fleet.unsubscribe(token)
        assert result.unsubscribed
        assert (result.recipient, result.grant_id, result.via) == (
            "ada@example.org",
            grant.id,
            "one_click",
        )
        entry = await fleet.suppression("ada@example.org", workspace="letters")
        assert entry is not None
        assert entry.reason is SuppressionReason.UNSUBSCRIBE
        assert entry.workspace == "letters"
        (event,) = await fleet.events(type="recipient.unsubscribed")
        assert event.grant_id == grant.id
        assert event.payload["recipient"] == "ada@example.org"
        assert event.payload["via"] == "one_click"
        assert entry.event_id == event.id

        await wait_until(lambda: len(Newsletter.unsubscribes) == 1, within=20)
        (called,) = Newsletter.unsubscribes
        assert called.recipient == "ada@example.org"
        assert called.via == "one_click"
        assert called.message_id == sent_result.message_id
        assert called.workspace_id == grant.workspace_id

        # Again, by either path: the same answer, and nothing more is recorded.
        assert await fleet.unsubscribe(token) == result
        assert await fleet.unsubscribe(token.upper(), via="mail") == result
        assert await fleet.unsubscribe_status(token) == result
        assert await count(fleet, events_table, type="recipient.unsubscribed") == 1
        assert await count(fleet, queue_table, kind="unsubscribe") <= 1
        await anyio.sleep(0.2)
        assert len(Newsletter.unsubscribes) == 1

        refused = await fleet.send(
            SENDER, "ada@example.org", subject="More", text="x", category="bulk"
        )
        assert refused.status is SendStatus.SUPPRESSED
        assert "unsubscribe" in (refused.detail or "")


async def test_concurrent_unsubscribes_record_one(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        token = list_unsubscribe(sent.data)[1].rsplit("/", 1)[1]
        answers = []

        async def click() -> None:
            answers.append(await fleet.unsubscribe(token))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(click)
        assert len(set(answers)) == 1
        assert await count(fleet, events_table, type="recipient.unsubscribed") == 1
        assert await count(fleet, queue_table, kind="unsubscribe") <= 1


async def test_mail_to_the_unsubscribe_address_over_the_mx_unsubscribes(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        mailto, _ = list_unsubscribe(sent.data)

        answer = await mail_to_mx(
            fleet, "ada@example.org", mailto, unsubscribe_request("ada@example.org", mailto)
        )
        assert answer.startswith("250")
        assert "unsubscribed" in answer
        await wait_until(lambda: len(Newsletter.unsubscribes) == 1, within=20)
        assert Newsletter.unsubscribes[0].via == "mail"
        entry = await fleet.suppression("ada@example.org", workspace="letters")
        assert entry is not None
        assert entry.reason is SuppressionReason.UNSUBSCRIBE
        (event,) = await fleet.events(type="recipient.unsubscribed")
        assert event.payload["via"] == "mail"
        assert Newsletter.messages == []  # a request, not mail for the agent

        # The same request mailed again (a client retrying) changes nothing more.
        again = await mail_to_mx(
            fleet, "ada@example.org", mailto, unsubscribe_request("ada@example.org", mailto)
        )
        assert again.startswith("250")
        assert await count(fleet, events_table, type="recipient.unsubscribed") == 1


async def test_a_forged_token_is_refused_and_changes_nothing(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        mailto, url = list_unsubscribe(sent.data)
        token = url.rsplit("/", 1)[1]
        before = await facts(fleet)

        tampered = token[:-1] + ("a" if token[-1] != "a" else "b")  # its tag changed
        made_up = "a" * 32
        for forged in (tampered, made_up):
            with pytest.raises(InvalidToken) as refused:
                await fleet.unsubscribe(forged)
            assert refused.value.field == "token"
            assert refused.value.kind == "unsubscribe"
            assert "no such unsubscribe token" in str(refused.value)
            with pytest.raises(InvalidToken):
                await fleet.unsubscribe_status(forged)
        for malformed in ("", "not-a-token", token + "a", token[:-1] + "1"):
            with pytest.raises(InvalidToken, match="not a mailfleet token"):
                await fleet.unsubscribe(malformed)
        with pytest.raises(InvalidInput, match="via"):
            await fleet.unsubscribe(token, via="carrier-pigeon")

        # Over the MX a forged address is an unknown mailbox: refused at RCPT.
        def rcpt(address: str) -> int:
            with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0) as client:
                client.ehlo("mx.example.net")
                client.mail("ada@example.org")
                return client.rcpt(address)[0]

        forged_mailto = mailto.replace(token, tampered)
        assert await anyio.to_thread.run_sync(rcpt, forged_mailto) == 550
        assert (
            await anyio.to_thread.run_sync(rcpt, "unsubscribe+" + made_up + "@example.com") == 550
        )
        assert await anyio.to_thread.run_sync(rcpt, mailto) == 250  # the real one is known
        assert await facts(fleet) == before
        assert await fleet.suppression("ada@example.org", workspace="letters") is None


async def test_another_applications_token_is_refused(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        token = list_unsubscribe(sent.data)[1].rsplit("/", 1)[1]
        async with Fleet(database_url=database_url, application="other") as other:
            with pytest.raises(InvalidToken):
                await other.unsubscribe(token)
        assert await fleet.suppression("ada@example.org", workspace="letters") is None
        assert not (await fleet.unsubscribe_status(token)).unsubscribed


async def test_an_unsubscribe_after_the_suppression_was_lifted_suppresses_again(
    database_url: str,
) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        token = list_unsubscribe(sent.data)[1].rsplit("/", 1)[1]
        first = await fleet.unsubscribe(token)
        assert await fleet.unsuppress("ada@example.org", workspace="letters")

        second = await fleet.unsubscribe(token, via="mail")
        assert second.via == "mail"
        assert second.unsubscribed_at is not None
        assert first.unsubscribed_at is not None
        assert second.unsubscribed_at > first.unsubscribed_at
        assert await fleet.suppression("ada@example.org", workspace="letters") is not None
        assert await count(fleet, events_table, type="recipient.unsubscribed") == 2


async def test_the_token_of_a_deleted_grant_is_refused(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
        token = list_unsubscribe(sent.data)[1].rsplit("/", 1)[1]
        await fleet.deprovision(SENDER)
        with pytest.raises(InvalidToken):
            await fleet.unsubscribe(token)
        rows = await fleet.database.read(
            lambda conn: conn.execute(sa.select(unsubscribe_tokens_table)).all()
        )
        assert rows == []


async def test_the_signing_key_is_the_setting_or_the_applications_own(database_url: str) -> None:
    """Tokens are signed with ``unsubscribe_secret`` when it is set, else with a random key
    the application keeps in the store: the same for every process, across restarts."""
    async with relay_peer() as peer:
        async with consent_fleet(database_url, peer) as fleet:
            _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
            stored = list_unsubscribe(sent.data)
        async with consent_fleet(database_url, peer) as fleet:  # a restart: the same key
            _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
            assert list_unsubscribe(sent.data) == stored
        secret = "s3cret-for-the-tests-only"
        async with consent_fleet(database_url, peer, unsubscribe_secret=secret) as fleet:
            _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
            configured = list_unsubscribe(sent.data)
            assert configured != stored
            token = configured[1].rsplit("/", 1)[1]
            assert (await fleet.unsubscribe(token)).unsubscribed
    with pytest.raises(InvalidInput, match="16 characters"):
        Fleet(database_url=database_url, unsubscribe_secret="short")
