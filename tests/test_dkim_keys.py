"""DKIM private keys at rest (sealed, in key files, in clear in dev mode) and key rotation.

Signatures are verified by dkimpy over the loopback DNS server, so a key that
signs is a key receivers can check.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import anyio
import dkim
import pytest
import sqlalchemy as sa

from dnsserver import DnsServer
from mailfleet import Conflict, Fleet, InvalidInput, NotFound, SigningFailed
from mailfleet.auth import keystore
from mailfleet.auth.dkim import generate_key
from mailfleet.auth.dns import Resolver
from mailfleet.auth.keystore import KeyStore
from mailfleet.runtime import outbox
from mailfleet.store import applications, domains
from mailfleet.store.database import normalize_url
from mailfleet.store.scope import Scope
from mailfleet.store.tables import domains_table
from support import dkim_dns, publish

pytestmark = pytest.mark.anyio

SECRET = "correct horse battery staple"
ED_KEY = generate_key("ed25519", selector="s1")


def pem_body(pem: str) -> str:
    """A line of the key material itself, to look for where it must not be."""
    return pem.splitlines()[1]


def test_a_sealed_key_opens_with_its_passphrase_only() -> None:
    store = KeyStore(secret=SECRET, allow_clear=False)
    entry = store.seal("example.com", ED_KEY, status="signing")
    assert "private_pem" not in entry
    assert pem_body(ED_KEY.private_pem) not in json.dumps(entry)
    assert entry["sealed"]["kdf"] == "scrypt"
    assert store.open("example.com", entry).private_pem == ED_KEY.private_pem
    with pytest.raises(SigningFailed, match=r"the DKIM key s1 of example\.com does not open"):
        KeyStore(secret="wrong", allow_clear=False).open("example.com", entry)
    with pytest.raises(SigningFailed, match="sealed: set MAILFLEET_DKIM_KEY_SECRET"):
        KeyStore().open("example.com", entry)


def test_a_sealed_key_moved_to_another_domain_or_selector_does_not_open() -> None:
    store = KeyStore(secret=SECRET)
    entry = store.seal("example.com", ED_KEY)
    with pytest.raises(SigningFailed, match="sealed for another domain or selector"):
        store.open("example.net", entry)
    with pytest.raises(SigningFailed, match="does not open"):
        store.open("example.com", {**entry, "selector": "s2"})
    damaged = {**entry, "sealed": {**entry["sealed"], "nonce": "!!"}}
    with pytest.raises(SigningFailed, match="damaged"):
        store.open("example.com", damaged)


def test_outside_dev_mode_keys_are_never_kept_in_clear() -> None:
    with pytest.raises(InvalidInput, match="MAILFLEET_DKIM_KEY_SECRET") as raised:
        KeyStore(allow_clear=False).seal("example.com", ED_KEY)
    assert raised.value.field == "settings.dkim_key_secret"


async def test_outside_dev_mode_keys_default_to_files_under_home(
    database_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    async with Fleet(database_url=database_url, dev_mode=False, home=home) as fleet:
        await fleet.add_domain("example.com")
        files = sorted(p.name for p in (home / "dkim-keys" / "example.com").iterdir())
        assert files == ["mailfleet-ed25519.pem", "mailfleet.pem"]
        assert "PRIVATE KEY" not in _stored_keys(database_url)


async def test_key_files_hold_the_keys_and_the_database_only_their_paths(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    async with Fleet(database_url=database_url, dkim_key_dir=folder) as fleet:
        await fleet.add_domain("example.com")
        files = sorted((folder / "example.com").iterdir())
        assert [f.name for f in files] == ["mailfleet-ed25519.pem", "mailfleet.pem"]
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        assert stat.S_IMODE((folder / "example.com").stat().st_mode) == 0o700
        row = _stored_keys(database_url)
        assert "PRIVATE KEY" not in row
        assert str(files[0]) in row
        await fleet.provision("desk@example.com")
        sent = await fleet.send("desk@example.com", "x@example.com", subject="Hi", text="Hey")
        assert sent.ok


async def test_a_missing_key_file_fails_the_send_clearly(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    async with Fleet(database_url=database_url, dkim_key_dir=folder) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
        for file in (folder / "example.com").iterdir():
            file.unlink()
        with pytest.raises(SigningFailed, match=r"of example\.com: cannot read its key file"):
            await fleet.send("desk@example.com", "x@example.com", subject="Hi", text="Hey")


async def test_rotation_publishes_two_selectors_then_signs_with_the_new_one(
    database_url: str, dns_server: DnsServer
) -> None:
    settings: dict[str, Any] = {
        "dns_nameservers": [dns_server.address],
        "dns_timeout": 2,
        "dkim_key_secret": SECRET,
        "relay_addresses": ["192.0.2.25"],
        "mx_host": "mx.example.net",
    }
    async with Fleet(database_url=database_url, **settings) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
        publish(dns_server, await fleet.domain_records("example.com"))
        assert (await fleet.check_domain("example.com")).state == "verified"

        rotated = await fleet.rotate_dkim("example.com")
        statuses = {key.selector: key.status for key in rotated.dkim_keys}
        assert statuses == {
            "mailfleet": "signing",
            "mailfleet-ed25519": "signing",
            "mailfleet-r2": "next",
            "mailfleet-r2-ed25519": "next",
        }
        printed = {r.purpose for r in await fleet.domain_records("example.com")}
        assert {"dkim:mailfleet", "dkim:mailfleet-r2", "dkim:mailfleet-r2-ed25519"} <= printed
        with pytest.raises(Conflict, match="waiting for its records"):
            await fleet.rotate_dkim("example.com")
        assert await _selectors_signing(fleet, dns_server) == {"mailfleet", "mailfleet-ed25519"}

        # Not yet published: the new keys' checks warn, the domain stays verified.
        report = await fleet.check_domain("example.com")
        assert report.state == "verified"
        assert report.check("dkim:mailfleet-r2").status == "warn"
        assert await fleet.events(type="domain.dkim_promoted") == []

        publish(dns_server, await fleet.domain_records("example.com"))
        assert (await fleet.check_domain("example.com")).state == "verified"
        (promoted,) = await fleet.events(type="domain.dkim_promoted")
        assert promoted.payload["selectors"] == ["mailfleet-r2", "mailfleet-r2-ed25519"]
        assert await _selectors_signing(fleet, dns_server) == {
            "mailfleet-r2",
            "mailfleet-r2-ed25519",
        }

        with pytest.raises(Conflict, match="is signing"):
            await fleet.retire_dkim("example.com", "mailfleet-r2")
        with pytest.raises(NotFound):
            await fleet.retire_dkim("example.com", "nope")
        await fleet.retire_dkim("example.com", "mailfleet")
        retired = await fleet.retire_dkim("example.com", "mailfleet-ed25519")
        assert {key.selector for key in retired.dkim_keys} == {
            "mailfleet-r2",
            "mailfleet-r2-ed25519",
        }
        assert len(await fleet.events(type="domain.dkim_retired")) == 2
        again = await fleet.rotate_dkim("example.com", selector="spring")
        assert {k.selector for k in again.dkim_keys if k.status == "next"} == {
            "spring",
            "spring-ed25519",
        }


async def test_no_private_key_or_passphrase_reaches_logs_events_or_the_cli(
    database_url: str, mailfleet: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Fleet(database_url=database_url, dkim_key_secret=SECRET) as fleet:
        await fleet.add_domain("example.com")
        await fleet.rotate_dkim("example.com")
        await fleet.promote_dkim("example.com")
        await fleet.provision("desk@example.com")
        assert (await fleet.send("desk@example.com", "x@example.com", subject="a", text="b")).ok
        events = json.dumps([event.payload for event in await fleet.events(limit=1000)])
        domains = await fleet.domains()
    listed = mailfleet("domains", "list", "--json", env={"MAILFLEET_DKIM_KEY_SECRET": SECRET})
    records = mailfleet("domains", "records", "example.com", "--json")
    row = _stored_keys(database_url)
    for text in (caplog.text, events, listed.stdout, records.stdout, repr(domains), row):
        assert SECRET not in text
        assert "PRIVATE KEY" not in text


async def _selectors_signing(
    fleet: Fleet, dns_server: DnsServer, *, publish_keys: bool = False
) -> set[str]:
    """Send one message; the selectors of its DKIM signatures, each verified by dkimpy
    (with ``publish_keys``, every DKIM record of the domain is published first)."""
    if publish_keys:
        (domain,) = await fleet.domains()
        dkim_dns(dns_server, domain)
    sent = await fleet.send("desk@example.com", "you@example.com", subject="Hi", text="Hey")
    assert sent.ok
    newest = (await fleet.outbox())[0]
    shown = await fleet.outbox_message(newest.id)
    assert shown is not None
    assert shown.raw is not None
    dnsfunc = Resolver([dns_server.address], timeout=2).dkim_dnsfunc()
    count = shown.raw.count(b"DKIM-Signature:")
    selectors = set()
    for index in range(count):
        verifier = dkim.DKIM(shown.raw)
        assert verifier.verify(idx=index, dnsfunc=dnsfunc), index
        selectors.add(verifier.selector.decode())
    return selectors


def _stored_keys(database_url: str) -> str:
    """The domains' stored key entries, read straight from the database."""
    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT dkim_keys FROM domains"))
            return json.dumps([str(row[0]) for row in rows])
    finally:
        engine.dispose()


