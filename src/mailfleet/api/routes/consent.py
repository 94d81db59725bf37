"""One-click unsubscribe (RFC 8058) and double opt-in links: no key, the token is the proof.

- ``POST /v1/unsubscribe/{token}``: what a mail client posts for
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; suppresses at once,
  idempotently. ``GET`` shows a page with a button that posts (link scanners
  follow GETs: a GET changes nothing).
- ``POST /v1/opt-in/{token}`` confirms a double opt-in; ``GET`` shows a page
  with a button that posts.

A token names no application: the applications holding its lookup key are
found first, then the token is verified by each one's own scoped read.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from ...model.consent import OptIn, UnsubscribeResult, parse_token
from ...model.errors import InvalidToken, TokenExpired
from ...runtime.fleet import Fleet
from ...store import consent
from ..tenants import tenants_of

router = APIRouter(prefix="/v1", tags=["consent"])

T = TypeVar("T")

_INVALID = {"description": "Not a token of this service (malformed, forged, superseded)"}


class Unsubscribed(BaseModel):
    """A recipient's unsubscription from one sender."""

    recipient: str
    sender: str
    grant_id: str
    unsubscribed: bool
    unsubscribed_at: datetime | None
    via: str | None


class OptInState(BaseModel):
    """A recipient's double opt-in to one sender's campaigns."""

    recipient: str
    sender: str
    grant_id: str
    status: str
    confirmed: bool
    requested_at: datetime | None
    expires_at: datetime | None
    confirmed_at: datetime | None


async def _holder(
    request: Request, kind: str, token: str, call: Callable[[Fleet], Awaitable[T]]
) -> T:
    given = parse_token(token, kind)
    tenants = tenants_of(request)
    holders = await tenants.database.read(
        lambda conn: consent.applications_of_token(conn, kind, given.key_hex)
    )
    refused: InvalidToken | None = None
    for application_id in holders:
        try:
            return await call(await tenants.fleet_of(application_id))
        except TokenExpired:
            raise
        except InvalidToken as exc:
            refused = exc
    raise refused or InvalidToken(kind, "no such token", value=token)


def _unsubscribed(result: UnsubscribeResult) -> Unsubscribed:
    return Unsubscribed(
        recipient=result.recipient,
        sender=result.sender,
        grant_id=result.grant_id,
        unsubscribed=result.unsubscribed,
        unsubscribed_at=result.unsubscribed_at,
        via=result.via,
    )


def _opt_in_state(opt_in: OptIn) -> OptInState:
    return OptInState(
        recipient=opt_in.recipient,
        sender=opt_in.sender,
        grant_id=opt_in.grant_id,
        status=str(opt_in.status.value),
        confirmed=opt_in.confirmed,
        requested_at=opt_in.requested_at,
        expires_at=opt_in.expires_at,
        confirmed_at=opt_in.confirmed_at,
    )


@router.post(
    "/unsubscribe/{token}",
    summary="One-click unsubscribe (RFC 8058)",
    responses={404: _INVALID},
)
async def unsubscribe(token: str, request: Request) -> Unsubscribed:
    """Suppress the recipient for the sender's workspace at once; asking again answers
    the same and changes nothing. Emits ``recipient.unsubscribed`` and calls the
    agent's ``on_unsubscribe``."""
    return _unsubscribed(
        await _holder(request, "unsubscribe", token, lambda f: f.unsubscribe(token))
    )


@router.get(
    "/unsubscribe/{token}",
    summary="The unsubscribe page (changes nothing)",
    response_class=HTMLResponse,
    responses={404: {"description": _INVALID["description"], "content": {"text/html": {}}}},
)
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    """A page naming the sender, with a button that posts the one-click unsubscribe."""
    try:
        state = _unsubscribed(
            await _holder(request, "unsubscribe", token, lambda f: f.unsubscribe_status(token))
        )
    except InvalidToken:
        return _page("Link not valid", "This unsubscribe link is not valid.", status=404)
    if state.unsubscribed:
        return _page("Unsubscribed", f"{state.recipient} gets no more mail from {state.sender}.")
    return _page(
        "Unsubscribe",
        f"Stop mail from {state.sender} to {state.recipient}?",
        action=f"/v1/unsubscribe/{token}",
        button="Unsubscribe",
    )


@router.post(
    "/opt-in/{token}",
    summary="Confirm a double opt-in",
    responses={404: _INVALID, 410: {"description": "The confirmation expired"}},
)
async def confirm_opt_in(token: str, request: Request) -> OptInState:
    """Confirm the recipient for the sender's campaigns; confirming again answers the same."""
    return _opt_in_state(await _holder(request, "opt_in", token, lambda f: f.confirm_opt_in(token)))


@router.get(
    "/opt-in/{token}",
    summary="The opt-in page (changes nothing)",
    response_class=HTMLResponse,
    responses={
        404: {"description": _INVALID["description"], "content": {"text/html": {}}},
        410: {"description": "The confirmation expired", "content": {"text/html": {}}},
    },
)
async def opt_in_page(token: str, request: Request) -> HTMLResponse:
    """A page naming the sender, with a button that posts the confirmation."""
    try:
        state = _opt_in_state(
            await _holder(request, "opt_in", token, lambda f: f.opt_in_status(token))
        )
    except TokenExpired:
        return _page("Link expired", "This confirmation link has expired.", status=410)
    except InvalidToken:
        return _page("Link not valid", "This confirmation link is not valid.", status=404)
    if state.confirmed:
        return _page("Confirmed", f"{state.recipient} gets mail from {state.sender}.")
    if state.status == "expired":
        return _page("Link expired", "This confirmation link has expired.", status=410)
    return _page(
        "Confirm your subscription",
        f"Receive mail from {state.sender} at {state.recipient}?",
        action=f"/v1/opt-in/{token}",
        button="Confirm",
    )


def _page(
    title: str, text: str, *, action: str | None = None, button: str = "", status: int = 200
) -> HTMLResponse:
    form = (
        ""
        if action is None
        else f'<form method="post" action="{html.escape(action)}">'
        f'<button type="submit">{html.escape(button)}</button></form>'
    )
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status)
