"""Inbound verification: SPF, DKIM and DMARC of received mail, and its Authentication-Results.

Every DNS answer comes from the loopback server (``dns_server``); the
Authentication-Results headers written are read back with ``authres``, an
independent parser of RFC 8601. The end-to-end tests send from one fleet,
which DKIM-signs, to another fleet's MX over SMTP on loopback.
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread
import authres
import pytest

from dnsserver import DnsServer
from mailfleet import Agent, Authentication, Fleet, InboundMessage
from mailfleet.auth import DkimKey, DkimSigner, generate_key
from mailfleet.auth.dns import Resolver
from mailfleet.auth.spfcheck import check_host, check_host_cached
from mailfleet.auth.verify import authenticate
from mailfleet.mail.authresults import (
    add_authentication_results,
    authserv_id,
    fold,
    strip_authentication_results,
)
from mailfleet.model.authentication import (
    DkimSignatureResult,
    DmarcCheck,
    SpfCheck,
)
from mailfleet.model.errors import DnsNameNotFound, InvalidInput
from support import wait_until

pytestmark = pytest.mark.anyio

US = "mx.example.com"
MESSAGE = (
    b"From: Ada <ada@example.net>\r\n"
    b"To: desk@example.com\r\n"
    b"Subject: Invoice 42\r\n"
    b"Message-ID: <q42@example.net>\r\n"
    b"\r\n"
    b"Could you send the invoice again?\r\n"
)


def parse_header(raw: bytes) -> authres.AuthenticationResultsHeader:
    """Our Authentication-Results field of ``raw`` (the first one), unfolded, read by authres."""
    lines = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n").split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Authentication-Results:"))
    field = [lines[start]]
    for line in lines[start + 1 :]:
        if not line[:1].isspace():
            break
        field.append(line)
    return authres.AuthenticationResultsHeader.parse(b"".join(field).decode("ascii"))


def results(header: authres.AuthenticationResultsHeader) -> list[tuple[str, str, dict[str, str]]]:
    """Each result as (method, result, {ptype.property: value})."""
    return [
        (
            r.method,
            r.result,
            {f"{p.type}.{p.name}": p.value for p in r.properties},
        )
        for r in header.results
    ]


# -- the header: building, folding, stripping (no DNS) ---------------------------------------


def sample() -> Authentication:
    return Authentication.create(
        spf=SpfCheck("pass", "example.net", "mailfrom", "sender SPF authorized"),
        dkim=(
            DkimSignatureResult("pass", "example.net", "ed1", "ed25519-sha256", "", "ab/cd+ef=="),
            DkimSignatureResult(
                "fail", "example.net", "rsa1", "rsa-sha256", 'body "hash" mismatch', "XYZ12345"
            ),
        ),
        dmarc=DmarcCheck("pass", "example.net", "reject", "none", True, True),
        authserv_id=US,
    )


def test_the_header_value_reads_back_with_an_independent_parser() -> None:
    auth = sample()
    raw = add_authentication_results(MESSAGE, auth.header, authserv_id=US)
    header = parse_header(raw)
    assert header.authserv_id == US
    assert results(header) == [
        ("spf", "pass", {"smtp.mailfrom": "example.net"}),
        (
            "dkim",
            "pass",
            {
                "header.d": "example.net",
                "header.s": "ed1",
                "header.a": "ed25519-sha256",
                "header.b": "ab/cd+ef",
            },
        ),
        (
            "dkim",
            "fail",
            {
                "header.d": "example.net",
                "header.s": "rsa1",
                "header.a": "rsa-sha256",
                "header.b": "XYZ12345",
            },
        ),
        ("dmarc", "pass", {"header.from": "example.net", "policy.dmarc": "reject"}),
    ]
    assert header.results[2].reason == "body 'hash' mismatch"
    assert raw.endswith(MESSAGE)


def test_the_field_is_folded_and_unfolds_to_the_value() -> None:
    value = sample().header
    field = fold("Authentication-Results", value)
    lines = field.split("\r\n")
    assert lines[-1] == ""
    assert all(len(line) <= 78 for line in lines)
    assert all(line[:1] in (" ", "\t") for line in lines[1:-1])
    unfolded = field.removeprefix("Authentication-Results: ").removesuffix("\r\n")
    assert unfolded.replace(";\r\n\t", "; ").replace("\r\n", "") == value


def test_a_long_reason_is_cut_and_non_ascii_replaced() -> None:
    auth = Authentication.create(
        spf=SpfCheck("fail", "example.net", "mailfrom", "é" + "x" * 500),
        dkim=(),
        dmarc=DmarcCheck("none", "example.net", None, "none", False, False, "no record"),
        authserv_id=US,
    )
    assert auth.header.isascii()
    assert "dkim=none" in auth.header
    header = parse_header(add_authentication_results(MESSAGE, auth.header, authserv_id=US))
    assert header.results[0].reason.startswith("?xxx")
    assert len(header.results[0].reason) == 200


def test_forged_headers_claiming_our_name_are_removed_and_others_kept() -> None:
    raw = (
        b"Authentication-Results: MX.Example.COM; dkim=pass header.d=example.net\r\n"
        b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.net\r\n"
        b"From: ada@example.net\r\n"
        b'Authentication-Results: (a comment (nested)) "mx.example.com"\r\n'
        b"\t; dmarc=pass header.from=example.net\r\n"
        b"authentication-results :\r\n mx.example.com; spf=pass\r\n"
        b"Authentication-Results: mx.example.com.evil.example; dkim=pass\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.com; this line is the body\r\n"
    )
    stripped = strip_authentication_results(raw, US)
    assert stripped == (
        b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.net\r\n"
        b"From: ada@example.net\r\n"
        b"Authentication-Results: mx.example.com.evil.example; dkim=pass\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.com; this line is the body\r\n"
    )
    added = add_authentication_results(raw, sample().header, authserv_id=US)
    assert added.endswith(stripped)
    assert added.count(b"Authentication-Results: mx.example.com;") == 2  # ours, and the body's


def test_line_endings_are_kept() -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    added = add_authentication_results(
        b"Authentication-Results: mx.example.com; dkim=pass\n" + lf, sample().header, authserv_id=US
    )
    assert b"\r" not in added
    assert added.endswith(lf)
    assert added.startswith(b"Authentication-Results: mx.example.com;\n\tspf=pass")


def test_authserv_id_reading() -> None:
    assert authserv_id(" mx.example.com; none") == "mx.example.com"
    assert authserv_id("(c) mx.example.com 1; spf=pass") == "mx.example.com"
    assert authserv_id('"mx.\\"odd\\".example"; none') == 'mx."odd".example'
    assert authserv_id("  (only a comment)") is None
    assert authserv_id('"unterminated') is None
    assert authserv_id("") is None


def test_the_record_round_trips_through_json_and_refuses_garbage() -> None:
    auth = sample()
    assert Authentication.from_json(auth.as_json()) == auth
    assert auth.passed
    assert auth.spf_passed
    assert auth.dkim_passed
    assert auth.dkim_result == "pass"
    broken = auth.as_json()
    broken["dmarc"]["result"] = "great"
    with pytest.raises(InvalidInput) as caught:
        Authentication.from_json(broken)
    assert caught.value.field == "dmarc.result"
    with pytest.raises(InvalidInput):
        Authentication.from_json([])


# -- authenticate over the loopback DNS server -------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[DkimKey, DkimKey]:
    return generate_key("ed25519", selector="ed1"), generate_key("rsa", selector="rsa1")


@pytest.fixture
def resolver(dns_server: DnsServer) -> Resolver:
    return Resolver([dns_server.address], timeout=2)


def publish(
    server: DnsServer,
    keys: tuple[DkimKey, ...],
    *,
    domain: str = "example.net",
    spf: str = "v=spf1 ip4:192.0.2.0/24 -all",
    dmarc: str | None = "v=DMARC1; p=reject",
) -> None:
    for key in keys:
        server.set(key.dns_name(domain), "TXT", [key.dns_txt_value])
    server.set(domain, "TXT", [spf])
    if dmarc is not None:
        server.set(f"_dmarc.{domain}", "TXT", [dmarc])


async def check(
    resolver: Resolver,
    raw: bytes,
    *,
    ip: str | None = "192.0.2.10",
    mail_from: str = "bounces@example.net",
    helo: str = "out.example.net",
) -> Authentication:
    return await authenticate(resolver, raw, ip=ip, helo=helo, mail_from=mail_from, authserv_id=US)


async def test_signed_mail_from_an_authorised_address_passes_everything(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys)
    signed = DkimSigner("example.net", keys).sign(MESSAGE)
    auth = await check(resolver, signed)
    assert (auth.spf.result, auth.spf.domain, auth.spf.identity) == (
        "pass",
        "example.net",
        "mailfrom",
    )
    assert [(s.result, s.domain, s.selector, s.algorithm) for s in auth.dkim] == [
        ("pass", "example.net", "ed1", "ed25519-sha256"),
        ("pass", "example.net", "rsa1", "rsa-sha256"),
    ]
    assert auth.dmarc == DmarcCheck("pass", "example.net", "reject", "none", True, True, "")
    assert auth.passed
    header = parse_header(add_authentication_results(signed, auth.header, authserv_id=US))
    methods = results(header)
    assert [(m, r) for m, r, _ in methods] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
    ]
    first = signed.split(b"\r\nDKIM-Signature:")[0].replace(b"\r\n", b"")
    b_tag = "".join(first.decode().split("; b=")[1].split())
    assert methods[1][2]["header.b"] == auth.dkim[0].signature == b_tag[:8]


async def test_unsigned_mail_from_an_address_spf_does_not_authorise_fails_dmarc(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys, dmarc="v=DMARC1; p=quarantine; pct=50")
    auth = await check(resolver, MESSAGE, ip="198.51.100.7")
    assert auth.spf.result == "fail"
    assert auth.dkim == ()
    assert auth.dkim_result == "none"
    assert auth.dmarc.result == "fail"
    assert (auth.dmarc.policy, auth.dmarc.disposition) == ("quarantine", "quarantine")
    assert "pct=50" in auth.dmarc.reason
    assert not auth.passed
    header = parse_header(add_authentication_results(MESSAGE, auth.header, authserv_id=US))
    assert [(m, r) for m, r, _ in results(header)] == [
        ("spf", "fail"),
        ("dkim", "none"),
        ("dmarc", "fail"),
    ]


async def test_a_tampered_body_fails_and_a_missing_key_is_a_permerror(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    ed, _rsa = keys
    publish(dns_server, (ed,))  # the RSA key is not published
    signed = DkimSigner("example.net", keys).sign(MESSAGE)
    auth = await check(resolver, signed, ip="198.51.100.7")
    assert [(s.result, s.reason) for s in auth.dkim] == [
        ("pass", ""),
        ("permerror", "no key for signature"),
    ]
    assert auth.dmarc.result == "pass"  # the Ed25519 signature is aligned
    assert auth.dmarc.aligned_dkim
    assert not auth.dmarc.aligned_spf
    tampered = signed.replace(b"invoice again", b"invoice to me")
    auth = await check(resolver, tampered, ip="198.51.100.7")
    assert auth.dkim[0].result == "fail"
    assert "body hash" in auth.dkim[0].reason
    assert auth.dmarc.result == "fail"
    assert auth.dmarc.disposition == "reject"


async def test_alignment_is_relaxed_or_strict_as_the_record_says(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys, dmarc="v=DMARC1; p=reject; sp=quarantine")
    from_sub = MESSAGE.replace(b"ada@example.net", b"ada@news.example.net")
    signed = DkimSigner("example.net", keys).sign(from_sub)
    relaxed = await check(resolver, signed, ip="198.51.100.7")
    assert relaxed.dmarc.result == "pass"
    assert relaxed.dmarc.from_domain == "news.example.net"
    assert relaxed.dmarc.policy == "quarantine"  # the organizational domain's sp=
    dns_server.set("_dmarc.example.net", "TXT", ["v=DMARC1; p=reject; adkim=s"])
    fresh = Resolver([dns_server.address], timeout=2)  # the first answer is cached
    strict = await check(fresh, signed, ip="198.51.100.7")
    assert strict.dmarc.result == "fail"
    assert strict.dkim_passed
    assert not strict.dmarc.aligned_dkim


async def test_spf_of_the_helo_name_does_not_count_for_dmarc(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys)
    dns_server.set("out.example.net", "TXT", ["v=spf1 ip4:192.0.2.0/24 -all"])
    auth = await check(resolver, MESSAGE, mail_from="", helo="out.example.net")
    assert (auth.spf.result, auth.spf.identity, auth.spf.domain) == (
        "pass",
        "helo",
        "out.example.net",
    )
    assert auth.dmarc.result == "fail"
    assert not auth.dmarc.aligned_spf
    assert "smtp.helo=out.example.net" in auth.header


async def test_no_policy_is_none_and_no_client_ip_is_spf_none(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys, dmarc=None)
    auth = await check(resolver, MESSAGE, ip=None)
    assert auth.spf.result == "none"
    assert "no client IP" in auth.spf.explanation
    assert (auth.dmarc.result, auth.dmarc.policy, auth.dmarc.disposition) == ("none", None, "none")
    dns_server.set("_dmarc.example.net", "TXT", ["v=DMARC1; p=bogus"])
    fresh = Resolver([dns_server.address], timeout=2)  # the missing record is cached
    broken = await check(fresh, MESSAGE)
    assert broken.dmarc.result == "permerror"
    assert "p=bogus" in broken.dmarc.reason


async def test_dns_failures_are_temporary_errors(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys)
    signed = DkimSigner("example.net", keys).sign(MESSAGE)
    dns_server.servfail("example.net")
    dns_server.servfail("_dmarc.example.net")
    dns_server.servfail("ed1._domainkey.example.net")
    dns_server.silence("rsa1._domainkey.example.net")
    quick = Resolver([dns_server.address], timeout=0.5)
    auth = await check(quick, signed)
    assert auth.spf.result == "temperror"
    assert [s.result for s in auth.dkim] == ["temperror", "temperror"]
    assert auth.dmarc.result == "temperror"
    assert auth.dmarc.disposition == "none"
    header = parse_header(add_authentication_results(signed, auth.header, authserv_id=US))
    assert [r for _, r, _ in results(header)] == ["temperror"] * 4


@pytest.mark.parametrize(
    ("raw", "dmarc_reason"),
    [
        (b"", "no From header"),
        (b"\x00\xff\xfe garbage without a colon", "no From header"),
        (b"Subject: no sender\r\n\r\nbody\r\n", "no From header"),
        (b"From: a@example.net\r\nFrom: b@example.net\r\n\r\nx\r\n", "2 From headers"),
        (b"From: a@example.net, b@example.org\r\n\r\nx\r\n", "names 2 addresses"),
        (b"From: nobody\r\n\r\nx\r\n", "has no domain"),
        (b"From: a@-bad-.example..net\r\n\r\nx\r\n", "is not a domain"),
    ],
)
async def test_mail_dmarc_cannot_read_is_a_permerror(
    resolver: Resolver, raw: bytes, dmarc_reason: str
) -> None:
    auth = await check(resolver, raw, ip=None)
    assert auth.dmarc.result == "permerror"
    assert dmarc_reason in auth.dmarc.reason
    assert auth.dmarc.from_domain == ""
    assert "dmarc=permerror" in auth.header


async def test_broken_signatures_never_raise(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    publish(dns_server, keys)
    garbage = b"DKIM-Signature: this is not a tag list\r\n" + MESSAGE
    auth = await check(resolver, garbage)
    (signature,) = auth.dkim
    assert signature.result == "neutral"
    assert auth.dmarc.result == "pass"  # SPF is aligned
    missing_tags = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.net; s=rsa1\r\n" + MESSAGE
    (signature,) = (await check(resolver, missing_tags)).dkim
    assert (signature.result, signature.domain, signature.selector) == (
        "neutral",
        "example.net",
        "rsa1",
    )
    bad_header = b"DKIM-Signature: v=1; d=example.net\r\n\x01bad line\r\n" + MESSAGE
    auth = await check(resolver, bad_header)
    (unreadable,) = auth.dkim
    assert unreadable.result == "permerror"
    assert unreadable.reason.startswith("the message cannot be read")
    dns_server.set("rsa1._domainkey.example.net", "TXT", ["v=DKIM1; k=rsa; p="])  # revoked
    signed = DkimSigner("example.net", keys[1:]).sign(MESSAGE)
    (revoked,) = (await check(resolver, signed)).dkim
    assert revoked.result == "permerror"


async def test_spf_is_evaluated_without_a_thread_once_its_names_are_cached(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set(
        "example.net", "TXT", ["v=spf1 include:_spf.example.net -all exp=why.example.net"]
    )
    dns_server.set("_spf.example.net", "TXT", ["v=spf1 ip4:192.0.2.0/24 -all"])
    dns_server.set("why.example.net", "TXT", ["%{i} may not send for %{d}"])
    args = {"sender": "a@example.net", "helo": "h.example.net"}
    assert check_host_cached(resolver, "192.0.2.1", **args) is None  # nothing is known yet
    looked_up = await check_host(resolver, "192.0.2.1", **args)
    assert looked_up.result == "pass"
    asked = len(dns_server.queries)
    assert check_host_cached(resolver, "192.0.2.1", **args) == looked_up
    refused = check_host_cached(resolver, "198.51.100.1", **args)  # exp= was read with the record
    assert refused is not None
    assert refused.result == "fail"
    assert refused.explanation == "198.51.100.1 may not send for example.net"
    assert refused == await check_host(resolver, "198.51.100.1", **args)
    assert len(dns_server.queries) == asked
    assert resolver.cached("nowhere.example.net", "TXT") is None
    with pytest.raises(DnsNameNotFound):
        await resolver.txt("nowhere.example.net")
    with pytest.raises(DnsNameNotFound):
        resolver.cached("nowhere.example.net", "TXT")


# -- end to end: one fleet mails another -------------------------------------------------------


class Desk(Agent):
    seen: ClassVar[list[InboundMessage]] = []

    async def on_message(self, message: InboundMessage) -> None:
        Desk.seen.append(message)


def mail(port: int, raw: bytes, *, sender: str = "ada@example.net") -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail(sender, ["desk@example.com"], raw)


async def test_mail_between_two_fleets_is_verified_at_the_receiving_side(
    database_url: str, dns_server: DnsServer, tmp_path: Path
) -> None:
    Desk.seen = []
    dns_server.set("example.net", "TXT", ["v=spf1 ip4:127.0.0.1 -all"], ttl=0)
    dns_server.set("_dmarc.example.net", "TXT", ["v=DMARC1; p=reject"])
    dns_server.set("example.com", "MX", [(10, US)])
    dns_server.set(US, "A", ["127.0.0.1"])
    nameservers = [dns_server.address]
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        smtp_hostname=US,
        dns_nameservers=nameservers,
        poll_interval=0.05,
    ) as receiver:
        receiver.bind(Desk)
        await receiver.add_domain("example.com")
        # the forgeries below must reach the agent, not the spam folder (tests/test_spam.py)
        await receiver.update_policy("default", {"spam_sensitivity": "off"})
        await receiver.provision("desk@example.com", agent=Desk)
        async with anyio.create_task_group() as tg:
            await tg.start(receiver.serve)
            port = receiver.smtp_port or 0
            async with Fleet(
                database_url=f"sqlite:///{tmp_path / 'sender.db'}",
                smtp_port=0,
                smtp_hostname="out.example.net",
                relay_host="127.0.0.1",
                relay_port=port,
                relay_starttls=False,
                dns_nameservers=nameservers,
                poll_interval=0.05,
            ) as sender:
                domain = await sender.add_domain("example.net")
                for record in domain.dkim_records:
                    dns_server.set(record.name, "TXT", [record.value])
                await sender.provision("ada@example.net")
                async with anyio.create_task_group() as sending:
                    await sending.start(sender.serve)
                    result = await sender.send(
                        "ada@example.net", "desk@example.com", subject="Signed", text="Hello."
                    )
                    assert result.status == "queued", result
                    await wait_until(lambda: len(Desk.seen) == 1, within=20)
                    sending.cancel_scope.cancel()

            # A forgery: From the same domain, unsigned, and SPF no longer authorises us.
            dns_server.set("example.net", "TXT", ["v=spf1 ip4:192.0.2.1 -all"], ttl=0)
            forged = MESSAGE.replace(b"Invoice 42", b"Forged")
            await anyio.to_thread.run_sync(mail, port, forged)
            await wait_until(lambda: len(Desk.seen) == 2)

            # A forged Authentication-Results claiming our name, and a third party's.
            dns_server.set("example.net", "TXT", ["v=spf1 ip4:127.0.0.1 -all"], ttl=0)
            claims = (
                f"Authentication-Results: {US}; dkim=pass header.d=example.net\r\n"
                "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.net\r\n"
            ).encode() + MESSAGE.replace(b"Invoice 42", b"Claims")
            await anyio.to_thread.run_sync(mail, port, claims)
            await wait_until(lambda: len(Desk.seen) == 3)

            # In-process delivery did not come through the MX: nothing to say about it.
            local = await receiver.deliver("desk@example.com", MESSAGE)
            assert local.authentication is None
            await wait_until(lambda: len(Desk.seen) == 4)
            tg.cancel_scope.cancel()

    signed, forgery, claimed, _local = Desk.seen
    auth = signed.authentication
    assert auth is not None
    assert auth.authserv_id == US
    assert auth.spf.result == "pass"
    assert auth.spf.domain == "example.net"
    assert auth.dkim_passed
    assert {s.algorithm for s in auth.dkim if s.passed} == {"rsa-sha256", "ed25519-sha256"}
    assert auth.dmarc.result == "pass"
    assert auth.passed
    header = parse_header(signed.raw)
    assert header.authserv_id == US
    assert [(m, r) for m, r, _ in results(header)] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
    ]
    assert signed.raw.count(b"Authentication-Results:") == 1

    auth = forgery.authentication
    assert auth is not None
    assert (auth.spf.result, auth.dkim, auth.dmarc.result) == ("fail", (), "fail")
    assert auth.dmarc.disposition == "reject"
    assert not auth.passed
    assert [r for _, r, _ in results(parse_header(forgery.raw))] == ["fail", "none", "fail"]

    auth = claimed.authentication
    assert auth is not None
    assert auth.dkim == ()
    assert claimed.raw.count(f"Authentication-Results: {US};".encode()) == 1
    assert b"dkim=pass header.d=example.net" not in claimed.raw
    assert b"Authentication-Results: mx.example.org; spf=pass" in claimed.raw
    assert [(m, r) for m, r, _ in results(parse_header(claimed.raw))] == [
        ("spf", "pass"),
        ("dkim", "none"),
        ("dmarc", "pass"),
    ]


async def test_the_verifier_reuses_an_unsigned_senders_verdict_and_checks_each_signature(
    dns_server: DnsServer, resolver: Resolver, keys: tuple[DkimKey, DkimKey]
) -> None:
    from mailfleet.auth.verify import InboundVerifier

    publish(dns_server, keys)
    verify = InboundVerifier(resolver, authserv_id=US)
    session = {"ip": "192.0.2.10", "helo": "out.example.net", "mail_from": "b@example.net"}
    first = await verify(MESSAGE, **session)
    assert first.spf.result == "pass"
    dns_server.set("example.net", "TXT", ["v=spf1 -all"])  # within the memo's half minute
    assert await verify(MESSAGE, **session) is first  # unsigned, same sender: reused
    other_ip = await verify(MESSAGE, **{**session, "ip": "192.0.2.11"})
    assert other_ip is not first  # another sender is evaluated (the new record is cached
    assert other_ip.spf.domain == "example.net"  # or not: either way it is its own verdict)

    signed = DkimSigner("example.net", keys).sign(MESSAGE)
    good = await verify(signed, **session)
    assert good.dkim_passed
    tampered = signed.replace(b"invoice again", b"invoice twice")
    assert tampered != signed
    bad = await verify(tampered, **session)  # signed mail is verified every time
    assert not bad.dkim_passed


async def test_the_verifiers_memo_forgets_senders_once_their_verdict_expired(
    dns_server: DnsServer,
    resolver: Resolver,
    keys: tuple[DkimKey, DkimKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the soak: senders seen once (each VERP bounce address is one) stayed in
    the memo until it held 10,000 of them."""
    from types import SimpleNamespace

    from mailfleet.auth import verify as module

    publish(dns_server, keys)
    clock = [1_000_000.0]
    monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: clock[0]))
    verify = module.InboundVerifier(resolver, authserv_id=US)
    session = {"ip": "192.0.2.10", "helo": "out.example.net"}
    for n in range(5):
        await verify(MESSAGE, **session, mail_from=f"once+{n}@example.net")
    assert len(verify._memo) == 5
    clock[0] += module.MEMO_SECONDS + 1
    latest = await verify(MESSAGE, **session, mail_from="b@example.net")
    assert list(verify._memo) == [("192.0.2.10", "out.example.net", "b@example.net", "example.net")]
    assert await verify(MESSAGE, **session, mail_from="b@example.net") is latest
