"""Spam scoring: the pure signals and verdicts, DNS blocklists against the loopback DNS
server, and the MX filing spam per workspace sensitivity for ``on_spam``.

Every DNS answer comes from ``dns_server`` (tests/dnsserver.py), which the
fleet's resolver is pointed at (``dns_nameservers``); the mail comes over
SMTP from an smtplib client on 127.0.0.1.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pluggy
import pytest
import sqlalchemy as sa

from dnsserver import DnsServer
from mailfleet import (
    Agent,
    Fleet,
    Grant,
    InboundMessage,
    InvalidPolicy,
    Policy,
    Settings,
    SpamInput,
    SpamSignal,
    SpamVerdict,
)
from mailfleet.auth.dns import Resolver
from mailfleet.mail.headers import parse_headers
from mailfleet.mail.spamfacts import header_facts
from mailfleet.model.authentication import Authentication, DmarcCheck, SpfCheck
from mailfleet.model.spam import (
    authentication_signals,
    header_signals,
    judge,
    rule_signal,
)
from mailfleet.plugins import HookSpecs, hookimpl, spam_scorers
from mailfleet.runtime.dnsbl import DnsblScorer, reversed_name
from mailfleet.store.tables import messages_table
from support import wait_until

pytestmark = pytest.mark.anyio

# no Date, no Message-ID, replies to another domain: 1 + 1 + 1.5, and unsigned: + 1
SUSPECT = (
    b"From: Ada <ada@example.org>\r\n"
    b"To: calm@example.com, keen@example.com\r\n"
    b"Reply-To: offers@elsewhere.example\r\n"
    b"Subject: A deal for you\r\n"
    b"\r\n"
    b"Click here.\r\n"
)
CLEAN = (
    b"From: Ada <ada@example.org>\r\n"
    b"To: calm@example.com\r\n"
    b"Subject: Lunch\r\n"
    b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <lunch@example.org>\r\n"
    b"\r\n"
    b"Noon?\r\n"
)


def authentication(
    *, spf: str = "pass", dmarc: str = "pass", dkim: tuple[Any, ...] = ()
) -> Authentication:
    return Authentication.create(
        spf=SpfCheck(spf, "example.org", "mailfrom"),  # type: ignore[arg-type]
        dkim=dkim,
        dmarc=DmarcCheck(
            dmarc,  # type: ignore[arg-type]
            "example.org",
            "reject",
            "reject" if dmarc == "fail" else "none",
            aligned_dkim=False,
            aligned_spf=dmarc == "pass",
        ),
        authserv_id="mx.example.com",
    )


# -- pure scoring ------------------------------------------------------------------------


def test_authentication_results_score_dmarc_spf_and_missing_dkim() -> None:
    names = [s.name for s in authentication_signals(authentication(spf="fail", dmarc="fail"))]
    assert names == ["dmarc_fail", "spf_fail", "dkim_none"]
    assert [s.name for s in authentication_signals(authentication(spf="softfail"))] == [
        "spf_softfail",
        "dkim_none",
    ]
    assert authentication_signals(None) == []  # not verified: nothing said


def test_header_anomalies() -> None:
    facts = header_facts(parse_headers(SUSPECT).headers)
    assert [s.name for s in header_signals(facts)] == [
        "missing_date",
        "missing_message_id",
        "reply_to_mismatch",
    ]
    forged = header_facts([("From", '"service@paypal.com" <alerts@evil.example>')])
    assert "forged_from" in [s.name for s in header_signals(forged)]
    # the same organisation (a subdomain) is no anomaly
    same = header_facts(
        [
            ("From", "Ada (ada@mail.example.org) <ada@example.org>"),
            ("Reply-To", "help@support.example.org"),
            ("Date", "Thu, 03 Dec 2026 10:00:00 +0000"),
            ("Message-ID", "<a@example.org>"),
        ]
    )
    assert header_signals(same) == []


def test_the_threshold_decides_and_a_rule_decides_whatever_the_threshold() -> None:
    signals = [SpamSignal("a", 2.0), SpamSignal("b", 1.5)]
    assert judge(signals, 3.0).spam
    assert judge(signals, 3.5).spam  # at the threshold is spam
    assert not judge(signals, 4.0).spam
    assert not judge(signals, None).spam  # sensitivity off
    ruled = judge([*signals, rule_signal("r1", name="block promos")], None)
    assert ruled.spam
    assert ruled.reasons == ("a", "b", "rule:r1")
    assert SpamVerdict.from_json(ruled.as_json()) == ruled


def test_policy_sensitivities_thresholds_and_attachment_types() -> None:
    assert Policy.parse({"spam_sensitivity": "low"}).effective_spam_threshold == 8.0
    assert Policy.parse({}).effective_spam_threshold == 5.0
    assert Policy.parse({"spam_sensitivity": "high"}).effective_spam_threshold == 3.0
    assert Policy.parse({"spam_threshold": 6.5}).effective_spam_threshold == 6.5
    off = Policy.parse({"spam_sensitivity": "off", "spam_threshold": 2})
    assert off.effective_spam_threshold is None
    with pytest.raises(InvalidPolicy) as caught:
        Policy.parse({"spam_threshold": 0})
    assert caught.value.field == "policy.spam_threshold"
    with pytest.raises(InvalidPolicy) as caught:
        Policy.parse({"allowed_attachment_types": ["pdf"]})
    assert caught.value.field == "policy.allowed_attachment_types"
    typed = Policy.parse({"allowed_attachment_types": ["Application/PDF", "image/*"]})
    assert typed.allowed_attachment_types == ("application/pdf", "image/*")
    assert typed.allows_attachment_type("image/png")
    assert not typed.allows_attachment_type("text/html")
    assert Policy().allows_attachment_type("application/x-anything")


# -- DNS blocklists ----------------------------------------------------------------------


def test_reversed_names() -> None:
    assert reversed_name("192.0.2.99") == "99.2.0.192"
    assert reversed_name("::ffff:192.0.2.1") == "1.2.0.192"
    assert reversed_name("2001:db8::1") == ".".join("1" + "0" * 23 + "8bd01002")
    assert reversed_name("not an ip") is None


async def test_blocklists_hit_and_miss_on_the_loopback_dns_server(dns_server: DnsServer) -> None:
    dns_server.set("2.0.0.127.bl.test", "A", ["127.0.0.2"])
    dns_server.set("spammer.example.dbl.test", "A", ["127.0.1.2"])
    dns_server.set("1.0.0.127.quota.test", "A", ["127.255.255.254"])  # the list's error code
    dns_server.set("x.clean.test", "A", ["127.0.0.2"])  # a zone that lists others only
    scorer = DnsblScorer(
        Resolver([dns_server.address], timeout=2),
        ip_zones=["bl.test", "quota.test", "clean.test"],
        domain_zones=["dbl.test"],
        score=4.0,
    )

    def suspect(ip: str, sender: str) -> SpamInput:
        headers = (("From", f"<{sender}>"),)
        return SpamInput(raw=b"", headers=headers, peer=ip, facts=header_facts(headers))

    hit = await scorer.score(suspect("127.0.0.2", "ada@spammer.example"))
    assert [(s.name, s.score) for s in hit] == [("dnsbl:bl.test", 4.0), ("dnsbl:dbl.test", 4.0)]
    assert "127.0.0.2 is listed by bl.test (127.0.0.2)" in hit[0].detail
    miss = await scorer.score(suspect("127.0.0.1", "ada@example.org"))
    assert miss == []  # NXDOMAIN everywhere; quota.test's error answer is no listing
    asked = {q.name for q in dns_server.queries}
    assert {"1.0.0.127.bl.test", "1.0.0.127.clean.test", "example.org.dbl.test"} <= asked


async def test_a_blocklist_that_does_not_answer_counts_as_not_listing(
    dns_server: DnsServer,
) -> None:
    dns_server.set("2.0.0.127.bl.test", "A", ["127.0.0.2"])
    dns_server.set("x.slow.test", "A", ["127.0.0.2"])
    dns_server.silence("2.0.0.127.slow.test")
    scorer = DnsblScorer(
        Resolver([dns_server.address], timeout=5), ip_zones=["bl.test", "slow.test"], timeout=0.5
    )
    with anyio.fail_after(3):
        found = await scorer.score(SpamInput(raw=b"", headers=(), peer="127.0.0.2"))
    assert [s.name for s in found] in ([], ["dnsbl:bl.test"])  # whatever came back in time


# -- through the MX ----------------------------------------------------------------------


class Calm(Agent):
    seen: ClassVar[list[InboundMessage]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.seen.append(message)


class Keen(Agent):
    """Opts in to spam."""

    seen: ClassVar[list[InboundMessage]] = []
    spam: ClassVar[list[InboundMessage]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.seen.append(message)

    async def on_spam(self, message: InboundMessage) -> None:
        self.spam.append(message)


@asynccontextmanager
async def fleet_at(
    database_url: str,
    dns_server: DnsServer,
    *,
    scorers: Iterable[Any] = (),
    recipient_scorers: Iterable[Any] = (),
    **settings: Any,
) -> AsyncIterator[Fleet]:
    """A serving fleet: calm@ (medium sensitivity, no on_spam) and keen@ (a workspace with
    high sensitivity, on_spam). SPF of example.org authorises 127.0.0.1; nothing signs."""
    Calm.seen, Keen.seen, Keen.spam = [], [], []
    dns_server.set("example.org", "TXT", ["v=spf1 ip4:127.0.0.0/8 -all"])
    async with Fleet(
        database_url=database_url,
        application="test",
        smtp_port=0,
        poll_interval=0.05,
        dns_nameservers=[dns_server.address],
        dns_timeout=2,
        domain_audit_interval=0,
        recipient_domain_check="off",
        **settings,
    ) as fleet:
        for scorer in scorers:
            fleet.add_spam_scorer(scorer)
        for recipient_scorer in recipient_scorers:
            fleet.add_recipient_spam_scorer(recipient_scorer)
        fleet.bind(Calm)
        fleet.bind(Keen)
        await fleet.add_domain("example.com")
        await fleet.create_workspace("eager", policy={"spam_sensitivity": "high"})
        await fleet.provision("calm@example.com", agent=Calm)
        await fleet.provision("keen@example.com", agent=Keen, workspace="eager")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def send(
    fleet: Fleet, data: bytes, to: Iterable[str], *, source: str = "127.0.0.1"
) -> tuple[int, str]:
    def run() -> tuple[int, str]:
        with smtplib.SMTP(
            "127.0.0.1", fleet.smtp_port or 0, timeout=10, source_address=(source, 0)
        ) as client:
            client.ehlo("client.example.org")
            client.mail("ada@example.org")
            for address in to:
                assert client.rcpt(address)[0] == 250
            code, reply = client.data(data)
            return code, reply.decode()

    return await anyio.to_thread.run_sync(run)


async def stored(fleet: Fleet) -> dict[str, Any]:
    """Each stored message row by its grant's address."""
    app = fleet.application.id
    rows = await fleet.database.read(
        lambda conn: conn.execute(
            sa.select(messages_table).where(messages_table.c.application_id == app)
        ).all()
    )
    addresses = {g.id: g.address for g in await fleet.grants()}
    return {addresses[row.grant_id]: row for row in rows}


