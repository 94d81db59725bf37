"""``/v1/webhooks``: one subscription per application covers the whole fleet.

Each delivery is an event's envelope signed by the Standard Webhooks scheme
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``); the secret
(``whsec_...``) is answered once, at creation and at rotation. A thin layer
over ``caller.fleet.webhooks`` (:class:`~mailfleet.runtime.webhooks.Webhooks`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from ...model.errors import WebhookNotFound
from ...model.webhooks import Webhook, WebhookAttempt, WebhookDelivery
from ..schemas import Body, Limit, Page
from ..tenants import Authorized

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "webhook_not_found"}}


class WebhookOut(BaseModel):
    """A subscription (never its secret)."""

    id: str
    url: str
    description: str | None
    event_types: list[str] = Field(description="exact types, `message.*` or `*`; empty: all")
    workspaces: list[str] = Field(description="workspace ids; empty: all")
    grants: list[str] = Field(description="grant ids; empty: all")
    status: Literal["active", "failing", "disabled"]
    consecutive_failures: int
    failing_since: datetime | None
    last_error: str | None
    secrets_valid_until: list[datetime | None] = Field(
        description="each secret signing now, until when (null: the current one)"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        """The JSON form of ``webhook``."""
        return cls.model_validate(webhook.as_json())


class WebhookWithSecret(WebhookOut):
    """A subscription and its signing secret, shown only in this answer."""

    secret: str = Field(description="`whsec_...`: verify each delivery's signature with it")


class WebhookIn(Body):
    """A subscription to create: where, and optionally which events."""

    url: str = Field(max_length=2000, examples=["https://hooks.example.com/mailfleet"])
    description: str | None = Field(None, max_length=500)
    event_types: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=100)
    workspaces: list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=1000, description="names or ids"
    )
    grants: list[Annotated[str, Field(max_length=320)]] | None = Field(
        None, max_length=10_000, description="ids or addresses"
    )


class WebhookPatch(Body):
    """What to change; ``status: active`` re-enables a failing or disabled one."""

    url: str | None = Field(None, max_length=2000)
    description: str | None = Field(None, max_length=500)
    event_types: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=100)
    workspaces: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=1000)
    grants: list[Annotated[str, Field(max_length=320)]] | None = Field(None, max_length=10_000)
    status: Literal["active", "disabled"] | None = None


class RotateIn(Body):
    """How long the secrets in use keep signing beside the new one."""

    grace_hours: float | None = Field(None, ge=0, le=24 * 30)


class ReplayIn(Body):
    """What to deliver again: one of ``after_event``, ``since`` or ``deliveries``."""

    after_event: str | None = Field(None, max_length=20, description="an event id")
    since: datetime | None = None
    deliveries: list[int] | None = Field(None, max_length=10_000)


class Replayed(BaseModel):
    """How many deliveries were queued again."""

    queued: int


class DeliveryOut(BaseModel):
    """One event on its way to one subscription."""

    id: int
    webhook_id: str
    event_id: str
    event_type: str
    grant_id: str | None
    status: Literal["pending", "delivered"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        """The JSON form of ``delivery``."""
        return cls.model_validate(delivery.as_json())


class AttemptOut(BaseModel):
    """One POST of a delivery: the answer's status, how long it took, what it said."""

    id: int
    delivery_id: int
    webhook_id: str
    event_id: str
    attempted_at: datetime
    ok: bool
    status_code: int | None
    latency_ms: float
    response: str | None = Field(description="the first KiB of the answer")
    error: str | None

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> AttemptOut:
        """The JSON form of ``attempt``."""
        return cls.model_validate(attempt.as_json())


Before = Annotated[
    int | None, Query(ge=1, description="the `next_cursor` of the previous page (newest first)")
]


def _newest_first(items: list[Any], limit: int, make: Any) -> Page[Any]:
    more = len(items) > limit
    shown = items[:limit]
    cursor = str(shown[-1].id) if more and shown else None
    return Page[Any](items=[make(item) for item in shown], next_cursor=cursor)


@router.post("", status_code=201, summary="Subscribe an endpoint to the fleet's events")
async def create_webhook(body: WebhookIn, caller: Authorized) -> WebhookWithSecret:
    """Every event recorded from now on that the filters let through is delivered,
    signed, at least once and in order per grant. The secret is in this answer only."""
    webhook, secret = await caller.fleet.webhooks.create(
        body.url,
        event_types=body.event_types,
        workspaces=body.workspaces,
        grants=body.grants,
        description=body.description,
    )
    return WebhookWithSecret(**WebhookOut.of(webhook).model_dump(), secret=secret)


