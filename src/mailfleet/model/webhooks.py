"""Webhook subscriptions as values: their records, filters, states and retry schedule (pure)."""

from __future__ import annotations

import random as _random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from .envelope import iso_time
from .errors import InvalidInput

__all__ = [
    "DeliveryStatus",
    "FailurePolicy",
    "Health",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookFilter",
    "WebhookStatus",
    "after_attempts",
    "check_event_types",
    "check_url",
    "retry_delay",
]

_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?|\*")


class WebhookStatus(StrEnum):
    """A subscription's state.

    ``active`` delivers; ``failing`` delivers too, its endpoint having failed
    ``webhook_failing_after`` attempts in a row (``webhook.failing``); ``disabled``
    delivers nothing until re-enabled, its events waiting (``webhook.disabled``).
    """

    ACTIVE = "active"
    FAILING = "failing"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    """``pending`` until the endpoint answered 2xx, then ``delivered``."""

    PENDING = "pending"
    DELIVERED = "delivered"


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    """Which events a subscription receives; an empty dimension lets every event through.

    ``event_types`` holds exact types (``message.received``), prefixes
    (``message.*``) or ``*``; ``workspaces`` and ``grants`` hold ids: an
    event passes when its grant (or the workspace it names) is among them.
    """

    event_types: tuple[str, ...] = ()
    workspaces: tuple[str, ...] = ()
    grants: tuple[str, ...] = ()

    @property
    def needs_workspace(self) -> bool:
        """Whether matching needs the workspace of each event's grant."""
        return bool(self.workspaces)

    def matches(self, type: str, grant_id: str | None, workspace_id: str | None) -> bool:
        """Whether an event of ``type``, of ``grant_id`` in ``workspace_id``, passes."""
        if self.event_types and not any(_type_matches(p, type) for p in self.event_types):
            return False
        if self.grants and grant_id not in self.grants:
            return False
        return not self.workspaces or workspace_id in self.workspaces


def _type_matches(pattern: str, type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return type.startswith(pattern[:-1])
    return pattern == type


@dataclass(frozen=True, slots=True)
class Webhook:
    """One application-level subscription: where events go and which ones.

    Secrets are never part of it: :meth:`Webhooks.create` and ``rotate_secret``
    return the new one once; ``secrets_valid_until`` says when each secret
    still signing stops (None: the current one, until rotated).
    """

    id: str
    application_id: str
    url: str
    description: str | None
    filter: WebhookFilter
    status: WebhookStatus
    created_at: datetime
    updated_at: datetime
    consecutive_failures: int = 0
    """Attempts that failed since the endpoint last answered 2xx."""
    failing_since: datetime | None = None
    """The first of those failures."""
    last_error: str | None = None
    secrets_valid_until: tuple[datetime | None, ...] = ()

    @property
    def event_types(self) -> tuple[str, ...]:
        """The filter's event types (empty: all)."""
        return self.filter.event_types

    def as_json(self) -> dict[str, Any]:
        """The subscription as JSON (no secret): what ``GET /v1/webhooks/{id}`` answers."""
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types),
            "workspaces": list(self.workspaces),
            "grants": list(self.grants),
            "status": self.status.value,
            "consecutive_failures": self.consecutive_failures,
            "failing_since": _time(self.failing_since),
            "last_error": self.last_error,
            "secrets_valid_until": [_time(t) for t in self.secrets_valid_until],
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
        }

    @property
    def workspaces(self) -> tuple[str, ...]:
        """The filter's workspace ids (empty: all)."""
        return self.filter.workspaces

    @property
    def grants(self) -> tuple[str, ...]:
        """The filter's grant ids (empty: all)."""
        return self.filter.grants


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event on its way to one subscription."""

    id: int
    webhook_id: str
    event_id: int
    event_type: str
    grant_id: str | None
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    """When it is tried next (pending), as far as its grant's order allows."""
    delivered_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The delivery as JSON (``GET /v1/webhooks/{id}/deliveries``)."""
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "grant_id": self.grant_id,
            "status": self.status.value,
            "attempts": self.attempts,
            "created_at": _time(self.created_at),
            "next_attempt_at": _time(self.next_attempt_at),
            "delivered_at": _time(self.delivered_at),
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One POST of a delivery: the answer's status, how long it took, what it said."""

    id: int
    delivery_id: int
    webhook_id: str
    event_id: int
    attempted_at: datetime
    ok: bool
    status_code: int | None
    """None when no answer came (refused, reset, timed out)."""
    latency_ms: float
    response: str | None
    """The first KiB of the answer's body."""
    error: str | None

    def as_json(self) -> dict[str, Any]:
        """The attempt as JSON."""
        return {
            "id": self.id,
            "delivery_id": self.delivery_id,
            "webhook_id": self.webhook_id,
            "event_id": str(self.event_id),
            "attempted_at": _time(self.attempted_at),
            "ok": self.ok,
            "status_code": self.status_code,
            "latency_ms": round(self.latency_ms, 3),
            "response": self.response,
            "error": self.error,
        }