async def test_one_message_is_spam_at_high_sensitivity_and_not_at_medium(
    database_url: str, dns_server: DnsServer
) -> None:
    async with fleet_at(database_url, dns_server) as fleet:
        code, _ = await send(fleet, SUSPECT, ["calm@example.com", "keen@example.com"])
        assert code == 250
        await wait_until(lambda: len(Calm.seen) == 1 and len(Keen.spam) == 1)
        await fleet.wait_idle()
        assert Keen.seen == []  # spam never reaches on_message
        ham, spam = Calm.seen[0], Keen.spam[0]
        assert ham.folder == "inbox"
        assert spam.folder == "spam"
        for verdict, threshold in ((ham.spam, 5.0), (spam.spam, 3.0)):
            assert verdict is not None
            assert verdict.score == 4.5
            assert verdict.threshold == threshold
            assert verdict.reasons == (
                "dkim_none",
                "missing_date",
                "missing_message_id",
                "reply_to_mismatch",
            )
        assert ham.spam is not None
        assert not ham.spam.spam
        rows = await stored(fleet)
        assert rows["calm@example.com"].folder == "inbox"
        assert rows["keen@example.com"].folder == "spam"
        assert rows["keen@example.com"].spam["score"] == 4.5
        assert rows["keen@example.com"].spam["spam"] is True
        events = {e.grant_id: e.payload for e in await fleet.events(type="message.received")}
        keen = await fleet.grant("keen@example.com")
        assert events[keen.id]["folder"] == "spam"
        assert events[keen.id]["spam_score"] == 4.5