@router.get("", summary="The application's subscriptions")
async def list_webhooks(caller: Authorized) -> Page[WebhookOut]:
    """Every subscription, oldest first (an application has few)."""
    found = await caller.fleet.webhooks.list()
    return Page[WebhookOut](items=[WebhookOut.of(w) for w in found], next_cursor=None)


@router.get("/{webhook}", summary="One subscription", responses=_MISSING)
async def get_webhook(webhook: str, caller: Authorized) -> WebhookOut:
    """Its filters, its state (``active``, ``failing``, ``disabled``) and its last error."""
    return WebhookOut.of(await caller.fleet.webhooks.get(webhook))


@router.patch("/{webhook}", summary="Change or re-enable a subscription", responses=_MISSING)
async def update_webhook(webhook: str, body: WebhookPatch, caller: Authorized) -> WebhookOut:
    """Given fields change (an empty filter list: all of that kind); ``status: active``
    re-enables a failing or disabled subscription, which goes on where it stopped."""
    changed = await caller.fleet.webhooks.update(
        webhook,
        url=body.url,
        description=body.description,
        event_types=body.event_types,
        workspaces=body.workspaces,
        grants=body.grants,
        status=body.status,
    )
    return WebhookOut.of(changed)


@router.delete("/{webhook}", status_code=204, summary="Unsubscribe", responses=_MISSING)
async def delete_webhook(webhook: str, caller: Authorized) -> Response:
    """The subscription, its deliveries and their attempts are deleted."""
    if not await caller.fleet.webhooks.delete(webhook):
        raise WebhookNotFound(webhook)
    return Response(status_code=204)


@router.post("/{webhook}/rotate", summary="A new signing secret", responses=_MISSING)
async def rotate_secret(
    webhook: str, caller: Authorized, body: RotateIn | None = None
) -> WebhookWithSecret:
    """Deliveries carry the signatures of the old and the new secret for the grace period
    (default ``webhook_secret_grace_hours``), so a receiver can switch in between."""
    hours = None if body is None else body.grace_hours
    rotated, secret = await caller.fleet.webhooks.rotate_secret(webhook, grace_hours=hours)
    return WebhookWithSecret(**WebhookOut.of(rotated).model_dump(), secret=secret)


@router.get("/{webhook}/deliveries", summary="A subscription's deliveries", responses=_MISSING)
async def list_deliveries(
    webhook: str,
    caller: Authorized,
    status: Annotated[Literal["pending", "delivered"] | None, Query()] = None,
    event: Annotated[str | None, Query(max_length=20, description="one event's id")] = None,
    after: Before = None,
    limit: Limit = 100,
) -> Page[DeliveryOut]:
    """Newest first: each with its attempts' count, next try, last status and error."""
    await caller.fleet.webhooks.get(webhook)  # 404 for another application's
    found = await caller.fleet.webhooks.deliveries(
        webhook, status=status, event=event, before=after, limit=limit + 1
    )
    return _newest_first(found, limit, DeliveryOut.of)


@router.get("/{webhook}/attempts", summary="A subscription's attempts", responses=_MISSING)
async def list_attempts(
    webhook: str,
    caller: Authorized,
    delivery: Annotated[int | None, Query(ge=1, description="one delivery's id")] = None,
    after: Before = None,
    limit: Limit = 100,
) -> Page[AttemptOut]:
    """Newest first: status code, latency, the first KiB of the answer, the error."""
    await caller.fleet.webhooks.get(webhook)
    found = await caller.fleet.webhooks.attempts(
        webhook, delivery=delivery, before=after, limit=limit + 1
    )
    return _newest_first(found, limit, AttemptOut.of)


@router.post("/{webhook}/replay", summary="Deliver events again", responses=_MISSING)
async def replay(webhook: str, body: ReplayIn, caller: Authorized) -> Replayed:
    """The events after ``after_event`` or since ``since`` that the filters let through,
    or the given ``deliveries``: each a new delivery with its event's ``webhook-id``."""
    queued = await caller.fleet.webhooks.replay(
        webhook, after_event=body.after_event, since=body.since, deliveries=body.deliveries
    )
    return Replayed(queued=queued)