def test_the_cli_rotates_and_retires(mailfleet: Any) -> None:
    env = {"MAILFLEET_DKIM_KEY_SECRET": SECRET}
    assert mailfleet("domains", "add", "example.com", env=env).exit_code == 0
    rotated = mailfleet("domains", "rotate", "example.com", env=env)
    assert rotated.exit_code == 0, rotated.output
    assert "new DKIM selectors mailfleet-r2, mailfleet-r2-ed25519 (not signing yet)" in (
        rotated.output
    )
    assert "mailfleet domains records example.com" in rotated.output
    twice = mailfleet("domains", "rotate", "example.com", env=env)
    assert twice.exit_code == 1
    assert "waiting for its records" in twice.output
    signing = mailfleet("domains", "retire", "example.com", "mailfleet", env=env)
    assert signing.exit_code == 1
    assert "is signing" in signing.output
    assert mailfleet("domains", "retire", "example.com", "nope", env=env).exit_code == 1


def _scope(fleet: Fleet) -> Scope:
    """The store scope of ``fleet``'s application, to call store functions directly."""
    app = fleet.database.read_sync(
        lambda conn: applications.get_application(conn, fleet.settings.application)
    )
    return Scope(fleet.database, app.id)


def _write_keys(database_url: str, keys: list[dict[str, Any]]) -> None:
    """Store ``keys`` as the one domain's keys, straight into the database."""
    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.update(domains_table).values(dkim_keys=keys))
    finally:
        engine.dispose()