async def test_spam_without_on_spam_stays_in_the_spam_folder_unhandled(
    database_url: str, dns_server: DnsServer
) -> None:
    async with fleet_at(database_url, dns_server) as fleet:
        await fleet.update_policy("default", {"spam_sensitivity": "high"})
        assert (await send(fleet, SUSPECT, ["calm@example.com"]))[0] == 250
        assert (await send(fleet, CLEAN, ["calm@example.com"]))[0] == 250
        await wait_until(lambda: len(Calm.seen) == 1)
        await fleet.wait_idle()
        assert [m.subject for m in Calm.seen] == ["Lunch"]
        folders = sorted(
            row.folder
            for row in await fleet.database.read(
                lambda conn: conn.execute(sa.select(messages_table.c.folder)).all()
            )
        )
        assert folders == ["inbox", "spam"]


async def test_a_blocklisted_client_is_spam_and_a_clean_one_is_not(
    database_url: str, dns_server: DnsServer
) -> None:
    dns_server.set("2.0.0.127.bl.test", "A", ["127.0.0.2"])
    async with fleet_at(database_url, dns_server, dnsbl_zones=["bl.test"]) as fleet:
        assert (await send(fleet, CLEAN, ["calm@example.com"], source="127.0.0.2"))[0] == 250
        clean = CLEAN.replace(b"lunch@", b"lunch2@")
        assert (await send(fleet, clean, ["calm@example.com"], source="127.0.0.1"))[0] == 250
        await fleet.wait_idle()
        rows = await fleet.database.read(
            lambda conn: conn.execute(
                sa.select(messages_table.c.folder, messages_table.c.spam).order_by(
                    messages_table.c.created_at
                )
            ).all()
        )
        listed, fine = rows
        assert listed.folder == "spam"  # 4 (listed) + 1 (unsigned) >= 5
        assert [s["name"] for s in listed.spam["signals"]] == ["dkim_none", "dnsbl:bl.test"]
        assert fine.folder == "inbox"
        assert [s["name"] for s in fine.spam["signals"]] == ["dkim_none"]
        assert [m.subject for m in Calm.seen] == ["Lunch"]


