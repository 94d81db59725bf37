"""Double opt-in for campaign mail, over real sockets: confirmations leave through the
fleet's sender to an aiosmtpd relay peer; replies come back through the fleet's MX.

Expiry is tested by moving a request's ``expires_at`` into the past in the store,
not by waiting days. The HTTP routes (``/v1/opt-in/TOKEN``) belong to the API and
call ``fleet.confirm_opt_in``, tested here.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from consenting import (
    SENDER,
    Newsletter,
    consent_fleet,
    count,
    facts,
    header,
    list_unsubscribe,
    send_and_receive,
    settled,
)
from mailers import mail_to_mx
from mailfleet import (
    Fleet,
    InvalidInput,
    InvalidToken,
    OptInStatus,
    SendStatus,
    TokenExpired,
)
from mailfleet.store.tables import events_table, opt_ins_table, utcnow
from relay import Received, RelayPeer, relay_peer
from support import wait_for_events, wait_until

pytestmark = pytest.mark.anyio

LINK = re.compile(r"http://127\.0\.0\.1:8025/v1/opt-in/([a-z2-7]{32})")


async def campaign(fleet: Fleet, to: str) -> tuple[SendStatus, str]:
    result = await fleet.send(SENDER, to, subject="Spring sale", text="Buy.", category="campaign")
    return result.status, result.detail or ""


async def confirmation(peer: RelayPeer, count: int) -> Received:
    """The ``count``-th message the relay received: a confirmation."""
    await wait_until(lambda: len(peer.received) >= count, within=20)
    return peer.received[count - 1]


def token_of(sent: Received) -> str:
    match = LINK.search(sent.data.decode())
    assert match is not None, sent.data
    return match[1]


async def expire(fleet: Fleet, address: str) -> None:
    """Move the opt-in request of ``address`` past its expiry."""
    past = utcnow() - timedelta(minutes=1)
    table = opt_ins_table
    await fleet.database.write(
        lambda conn: conn.execute(
            sa.update(table).where(table.c.address == address).values(expires_at=past)
        )
    )


def reply_to(sent: Received, *, sender: str, headers: str = "") -> bytes:
    message_id = header(sent.data, "Message-ID")
    return (
        f"From: Ada <{sender}>\r\nTo: {SENDER}\r\nSubject: Re: Please confirm\r\n"
        f"Message-ID: <reply-{sender}@example.org>\r\nIn-Reply-To: {message_id}\r\n"
        f"References: {message_id}\r\n{headers}\r\nYes please.\r\n"
    ).encode()


async def test_a_campaign_send_to_an_unconfirmed_recipient_sends_a_confirmation(
    database_url: str,
) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        status, detail = await campaign(fleet, "ada@example.org")
        assert status is SendStatus.OPT_IN_PENDING
        assert "a confirmation was sent" in detail

        sent = await confirmation(peer, 1)
        assert sent.rcpt_tos == ["ada@example.org"]
        assert header(sent.data, "Subject") == f"Please confirm: mail from {SENDER}"
        assert header(sent.data, "List-Unsubscribe") is None  # transactional itself
        assert header(sent.data, "Auto-Submitted") == "auto-generated"
        assert "or simply reply to this message" in sent.data.decode()
        token = token_of(sent)

        (requested,) = await fleet.events(type="recipient.opt_in_requested")
        grant = await fleet.grant(SENDER)
        assert requested.grant_id == grant.id
        assert requested.payload["recipient"] == "ada@example.org"
        assert requested.payload["header_message_id"] == header(sent.data, "Message-ID")
        state = await fleet.opt_in(SENDER, "ada@example.org")
        assert state.status is OptInStatus.PENDING
        assert state.expires_at is not None
        assert state.requested_at is not None
        assert timedelta(days=6.9) < state.expires_at - state.requested_at < timedelta(days=7.1)
        looked = await fleet.opt_in_status(token)
        assert (looked.status, looked.recipient) == (OptInStatus.PENDING, "ada@example.org")

        # Asked again while pending: the same answer, no second confirmation.
        status, detail = await campaign(fleet, "ada@example.org")
        assert status is SendStatus.OPT_IN_PENDING
        assert "has not confirmed campaign mail" in detail
        assert "yet" in detail
        again = await fleet.request_opt_in(SENDER, "ada@example.org")
        assert again.status is OptInStatus.PENDING
        assert again.confirmation is None
        assert await count(fleet, events_table, type="recipient.opt_in_requested") == 1
        assert len(peer.received) == 1


async def test_the_link_confirms_once_and_campaign_mail_then_goes(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        requested = await fleet.request_opt_in(SENDER, "ada@example.org")
        assert requested.status is OptInStatus.PENDING
        assert requested.confirmation is not None
        assert requested.confirmation.ok
        token = token_of(await confirmation(peer, 1))

        confirmed = await fleet.confirm_opt_in(token)
        assert confirmed.status is OptInStatus.CONFIRMED
        assert confirmed.confirmed
        assert confirmed.via == "link"
        (event,) = await fleet.events(type="recipient.opted_in")
        assert event.grant_id == (await fleet.grant(SENDER)).id
        assert (event.payload["recipient"], event.payload["via"]) == ("ada@example.org", "link")

        assert await fleet.confirm_opt_in(token.upper()) == confirmed  # idempotent
        assert await count(fleet, events_table, type="recipient.opted_in") == 1
        assert (await fleet.request_opt_in(SENDER, "ada@example.org")).confirmation is None

        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="campaign")
        assert header(sent.data, "Subject") == "News"
        list_unsubscribe(sent.data)  # a campaign carries the one-click headers too


async def test_only_confirmed_recipients_get_campaign_mail(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        await fleet.request_opt_in(SENDER, "ada@example.org")
        await fleet.confirm_opt_in(token_of(await confirmation(peer, 1)))

        assert (await campaign(fleet, "ada@example.org"))[0] is SendStatus.QUEUED
        assert (await campaign(fleet, "bob@example.org"))[0] is SendStatus.OPT_IN_PENDING
        await wait_until(lambda: len(peer.received) == 3, within=20)
        campaigns = [r for r in peer.received if header(r.data, "Subject") == "Spring sale"]
        assert [r.rcpt_tos for r in campaigns] == [["ada@example.org"]]
        bob = [r for r in peer.received if r.rcpt_tos == ["bob@example.org"]]
        assert [header(r.data, "Subject") for r in bob] == [f"Please confirm: mail from {SENDER}"]

        # Bulk mail asks no opt-in; and a confirmation is per grant.
        result = await fleet.send(SENDER, "bob@example.org", subject="x", text="x", category="bulk")
        assert result.ok
        await fleet.provision("promo@example.com", workspace="letters")
        other = await fleet.send(
            "promo@example.com", "ada@example.org", subject="x", text="x", category="campaign"
        )
        assert other.status is SendStatus.OPT_IN_PENDING


async def test_a_reply_to_the_confirmation_over_the_mx_confirms(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        await campaign(fleet, "ada@example.org")
        sent = await confirmation(peer, 1)

        # An out-of-office answer and a reply from someone else confirm nothing.
        automatic = reply_to(
            sent, sender="ada@example.org", headers="Auto-Submitted: auto-replied\r\n"
        )
        assert (await mail_to_mx(fleet, "ada@example.org", SENDER, automatic)).startswith("250")
        stranger = reply_to(sent, sender="eve@example.org")
        assert (await mail_to_mx(fleet, "eve@example.org", SENDER, stranger)).startswith("250")
        await wait_until(lambda: len(Newsletter.messages) == 2, within=20)
        assert (await fleet.opt_in(SENDER, "ada@example.org")).status is OptInStatus.PENDING

        answer = reply_to(sent, sender="ada@example.org")
        assert (await mail_to_mx(fleet, "ada@example.org", SENDER, answer)).startswith("250")
        state = await fleet.opt_in(SENDER, "ada@example.org")
        assert (state.status, state.via) == (OptInStatus.CONFIRMED, "reply")
        (event,) = await fleet.events(type="recipient.opted_in")
        assert event.payload["via"] == "reply"
        await wait_until(lambda: len(Newsletter.messages) == 3, within=20)  # and delivered
        assert (await campaign(fleet, "ada@example.org"))[0] is SendStatus.QUEUED


async def test_an_expired_confirmation_is_refused_until_asked_again(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        await campaign(fleet, "ada@example.org")
        sent = await confirmation(peer, 1)
        old = token_of(sent)
        await settled(fleet)
        await expire(fleet, "ada@example.org")
        before = await facts(fleet)

        with pytest.raises(TokenExpired) as expired:
            await fleet.confirm_opt_in(old)
        assert expired.value.field == "token"
        assert expired.value.kind == "opt_in"
        assert "expired" in str(expired.value)
        assert isinstance(expired.value, InvalidToken)
        assert (await fleet.opt_in_status(old)).status is OptInStatus.EXPIRED
        # A reply after the expiry does not confirm either.
        await mail_to_mx(fleet, "ada@example.org", SENDER, reply_to(sent, sender="ada@example.org"))
        await wait_until(lambda: len(Newsletter.messages) == 1, within=20)
        assert (await fleet.opt_in(SENDER, "ada@example.org")).status is OptInStatus.EXPIRED

        # A campaign send does not ask again by itself: the recipient did not answer.
        status, detail = await campaign(fleet, "ada@example.org")
        assert status is SendStatus.OPT_IN_PENDING
        assert "expired" in detail
        assert "request_opt_in" in detail
        assert len(peer.received) == 1
        assert await facts(fleet) == (before[0] + 1, before[1])  # the reply's message.received

        again = await fleet.request_opt_in(SENDER, "ada@example.org")
        assert again.status is OptInStatus.PENDING
        assert again.confirmation is not None
        assert again.confirmation.ok
        new = token_of(await confirmation(peer, 2))
        assert new != old
        with pytest.raises(InvalidToken, match="replaced by a newer request"):
            await fleet.confirm_opt_in(old)
        assert (await fleet.confirm_opt_in(new)).status is OptInStatus.CONFIRMED
        await wait_for_events(fleet, "recipient.opt_in_requested", count=2)


async def test_forged_opt_in_tokens_are_refused_and_change_nothing(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        await fleet.request_opt_in(SENDER, "ada@example.org")
        token = token_of(await confirmation(peer, 1))
        await settled(fleet)
        _, bulk = await send_and_receive(fleet, peer, "bob@example.org", category="bulk")
        unsubscribe_token = list_unsubscribe(bulk.data)[1].rsplit("/", 1)[1]
        before = await facts(fleet)

        tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
        # Made up, tampered with, or an unsubscribe token (signed for another purpose):
        for forged in (tampered, "b" * 32, unsubscribe_token):
            with pytest.raises(InvalidToken, match="no such opt-in token"):
                await fleet.confirm_opt_in(forged)
        with pytest.raises(InvalidToken, match="not a mailfleet token"):
            await fleet.confirm_opt_in("../../etc/passwd")
        with pytest.raises(InvalidInput, match="via"):
            await fleet.confirm_opt_in(token, via="fax")
        async with Fleet(database_url=database_url, application="other") as other:
            with pytest.raises(InvalidToken):
                await other.confirm_opt_in(token)
        assert await facts(fleet) == before
        assert (await fleet.opt_in(SENDER, "ada@example.org")).status is OptInStatus.PENDING


async def test_an_unsubscribe_withdraws_the_opt_in(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        await fleet.request_opt_in(SENDER, "ada@example.org")
        await fleet.confirm_opt_in(token_of(await confirmation(peer, 1)))
        _, sent = await send_and_receive(fleet, peer, "ada@example.org", category="campaign")
        await fleet.unsubscribe(list_unsubscribe(sent.data)[1].rsplit("/", 1)[1])

        assert (await fleet.opt_in(SENDER, "ada@example.org")).status is (OptInStatus.NOT_REQUESTED)
        assert (await campaign(fleet, "ada@example.org"))[0] is SendStatus.SUPPRESSED
        # Suppressed: no confirmation goes either, and nothing is recorded.
        asked = await fleet.request_opt_in(SENDER, "ada@example.org")
        assert asked.status is OptInStatus.NOT_REQUESTED
        assert asked.confirmation is not None
        assert asked.confirmation.status is SendStatus.SUPPRESSED
        assert await count(fleet, opt_ins_table) == 0


async def test_a_custom_confirmation_needs_its_link(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        with pytest.raises(InvalidInput, match="link"):
            await fleet.request_opt_in(SENDER, "ada@example.org", text="Confirm, please.")
        with pytest.raises(InvalidInput):
            await fleet.request_opt_in(SENDER, "not an address")
        await fleet.request_opt_in(
            SENDER,
            "ada@example.org",
            subject="Stay in touch with {sender}?",
            text="Click {link} before {expires}.",
        )
        sent = await confirmation(peer, 1)
        assert header(sent.data, "Subject") == f"Stay in touch with {SENDER}?"
        assert token_of(sent)