def _read_keys(database_url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(domains_table.c.dkim_keys)).scalar_one()
            return list(stored)
    finally:
        engine.dispose()


async def test_keys_stored_before_rotation_existed_still_sign_and_rotate(
    database_url: str, dns_server: DnsServer
) -> None:
    async with Fleet(database_url=database_url) as fleet:  # dev mode: in clear
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
    # The form of the rows mailfleet wrote before keys had a status or a generation.
    old = [
        {k: entry[k] for k in ("selector", "algorithm", "private_pem", "dns_txt")}
        for entry in _read_keys(database_url)
    ]
    _write_keys(database_url, old)
    async with Fleet(database_url=database_url) as fleet:
        (domain,) = await fleet.domains()
        assert {(k.selector, k.status, k.created_at) for k in domain.dkim_keys} == {
            ("mailfleet", "signing", None),
            ("mailfleet-ed25519", "signing", None),
        }
        dkim_dns(dns_server, domain)
        assert await _selectors_signing(fleet, dns_server) == {"mailfleet", "mailfleet-ed25519"}
        rotated = await fleet.rotate_dkim("example.com")
        assert {k.selector for k in rotated.dkim_keys if k.status == "next"} == {
            "mailfleet-r2",
            "mailfleet-r2-ed25519",
        }


async def test_promote_next_keys_in_the_store(database_url: str) -> None:
    async with Fleet(database_url=database_url, dkim_key_secret=SECRET) as fleet:
        await fleet.add_domain("example.com")
        scope = _scope(fleet)
        assert not await scope.write(lambda tx: domains.promote_next_keys(tx, "example.com"))
        assert await fleet.events(type="domain.dkim_promoted") == []
        await fleet.rotate_dkim("example.com")
        assert await scope.write(lambda tx: domains.promote_next_keys(tx, "Example.COM"))
        assert not await scope.write(lambda tx: domains.promote_next_keys(tx, "example.com"))
        (domain,) = await fleet.domains()
        assert {k.selector: k.status for k in domain.dkim_keys} == {
            "mailfleet": "retiring",
            "mailfleet-ed25519": "retiring",
            "mailfleet-r2": "signing",
            "mailfleet-r2-ed25519": "signing",
        }
        # Every published key keeps its record while retiring.
        assert len(domain.dkim_records) == 4
        (event,) = await fleet.events(type="domain.dkim_promoted")
        assert event.payload["selectors"] == ["mailfleet-r2", "mailfleet-r2-ed25519"]