class Shouty:
    """A plugin's scorer: capitals in the subject."""

    name = "shouty"

    async def score(self, message: SpamInput) -> list[SpamSignal]:
        subject = next((v for k, v in message.headers if k.lower() == "subject"), "")
        return [SpamSignal("shouty", 6.0, "a subject in capitals")] if subject.isupper() else []


class Broken:
    name = "broken"

    async def score(self, message: SpamInput) -> list[SpamSignal]:
        raise RuntimeError("the classifier is down")


async def test_added_scorers_count_and_a_broken_one_is_left_out(
    database_url: str, dns_server: DnsServer
) -> None:
    async with fleet_at(database_url, dns_server, scorers=[Broken(), Shouty()]) as fleet:
        shouting = CLEAN.replace(b"Subject: Lunch", b"Subject: LUNCH NOW")
        assert (await send(fleet, shouting, ["calm@example.com"]))[0] == 250
        assert (await send(fleet, CLEAN, ["calm@example.com"]))[0] == 250
        await wait_until(lambda: len(Calm.seen) == 1)
        await fleet.wait_idle()
        assert [m.subject for m in Calm.seen] == ["Lunch"]
        rows = await fleet.database.read(
            lambda conn: conn.execute(
                sa.select(messages_table.c.subject, messages_table.c.spam)
            ).all()
        )
        shouted = next(row for row in rows if row.subject == "LUNCH NOW")
        assert shouted.spam["score"] == 7.0
        assert shouted.spam["spam"] is True


