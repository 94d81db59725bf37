"""One-click unsubscribe and double opt-in over HTTP: the links a recipient follows.

The fleet sends through a real aiosmtpd relay peer; the links are read from the
mail it received and posted to the API on a loopback port, without any key.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apiserver import api_server
from consenting import (
    SENDER,
    Newsletter,
    consent_fleet,
    count,
    facts,
    list_unsubscribe,
    send_and_receive,
)
from mailfleet.store.tables import suppressions_table
from relay import relay_peer
from support import wait_for_events, wait_until
from test_opt_in import campaign, confirmation, expire, token_of

pytestmark = pytest.mark.anyio

ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # the form body RFC 8058 has clients post


async def test_one_click_unsubscribe_over_http_suppresses_once(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        async with api_server(fleet) as api:
            _, received = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
            _, url = list_unsubscribe(received.data)
            path = url.removeprefix("http://127.0.0.1:8025")
            web = api.anonymous()

            page = await web.get(path)  # a link scanner's GET changes nothing
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]
            assert f'action="{path}"' in page.text
            assert await count(fleet, suppressions_table) == 0

            first = await web.post(path, data=ONE_CLICK)
            assert first.status_code == 200, first.text
            body = first.json()
            assert (body["recipient"], body["sender"]) == ("ada@example.org", SENDER)
            assert body["unsubscribed"] is True
            assert body["via"] == "one_click"
            again = await web.post(path, data=ONE_CLICK)
            assert again.json() == body  # idempotent: the same answer
            suppressions = await fleet.suppressions()
            assert [(s.address, s.reason.value) for s in suppressions] == [
                ("ada@example.org", "unsubscribe")
            ]
            await wait_for_events(fleet, "recipient.unsubscribed", count=1)
            assert await fleet.count_events(type="recipient.unsubscribed") == 1
            await wait_until(lambda: len(Newsletter.unsubscribes) == 1, within=20)
            assert "Unsubscribed" in (await web.get(path)).text


async def test_forged_and_malformed_tokens_are_404_and_change_nothing(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        async with api_server(fleet) as api:
            _, received = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
            _, url = list_unsubscribe(received.data)
            token = url.rsplit("/", 1)[1]
            forged = token[:16] + ("a" if token[16] != "a" else "b") + token[17:]
            before = await facts(fleet)
            web = api.anonymous()
            for bad in (forged, "not-a-token", "a" * 32):
                answer = await web.post(f"/v1/unsubscribe/{bad}", data=ONE_CLICK)
                assert answer.status_code == 404, bad
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["code"] == "invalid_token"
                assert (await web.get(f"/v1/unsubscribe/{bad}")).status_code == 404
                opt_in = await web.post(f"/v1/opt-in/{bad}")
                assert opt_in.status_code == 404
                assert opt_in.json()["code"] == "invalid_token"
            assert await facts(fleet) == before


async def test_an_opt_in_link_confirms_over_http_and_expires(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        async with api_server(fleet) as api:
            web = api.anonymous()
            await campaign(fleet, "ada@example.org")
            ada = token_of(await confirmation(peer, 1))
            page = await web.get(f"/v1/opt-in/{ada}")
            assert page.status_code == 200
            assert f'action="/v1/opt-in/{ada}"' in page.text
            assert (await fleet.opt_in(SENDER, "ada@example.org")).confirmed is False

            confirmed = await web.post(f"/v1/opt-in/{ada}")
            assert confirmed.status_code == 200, confirmed.text
            assert confirmed.json()["status"] == "confirmed"
            assert (await web.post(f"/v1/opt-in/{ada}")).json()["status"] == "confirmed"
            assert await fleet.count_events(type="recipient.opted_in") == 1
            status, _ = await campaign(fleet, "ada@example.org")
            assert status.value == "queued"

            await campaign(fleet, "bob@example.org")
            bob = token_of(await confirmation(peer, 3))
            await expire(fleet, "bob@example.org")
            expired = await web.post(f"/v1/opt-in/{bob}")
            assert expired.status_code == 410
            assert expired.json()["code"] == "opt_in_expired"
            assert (await web.get(f"/v1/opt-in/{bob}")).status_code == 410
            assert (await fleet.opt_in(SENDER, "bob@example.org")).confirmed is False


async def test_a_token_is_found_in_its_own_application_only(database_url: str) -> None:
    async with relay_peer() as peer, consent_fleet(database_url, peer) as fleet:
        async with api_server(fleet, others=("other",)) as api:
            _, received = await send_and_receive(fleet, peer, "ada@example.org", category="bulk")
            _, url = list_unsubscribe(received.data)
            answer = await api.anonymous().post(url.removeprefix("http://127.0.0.1:8025"))
            assert answer.status_code == 200
            other = api.others["other"]
            assert await other.suppressions() == []
            table = suppressions_table
            rows = await fleet.database.read(
                lambda c: c.execute(sa.select(table.c.application_id)).scalars().all()
            )
            assert rows == [fleet.application.id]