def _time(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` (the envelope's form), or None."""
    return None if value is None else iso_time(value)


def check_url(url: str) -> str:
    """``url`` when it is an absolute ``http`` or ``https`` URL with a host, else
    :class:`~mailfleet.InvalidInput` naming ``url``."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise InvalidInput("url", f"{url!r} is not a URL: {exc}", value=url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url", f"{url!r} is not an http:// or https:// URL", value=url)
    if parts.username or parts.password:
        raise InvalidInput("url", "a webhook URL carries no user or password", value=url)
    if len(text) > 2000:
        raise InvalidInput("url", "a webhook URL is at most 2,000 characters", value=url)
    return text


def check_event_types(types: Iterable[str]) -> tuple[str, ...]:
    """Event types as a filter takes them (``message.received``, ``message.*``, ``*``),
    deduplicated in order; :class:`~mailfleet.InvalidInput` naming ``event_types``."""
    found: list[str] = []
    for item in types:
        if not isinstance(item, str) or not _TYPE.fullmatch(item) or len(item) > 64:
            raise InvalidInput("event_types", f"{item!r} is not an event type", value=item)
        if item not in found:
            found.append(item)
    return tuple(found)


def retry_delay(
    failures: int,
    *,
    base: float,
    maximum: float,
    jitter: float = 0.2,
    random: _random.Random | None = None,
) -> float:
    """Seconds before the next try after ``failures`` failed ones (1 or more):
    ``base * 2^(failures-1)``, at most ``maximum``, spread by ±``jitter``."""
    exponent = min(max(failures, 1) - 1, 62)
    delay = min(base * 2.0**exponent, maximum)
    spread = (random or _random).uniform(1 - jitter, 1 + jitter)
    return delay * spread


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """When an endpoint is retried, marked failing and disabled (the ``webhook_*`` settings)."""

    retry_base: float = 5.0
    retry_max: float = 3600.0
    failing_after: int = 5
    """Failed attempts in a row that mark it ``failing``."""
    disable_after_failures: int = 50
    disable_after_seconds: float = 5 * 86400.0
    """It is ``disabled`` once failing for this long *and* that many attempts in a row."""


@dataclass(frozen=True, slots=True)
class Health:
    """What the store keeps of a subscription's endpoint between attempts (epoch seconds)."""

    status: WebhookStatus
    consecutive_failures: int = 0
    failing_since: float | None = None
    retry_at: float = 0.0
    """While failing in a row: when one delivery may probe the endpoint again."""


def after_attempts(
    health: Health,
    outcomes: Iterable[tuple[bool, float]],
    policy: FailurePolicy,
    *,
    now: float,
    random: _random.Random | None = None,
) -> tuple[Health, list[WebhookStatus]]:
    """The health after attempts ``(ok, at)`` in the order they were made, and the
    states entered on the way (``failing``, ``disabled``, or ``active`` on recovery).

    A 2xx clears the failures (a ``failing`` endpoint is ``active`` again). A
    failure counts; until the next success the endpoint is probed by one
    delivery at a time, each after a wait as long as it has been failing so far
    (at least ``retry_base``, at most ``retry_max``, ±20 %): the probes come at
    doubling intervals. A subscription disabled meanwhile stays disabled.
    """
    status = health.status
    failures = health.consecutive_failures
    since = health.failing_since
    entered: list[WebhookStatus] = []
    for ok, at in outcomes:
        if ok:
            if status is WebhookStatus.FAILING:
                status = WebhookStatus.ACTIVE
                entered.append(status)
            failures, since = 0, None
        else:
            failures += 1
            since = at if since is None else since
    if failures == 0:
        return Health(status), entered
    assert since is not None
    elapsed = max(now - since, 0.0)
    if status is WebhookStatus.ACTIVE and failures >= policy.failing_after:
        status = WebhookStatus.FAILING
        entered.append(status)
    if (
        status is WebhookStatus.FAILING
        and failures >= policy.disable_after_failures
        and elapsed >= policy.disable_after_seconds
    ):
        status = WebhookStatus.DISABLED
        entered.append(status)
    wait = min(max(elapsed, policy.retry_base), policy.retry_max)
    wait *= (random or _random).uniform(0.8, 1.2)
    return Health(status, failures, since, now + wait), entered
