"""DNS: the resolver against a real authoritative server on loopback, its settings, and
dkimpy verifying the project's signatures through it."""

from __future__ import annotations

import time

import anyio
import dkim
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsserver import DnsServer
from mailfleet import (
    DnsError,
    DnsNameNotFound,
    DnsServerFailure,
    DnsTimeout,
    InvalidInput,
    MailfleetError,
    Settings,
)
from mailfleet.auth.dkim import DkimSigner, generate_key
from mailfleet.auth.dns import Resolver
from mailfleet.model.nameservers import Nameserver, parse_nameserver

MESSAGE = (
    b"From: Desk <desk@example.com>\r\nTo: ada@example.org\r\nSubject: Keys\r\n"
    b"Message-ID: <keys@example.com>\r\n\r\nSigned, and checked over DNS.\r\n"
)


@pytest.fixture
def resolver(dns_server: DnsServer) -> Resolver:
    return Resolver([dns_server.address], timeout=2)


# -- the loopback server itself, over dnspython's own queries ------------------------------


def ask(server: DnsServer, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", timeout=2, port=server.port)


def test_the_server_answers_with_authority_over_udp_and_tcp() -> None:
    records = {"example.com": {"TXT": ["v=spf1 -all"]}, "_dmarc.example.com": {"TXT": ["x"]}}
    with DnsServer(records) as server:
        for tcp in (False, True):
            answer = ask(server, "example.com", "TXT", tcp=tcp)
            assert answer.rcode() == dns.rcode.NOERROR
            assert answer.flags & dns.flags.AA
            assert [rr.to_text() for rr in answer.answer[0]] == ['"v=spf1 -all"']
        assert [q.transport for q in server.queries] == ["udp", "tcp"]


def test_the_server_tells_missing_names_empty_names_and_other_zones_apart() -> None:
    records = {"a.b.example.com": {"A": ["192.0.2.1"]}}
    with DnsServer(records, negative_ttl=7) as server:
        missing = ask(server, "nowhere.example.com", "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert missing.flags & dns.flags.AA
        (soa,) = missing.authority
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa.name.to_text() == "example.com."
        assert soa[0].minimum == 7
        no_data = ask(server, "a.b.example.com", "MX")
        assert no_data.rcode() == dns.rcode.NOERROR
        assert no_data.answer == []
        assert no_data.authority[0].rdtype == dns.rdatatype.SOA
        empty_non_terminal = ask(server, "b.example.com", "A")
        assert empty_non_terminal.rcode() == dns.rcode.NOERROR
        elsewhere = ask(server, "example.org", "A")
        assert elsewhere.rcode() == dns.rcode.REFUSED
        assert not elsewhere.flags & dns.flags.AA


def test_the_server_splits_long_txt_values_and_truncates_big_udp_answers() -> None:
    value = "k" * 600
    with DnsServer({"big.example.com": {"TXT": [value]}}) as server:
        plain = ask(server, "big.example.com", "TXT")  # no EDNS: 512 bytes at most
        assert plain.flags & dns.flags.TC
        over_tcp = ask(server, "big.example.com", "TXT", tcp=True)
        (record,) = over_tcp.answer[0]
        assert [len(s) for s in record.strings] == [255, 255, 90]
        query = dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=1232)
        roomy = dns.query.udp(query, "127.0.0.1", timeout=2, port=server.port)
        assert not roomy.flags & dns.flags.TC
        assert b"".join(roomy.answer[0][0].strings).decode() == value


# -- lookups ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_txt_mx_and_addresses(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.set("example.com", "TXT", ["v=spf1 -all", ("two ", "strings")])
    dns_server.set("example.com", "MX", [(20, "Backup.Example.com."), (10, "mx.example.com")])
    dns_server.set("mx.example.com", "A", ["192.0.2.25", "192.0.2.26"])
    dns_server.set("mx.example.com", "AAAA", ["2001:db8::25"])
    dns_server.set("v4.example.com", "A", ["192.0.2.4"])
    dns_server.set("latin.example.com", "TXT", [b"caf\xe9"])
    assert sorted(await resolver.txt("example.com")) == ["two strings", "v=spf1 -all"]
    assert await resolver.mx("example.com.") == [(10, "mx.example.com"), (20, "backup.example.com")]
    assert await resolver.addresses("mx.example.com") == [
        "192.0.2.25",
        "192.0.2.26",
        "2001:db8::25",
    ]
    assert await resolver.addresses("v4.example.com") == ["192.0.2.4"]
    assert await resolver.txt("latin.example.com") == ["café"]
    (soa,) = await resolver.query("example.com", "SOA")
    assert soa.rdtype == dns.rdatatype.SOA


@pytest.mark.anyio
async def test_a_null_mx_and_a_cname(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.set("nomail.example.com", "MX", ["0 ."])
    dns_server.set("alias.example.com", "CNAME", ["target.example.com."])
    dns_server.set("target.example.com", "TXT", ["behind the alias"])
    assert await resolver.mx("nomail.example.com") == [(0, "")]
    assert await resolver.txt("alias.example.com") == ["behind the alias"]


@pytest.mark.anyio
async def test_nxdomain_no_data_servfail_and_timeout_are_told_apart(
    dns_server: DnsServer,
) -> None:
    dns_server.set("example.com", "TXT", ["v=spf1 -all"])
    dns_server.servfail("broken.example.com")
    dns_server.silence("slow.example.com")
    resolver = Resolver([dns_server.address], timeout=0.5)

    with pytest.raises(DnsNameNotFound) as missing:
        await resolver.txt("nowhere.example.com")
    assert (missing.value.name, missing.value.rdtype) == ("nowhere.example.com", "TXT")
    assert isinstance(missing.value, LookupError)
    assert "NXDOMAIN" in str(missing.value)

    assert await resolver.mx("example.com") == []  # the name exists, without MX
    assert await resolver.addresses("example.com") == []

    with pytest.raises(DnsServerFailure) as failed:
        await resolver.txt("broken.example.com")
    assert f"{dns_server.address} answered SERVFAIL" in str(failed.value)

    with pytest.raises(DnsServerFailure, match="REFUSED"):
        await resolver.txt("example.org")  # no zone of the server

    started = time.monotonic()
    with pytest.raises(DnsTimeout) as slow:
        await resolver.txt("slow.example.com")
    assert 0.4 < time.monotonic() - started < 2
    assert isinstance(slow.value, TimeoutError)
    assert "within 0.5 s" in str(slow.value)
    with pytest.raises(DnsTimeout):
        await resolver.addresses("slow.example.com")

    for error in (DnsNameNotFound, DnsServerFailure, DnsTimeout):
        assert issubclass(error, DnsError)
        assert issubclass(error, MailfleetError)


@pytest.mark.anyio
async def test_a_changed_record_is_seen_once_its_ttl_has_passed(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set("drift.example.com", "TXT", ["before"], ttl=1)
    assert await resolver.txt("drift.example.com") == ["before"]
    dns_server.set("drift.example.com", "TXT", ["after"], ttl=1)
    assert await resolver.txt("drift.example.com") == ["before"]  # from the cache
    asked = len(dns_server.queries)
    await anyio.sleep(1.2)
    assert await resolver.txt("drift.example.com") == ["after"]
    assert len(dns_server.queries) == asked + 1


@pytest.mark.anyio
async def test_negative_answers_are_cached_for_the_soa_minimum() -> None:
    with DnsServer({"example.com": {"TXT": ["here"]}}, negative_ttl=1) as server:
        resolver = Resolver([server.address], timeout=2)
        with pytest.raises(DnsNameNotFound):
            await resolver.txt("new.example.com")
        assert await resolver.mx("example.com") == []
        server.set("new.example.com", "TXT", ["published"])
        server.set("example.com", "MX", [(10, "mx.example.com")])
        with pytest.raises(DnsNameNotFound):
            await resolver.txt("new.example.com")  # still the cached NXDOMAIN
        assert await resolver.mx("example.com") == []  # still the cached empty answer
        await anyio.sleep(1.2)
        assert await resolver.txt("new.example.com") == ["published"]
        assert await resolver.mx("example.com") == [(10, "mx.example.com")]


@pytest.mark.anyio
async def test_failures_are_not_cached(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.servfail("flaky.example.com")
    with pytest.raises(DnsServerFailure):
        await resolver.txt("flaky.example.com")
    dns_server._servfail.clear()
    dns_server.set("flaky.example.com", "TXT", ["recovered"])
    assert await resolver.txt("flaky.example.com") == ["recovered"]


@pytest.mark.anyio
async def test_a_truncated_answer_is_asked_again_over_tcp(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    value = "".join(chr(ord("a") + i % 26) for i in range(3000))  # > the 1,232-byte payload
    dns_server.set("large.example.com", "TXT", [value])
    assert await resolver.txt("large.example.com") == [value]
    transports = [q.transport for q in dns_server.queries if q.name == "large.example.com"]
    assert transports == ["udp", "tcp"]


@pytest.mark.anyio
async def test_a_dead_first_nameserver_leaves_time_for_the_next(dns_server: DnsServer) -> None:
    dns_server.set("example.com", "TXT", ["from the second"])
    with DnsServer({"example.com": {"TXT": ["from the first"]}}) as first:
        first.silence("example.com")
        resolver = Resolver([first.address, dns_server.address], timeout=4)
        assert await resolver.txt("example.com") == ["from the second"]


@pytest.mark.anyio
async def test_bad_names_and_types_are_invalid_input(resolver: Resolver) -> None:
    for name in ("", "a..example.com", "x" * 64 + ".example.com"):
        with pytest.raises(InvalidInput) as bad:
            await resolver.txt(name)
        assert bad.value.field == "name"
    with pytest.raises(InvalidInput) as bad_type:
        await resolver.query("example.com", "NOT-A-TYPE")
    assert bad_type.value.field == "rdtype"
    with pytest.raises(InvalidInput):
        await resolver.addresses("a..b")


# -- settings --------------------------------------------------------------------------------


def test_nameserver_entries() -> None:
    settings = Settings.load(
        dns_nameservers=["192.0.2.53", " 192.0.2.53:5353 ", "[::1]:53", "[2001:db8::1]", "::1"]
    )
    assert settings.dns_nameservers == [
        "192.0.2.53",
        "192.0.2.53:5353",
        "[::1]:53",
        "[2001:db8::1]",
        "::1",
    ]
    assert [parse_nameserver(entry) for entry in settings.dns_nameservers] == [
        Nameserver("192.0.2.53", 53),
        Nameserver("192.0.2.53", 5353),
        Nameserver("::1", 53),
        Nameserver("2001:db8::1", 53),
        Nameserver("::1", 53),
    ]
    defaults = Settings.load()
    assert defaults.dns_nameservers == []
    assert defaults.dns_timeout == 5.0
    assert Resolver.from_settings(defaults).nameservers == ()  # the system's


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["192.0.2.53:5353", "[::1]:53"]', ["192.0.2.53:5353", "[::1]:53"]),
        ("192.0.2.53:5353, [::1]:53", ["192.0.2.53:5353", "[::1]:53"]),
        ("[::1]:5353", ["[::1]:5353"]),
        ("192.0.2.53", ["192.0.2.53"]),
        ("", []),
        ("[]", []),
    ],
)
def test_nameservers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("MAILFLEET_DNS_NAMESERVERS", value)
    monkeypatch.setenv("MAILFLEET_DNS_TIMEOUT", "1.5")
    settings = Settings.load()
    assert settings.dns_nameservers == expected
    assert settings.dns_timeout == 1.5


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("192.0.2.53:99999", "port 99999 is out of range (1 to 65535)"),
        ("192.0.2.53:0", "port 0 is out of range"),
        ("192.0.2.53:dns", "port 'dns' is not a number"),
        ("192.0.2.53:", "the port after ':' is empty"),
        (":53", "the host is empty"),
        ("[]:53", "the host is empty"),
        ("", "an empty entry"),
        ("[::1", "'[' without its ']'"),
        ("[::1]53", "after ']'"),
        ("[192.0.2.53]:53", "brackets are for IPv6 only"),
        ("ns.example.com", "is not an IPv4 address (a nameserver is given by its address)"),
        ("2001:db8::zz", "is not an IPv6 address"),
    ],
)
def test_bad_nameservers_are_refused_with_the_field_named(entry: str, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Settings.load(dns_nameservers=["192.0.2.1", entry])
    assert refused.value.field == "settings.dns_nameservers"
    assert words in refused.value.message
    with pytest.raises(InvalidInput) as direct:
        Resolver(["192.0.2.1", entry])
    assert direct.value.field == "nameservers"
    assert words in direct.value.message


def test_bad_environment_values_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILFLEET_DNS_NAMESERVERS", "192.0.2.53,,192.0.2.54")
    with pytest.raises(InvalidInput) as refused:
        Settings.load()
    assert refused.value.field == "settings.dns_nameservers"
    assert "an empty entry" in refused.value.message
    monkeypatch.setenv("MAILFLEET_DNS_NAMESERVERS", "192.0.2.53:70000")
    with pytest.raises(InvalidInput, match="out of range"):
        Settings.load()


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf")])
def test_the_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(InvalidInput) as refused:
        Settings.load(dns_timeout=timeout)
    assert refused.value.field == "settings.dns_timeout"
    with pytest.raises(InvalidInput) as direct:
        Resolver(timeout=timeout)
    assert direct.value.field == "timeout"


def test_a_single_string_is_not_a_list_of_nameservers() -> None:
    with pytest.raises(InvalidInput) as refused:
        Resolver("192.0.2.53")
    assert refused.value.field == "nameservers"


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(min_value=1, max_value=65535),
)
def test_a_nameserver_reads_back_from_its_normal_form(address: object, port: int) -> None:
    server = Nameserver(str(address), port)
    assert parse_nameserver(str(server)) == server


@pytest.mark.anyio
async def test_the_resolver_the_settings_describe(dns_server: DnsServer) -> None:
    dns_server.set("example.com", "TXT", ["configured"])
    settings = Settings.load(dns_nameservers=[dns_server.address], dns_timeout=1.5)
    resolver = Resolver.from_settings(settings)
    assert resolver.nameservers == (Nameserver("127.0.0.1", dns_server.port),)
    assert resolver.timeout == 1.5
    assert await resolver.txt("example.com") == ["configured"]


# -- dkimpy through the resolver -------------------------------------------------------------


def test_dkimpy_verifies_the_signers_signatures_over_dns(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    keys = [generate_key("rsa", selector="r1"), generate_key("ed25519", selector="e1")]
    for key in keys:
        dns_server.set(key.dns_name("example.com"), "TXT", [key.dns_txt_value])
    signed = DkimSigner("example.com", keys).sign(MESSAGE)
    dnsfunc = resolver.dkim_dnsfunc()
    for index in range(len(keys)):
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=dnsfunc)
    # The RSA key's record is longer than one string: it came split, and was joined.
    rsa_name = keys[0].dns_name("example.com")
    assert len(keys[0].dns_txt_value) > 255
    assert dnsfunc(rsa_name.encode() + b".") == keys[0].dns_txt_value.encode()
    assert {q.transport for q in dns_server.queries} == {"udp"}  # EDNS made room for it


def test_a_missing_key_fails_verification(dns_server: DnsServer, resolver: Resolver) -> None:
    key = generate_key("ed25519", selector="gone")
    dns_server.set("example.com", "TXT", ["v=spf1 -all"])
    dns_server.set("other._domainkey.example.com", "TXT", ["not a key"])
    signed = DkimSigner("example.com", [key]).sign(MESSAGE)
    dnsfunc = resolver.dkim_dnsfunc()
    assert dnsfunc(b"gone._domainkey.example.com.") is None  # NXDOMAIN
    assert dnsfunc(b"example.com.") == b"v=spf1 -all"
    dns_server.set("x._domainkey.example.com", "A", ["192.0.2.1"])
    assert dnsfunc(b"x._domainkey.example.com.") is None  # no TXT there
    assert dnsfunc(b"bad..name.") is None
    assert not dkim.DKIM(signed).verify(dnsfunc=dnsfunc)


def test_dkim_lookups_that_fail_raise_instead_of_failing_the_signature(
    dns_server: DnsServer,
) -> None:
    key = generate_key("ed25519", selector="s1")
    signed = DkimSigner("example.com", [key]).sign(MESSAGE)
    dns_server.set("example.com", "TXT", ["v=spf1 -all"])
    dns_server.servfail(key.dns_name("example.com"))
    resolver = Resolver([dns_server.address], timeout=0.5)
    with pytest.raises(DnsServerFailure):
        dkim.DKIM(signed).verify(dnsfunc=resolver.dkim_dnsfunc())
    dns_server.silence("t1._domainkey.example.com")
    started = time.monotonic()
    with pytest.raises(DnsTimeout):
        resolver.dkim_dnsfunc()(b"t1._domainkey.example.com.", timeout=5)
    assert time.monotonic() - started < 2  # the resolver's 0.5 s, not dkimpy's 5


@pytest.mark.anyio
async def test_dkim_lookups_share_the_cache(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.set("s._domainkey.example.com", "TXT", ["v=DKIM1; p=old"], ttl=60)
    assert await resolver.txt("s._domainkey.example.com") == ["v=DKIM1; p=old"]
    dns_server.set("s._domainkey.example.com", "TXT", ["v=DKIM1; p=new"])
    dnsfunc = resolver.dkim_dnsfunc()
    assert await anyio.to_thread.run_sync(dnsfunc, b"s._domainkey.example.com.") == (
        b"v=DKIM1; p=old"
    )