async def test_a_rule_marking_spam_decides_for_its_grant_even_with_the_sensitivity_off(
    database_url: str, dns_server: DnsServer
) -> None:
    async def rules(grant: Grant, message: SpamInput) -> list[SpamSignal]:
        return [rule_signal("r1", name="no lunch")] if grant.address.startswith("calm@") else []

    async with fleet_at(database_url, dns_server, recipient_scorers=[rules]) as fleet:
        await fleet.update_policy("default", {"spam_sensitivity": "off"})
        await fleet.update_policy("eager", {"spam_sensitivity": "off"})
        both = CLEAN.replace(b"To: calm@example.com", b"To: calm@example.com, keen@example.com")
        assert (await send(fleet, both, ["calm@example.com", "keen@example.com"]))[0] == 250
        await wait_until(lambda: len(Keen.seen) == 1)
        await fleet.wait_idle()
        assert Calm.seen == []
        rows = await stored(fleet)
        assert rows["calm@example.com"].folder == "spam"
        assert rows["calm@example.com"].spam["threshold"] is None
        assert rows["calm@example.com"].spam["signals"][-1]["name"] == "rule:r1"
        assert rows["keen@example.com"].folder == "inbox"


async def test_a_stored_mark_spam_rule_files_as_spam_for_on_spam_only_and_notes_the_rule(
    database_url: str, dns_server: DnsServer
) -> None:
    async with fleet_at(database_url, dns_server) as fleet:
        made = await fleet.create_rule(
            {
                "name": "no lunch",
                "trigger": "inbound",
                "action": "mark_spam",
                "conditions": [{"field": "subject", "operator": "contains", "value": "lunch"}],
            }
        )
        both = CLEAN.replace(b"To: calm@example.com", b"To: calm@example.com, keen@example.com")
        assert (await send(fleet, both, ["calm@example.com", "keen@example.com"]))[0] == 250
        await wait_until(lambda: len(Keen.spam) == 1)
        await fleet.wait_idle()
        assert Calm.seen == []  # no on_spam: not dispatched at all
        assert Keen.seen == []
        (keen,) = Keen.spam
        assert keen.spam is not None
        assert keen.spam.spam
        assert f"rule:{made.id}" in [s.name for s in keen.spam.signals]
        rows = await stored(fleet)
        for address in ("calm@example.com", "keen@example.com"):
            row = rows[address]
            assert row.folder == "spam"
            assert row.spam["spam"] is True
            (noted,) = [s for s in row.spam["signals"] if s["name"] == f"rule:{made.id}"]
            assert noted["decisive"] is True
            assert "no lunch" in noted["detail"]
        # the threshold stays the workspace's: the rule decided, not the score
        assert (
            rows["keen@example.com"].spam["threshold"] < rows["calm@example.com"].spam["threshold"]
        )


def test_plugins_contribute_scorers_through_the_hook() -> None:
    class Plugin:
        @hookimpl
        def mailfleet_spam_scorers(self, settings: Settings) -> list[Any]:
            return [Shouty()]

    manager = pluggy.PluginManager("mailfleet")
    manager.add_hookspecs(HookSpecs)
    manager.register(Plugin())
    assert [s.name for s in spam_scorers(manager, Settings.load())] == ["shouty"]


async def test_a_null_sender_report_is_not_refused_for_its_parts(
    database_url: str, dns_server: DnsServer
) -> None:
    async with fleet_at(database_url, dns_server) as fleet:
        await fleet.update_policy("default", {"max_attachments": 0})
        report = (
            b"From: MAILER-DAEMON@mx.example.net\r\nTo: calm@example.com\r\nSubject: x\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
            b"--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\n"
            b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"'
            b"\r\n\r\n%PDF\r\n--B--\r\n"
        )

        def run() -> int:
            with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0, timeout=10) as client:
                client.ehlo("mx.example.net")
                client.mail("<>")
                assert client.rcpt("calm@example.com")[0] == 250
                return client.data(report)[0]

        assert await anyio.to_thread.run_sync(run) == 250
