"""The pure parts of webhooks: the envelope, Standard Webhooks signing (checked against the
``standardwebhooks`` package), filters, the retry schedule and the endpoint's states."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from mailfleet import Event, InvalidInput
from mailfleet.model.envelope import envelope, envelope_bytes, iso_time
from mailfleet.model.webhook_signing import (
    Signer,
    new_secret,
    secret_key,
    sign,
    signature_header,
    verify,
    webhook_headers,
)
from mailfleet.model.webhooks import (
    FailurePolicy,
    Health,
    WebhookFilter,
    WebhookStatus,
    after_attempts,
    check_event_types,
    check_url,
    retry_delay,
)

EVENT = Event(
    id=42,
    application_id="app-1",
    grant_id="grant-1",
    type="message.received",
    payload={"message_id": "m-1", "subject": "Grüße"},
    created_at=datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC),
)


def test_the_envelope() -> None:
    assert envelope(EVENT) == {
        "id": "42",
        "type": "message.received",
        "time": "2026-12-03T10:00:00.123Z",
        "data": {
            "application_id": "app-1",
            "grant_id": "grant-1",
            "object": {"message_id": "m-1", "subject": "Grüße"},
        },
    }
    assert json.loads(envelope_bytes(EVENT)) == envelope(EVENT)
    assert b" " not in envelope_bytes(EVENT)  # compact
    assert "Grüße".encode() in envelope_bytes(EVENT)  # UTF-8, not escaped


def test_times_are_utc_with_a_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert iso_time(datetime(2026, 1, 1, 12, 0, tzinfo=paris)) == "2026-01-01T11:00:00.000Z"
    assert iso_time(datetime(2026, 1, 1, 12, 0)) == "2026-01-01T12:00:00.000Z"  # naive: UTC


def test_secrets() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    assert new_secret() != secret
    assert secret_key(secret) == base64.b64decode(secret[6:])
    for bad in ("nope", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidInput) as raised:
            secret_key(bad)
        assert raised.value.field == "secret"


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    body = envelope_bytes(EVENT)
    now = int(time.time())
    headers = webhook_headers([secret], "42", now, body)
    assert headers["webhook-id"] == "42"
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert Verifier(secret).verify(body, headers) == envelope(EVENT)
    # One byte changed, another secret, another id: refused.
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body.replace(b"42", b"43"), headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body, {**headers, "webhook-id": "41"})
    # The package's own signature is ours.
    ts = datetime.fromtimestamp(now, UTC)
    assert Verifier(secret).sign("42", ts, body.decode()) == sign(secret, "42", now, body)


def test_several_secrets_sign_one_message() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"id":"1"}'
    now = int(time.time())
    header = signature_header([new, old], "1", now, body)
    assert header.count("v1,") == 2
    headers = Signer([new, old]).headers("1", now, body)
    assert headers == webhook_headers([new, old], "1", now, body)
    for secret in (old, new):
        Verifier(secret).verify(body, headers)
        assert verify(secret, "1", str(now), body, header, now=now)
    assert not verify(new_secret(), "1", str(now), body, header, now=now)
    assert not verify(new, "1", str(now), body, header, now=now + 301)  # too old
    assert not verify(new, "1", "soon", body, header, now=now)


def test_filters() -> None:
    everything = WebhookFilter()
    assert everything.matches("grant.created", None, None)
    typed = WebhookFilter(event_types=("message.*", "grant.created"))
    assert typed.matches("message.bounced", "g", "w")
    assert typed.matches("grant.created", "g", "w")
    assert not typed.matches("grant.status_changed", "g", "w")
    assert not typed.matches("messages.x", "g", "w")
    assert WebhookFilter(event_types=("*",)).matches("domain.created", None, None)
    granted = WebhookFilter(grants=("g1",))
    assert granted.matches("x.y", "g1", None)
    assert not granted.matches("x.y", "g2", None)
    assert not granted.matches("domain.created", None, None)  # no grant: not its grant
    spaced = WebhookFilter(workspaces=("w1",))
    assert spaced.needs_workspace
    assert spaced.matches("x.y", "g", "w1")
    assert not spaced.matches("x.y", "g", "w2")
    assert check_event_types(["message.*", "grant.created", "message.*", "*"]) == (
        "message.*",
        "grant.created",
        "*",
    )
    for bad in ("Message", "message.", "*.sent", "", "a b"):
        with pytest.raises(InvalidInput):
            check_event_types([bad])


def test_urls() -> None:
    assert check_url(" https://hooks.example.com/in?x=1 ") == "https://hooks.example.com/in?x=1"
    assert check_url("http://127.0.0.1:8080/h") == "http://127.0.0.1:8080/h"
    for bad in ("example.com/h", "ftp://example.com", "https://", "http://u:p@example.com/"):
        with pytest.raises(InvalidInput) as raised:
            check_url(bad)
        assert raised.value.field == "url"
    with pytest.raises(InvalidInput):
        check_url("http://example.com:99999/")


def test_the_retry_delay_doubles_up_to_its_cap_with_a_fifth_of_jitter() -> None:
    seeded = random.Random(7)
    for failures, middle in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 640.0), (30, 3600.0)]:
        delays = [
            retry_delay(failures, base=5.0, maximum=3600.0, random=seeded) for _ in range(200)
        ]
        assert min(delays) >= middle * 0.8
        assert max(delays) <= middle * 1.2
        assert max(delays) - min(delays) > middle * 0.2  # it does spread


POLICY = FailurePolicy(
    retry_base=1.0,
    retry_max=60.0,
    failing_after=3,
    disable_after_failures=5,
    disable_after_seconds=100.0,
)


def test_an_endpoint_fails_then_is_disabled_after_both_a_count_and_a_time() -> None:
    health = Health(WebhookStatus.ACTIVE)
    health, entered = after_attempts(health, [(False, 0.0), (False, 1.0)], POLICY, now=1.0)
    assert entered == []
    assert health.consecutive_failures == 2
    assert health.failing_since == 0.0
    assert 1.0 + 0.8 <= health.retry_at <= 1.0 + 1.2  # at least the base
    health, entered = after_attempts(health, [(False, 10.0)], POLICY, now=10.0)
    assert entered == [WebhookStatus.FAILING]
    assert 10 + 8 <= health.retry_at <= 10 + 12  # as long as it has failed so far
    health, entered = after_attempts(health, [(False, 20.0), (False, 30.0)], POLICY, now=30.0)
    assert entered == []  # five in a row, but not failing for long enough
    assert health.status is WebhookStatus.FAILING
    assert health.retry_at <= 30 + 60 * 1.2  # capped
    health, entered = after_attempts(health, [(False, 100.0)], POLICY, now=100.0)
    assert entered == [WebhookStatus.DISABLED]


def test_a_success_clears_the_failures() -> None:
    failing = Health(WebhookStatus.FAILING, 4, 0.0, 50.0)
    health, entered = after_attempts(failing, [(False, 1.0), (True, 2.0)], POLICY, now=2.0)
    assert entered == [WebhookStatus.ACTIVE]
    assert health == Health(WebhookStatus.ACTIVE)
    health, entered = after_attempts(
        Health(WebhookStatus.ACTIVE), [(True, 1.0), (False, 2.0)], POLICY, now=2.0
    )
    assert (health.consecutive_failures, health.failing_since) == (1, 2.0)
    # An operator's disabling stays, whatever a delivery in flight then got.
    disabled = Health(WebhookStatus.DISABLED, 9, 0.0, 0.0)
    health, _ = after_attempts(disabled, [(True, 1.0)], POLICY, now=1.0)
    assert health.status is WebhookStatus.DISABLED