async def test_a_wrong_passphrase_fails_each_send_and_is_logged_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Fleet(database_url=database_url, dkim_key_secret=SECRET) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
    caplog.set_level(logging.DEBUG)
    async with Fleet(database_url=database_url, dkim_key_secret="not the passphrase") as fleet:
        for _ in range(3):
            with pytest.raises(SigningFailed, match=r"DKIM key mailfleet of example\.com"):
                await fleet.send("desk@example.com", "x@example.com", subject="a", text="b")
        assert await fleet.outbox() == []
        assert [d.name for d in await fleet.domains()] == ["example.com"]  # still serving
    errors = [r for r in caplog.records if r.name == "mailfleet.outbox" and r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "does not open" in errors[0].getMessage()
    assert SECRET not in caplog.text
    assert "not the passphrase" not in caplog.text


def test_a_key_file_is_never_overwritten_by_another_key(tmp_path: Path) -> None:
    store = KeyStore(key_dir=tmp_path, allow_clear=False)
    entry = store.seal("example.com", ED_KEY)
    assert store.seal("example.com", ED_KEY) == entry  # the same key: the same file
    path = Path(entry["key_file"])
    assert path == tmp_path.resolve() / "example.com" / "s1.pem"
    other = generate_key("ed25519", selector="s1")
    with pytest.raises(InvalidInput, match="exists and holds another key") as raised:
        store.seal("example.com", other)
    assert raised.value.field == "settings.dkim_key_dir"
    assert path.read_text() == ED_KEY.private_pem
    assert store.open("example.com", entry).private_pem == ED_KEY.private_pem


async def test_key_files_follow_a_rotation_and_go_when_retired(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    async with Fleet(database_url=database_url, dkim_key_dir=folder) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
        await fleet.rotate_dkim("example.com")
        names = {f.name for f in (folder / "example.com").iterdir()}
        assert names == {
            "mailfleet.pem",
            "mailfleet-ed25519.pem",
            "mailfleet-r2.pem",
            "mailfleet-r2-ed25519.pem",
        }
        assert await fleet.promote_dkim("example.com")
        await fleet.retire_dkim("example.com", "mailfleet")
        await fleet.retire_dkim("example.com", "mailfleet-ed25519")
        names = {f.name for f in (folder / "example.com").iterdir()}
        assert names == {"mailfleet-r2.pem", "mailfleet-r2-ed25519.pem"}
        assert "PRIVATE KEY" not in _stored_keys(database_url)
        assert (await fleet.send("desk@example.com", "x@example.com", subject="a", text="b")).ok


async def test_concurrent_retires_and_rotations_lose_nothing(database_url: str) -> None:
    async with Fleet(database_url=database_url, dkim_key_secret=SECRET) as fleet:
        await fleet.add_domain("example.com")
        await fleet.rotate_dkim("example.com")
        await fleet.promote_dkim("example.com")
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.retire_dkim, "example.com", "mailfleet")
            tg.start_soon(fleet.retire_dkim, "example.com", "mailfleet-ed25519")
        assert [k["selector"] for k in _read_keys(database_url)] == [
            "mailfleet-r2",
            "mailfleet-r2-ed25519",
        ]

        outcomes: list[str] = []

        async def rotate() -> None:
            try:
                await fleet.rotate_dkim("example.com")
                outcomes.append("rotated")
            except Conflict:
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            tg.start_soon(rotate)
            tg.start_soon(rotate)
        assert sorted(outcomes) == ["conflict", "rotated"]
        stored = _read_keys(database_url)
        assert [k["selector"] for k in stored if k["status"] == "next"] == [
            "mailfleet-r3",
            "mailfleet-r3-ed25519",
        ]
        assert len(await fleet.events(type="domain.dkim_rotated")) == 2


async def test_another_process_promotion_signs_here_once_cached_keys_expire(
    database_url: str, dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        Fleet(database_url=database_url, dkim_key_secret=SECRET) as here,
        Fleet(database_url=database_url, dkim_key_secret=SECRET) as there,
    ):
        await here.add_domain("example.com")
        await here.provision("desk@example.com")
        assert await _selectors_signing(here, dns_server, publish_keys=True) == {
            "mailfleet",
            "mailfleet-ed25519",
        }
        await there.rotate_dkim("example.com")
        assert await there.promote_dkim("example.com")
        # Within SIGNER_LIFETIME this fleet still signs with the (still published) old keys...
        assert await _selectors_signing(here, dns_server, publish_keys=True) == {
            "mailfleet",
            "mailfleet-ed25519",
        }
        # ...and with the promoted ones once its cached keys are older than that.
        monkeypatch.setattr(outbox, "SIGNER_LIFETIME", 0.0)
        assert await _selectors_signing(here, dns_server, publish_keys=True) == {
            "mailfleet-r2",
            "mailfleet-r2-ed25519",
        }


async def test_keys_in_clear_are_said_once_in_the_debug_log(
    database_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "_warned_clear", False)  # as in a new process
    # Debug, not a warning: dev mode's embedded default, on a laptop, says nothing on stderr.
    caplog.set_level(logging.DEBUG, logger="mailfleet.keys")
    async with Fleet(database_url=database_url) as fleet:  # dev mode, no key store
        await fleet.add_domain("example.com")
        await fleet.add_domain("example.net")
    warned = [r.getMessage() for r in caplog.records if r.name == "mailfleet.keys"]
    assert {r.levelno for r in caplog.records if r.name == "mailfleet.keys"} == {logging.DEBUG}
    assert len(warned) == 1
    assert warned[0].startswith(
        "DKIM private keys are stored unencrypted; set MAILFLEET_DKIM_KEY_SECRET"
    )
