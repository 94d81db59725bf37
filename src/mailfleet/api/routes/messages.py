"""``/v1/grants/{grant}/messages``: send as a grant, and read its mailbox.

``POST`` passes the outbound gates (``fleet.send``) and answers ``202`` with
the queued message, or the refusal as a problem: ``400 grant_paused``,
``domain_not_authenticated``, ``invalid_recipient``, ``recipient_suppressed``
(each address and why); ``403 grant_restricted``, ``blocked_by_rule``;
``429 rate_limited`` with ``Retry-After``. ``GET`` lists and reads stored
messages (inbound and sent); a message comes as JSON, or as its raw MIME with
``?format=raw`` or ``Accept: message/rfc822``; its attachments one by one.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from ...mail.build import OutgoingAttachment
from ...mail.parse import ParsedMessage, parse_message
from ...model.messages import MessageRecord
from ...model.outbound import SendCategory, SendResult, SendStatus
from ..idempotency import HEADER
from ..problems import Problem
from ..schemas import Body, Page, page
from ..tenants import Authorized

__all__ = ["MessageOut", "QueuedMessage", "router"]

router = APIRouter(prefix="/v1/grants/{grant}", tags=["messages"])

RAW = "message/rfc822"

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
After = Annotated[str | None, Query(description="the `next_cursor` of the previous page")]


# -- sending ------------------------------------------------------------------------------


class AttachmentIn(Body):
    """A file to attach, its content in base64."""

    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(description="the file's bytes, base64 (RFC 4648)")
    content_type: str = Field("application/octet-stream", max_length=255)
    inline: bool = Field(False, description="shown in the HTML body (with `content_id`)")
    content_id: str | None = Field(None, max_length=255, description="for `cid:` in the HTML")

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        return value

    def outgoing(self) -> OutgoingAttachment:
        """The attachment as the message builder takes it."""
        return OutgoingAttachment(
            filename=self.filename,
            content=base64.b64decode(self.content),
            content_type=self.content_type,
            inline=self.inline,
            content_id=self.content_id,
        )


Addresses = Annotated[list[str], Field(max_length=1000)]


class SendIn(Body):
    """A message to send as the grant."""

    to: Annotated[list[str], Field(min_length=1, max_length=1000)]
    cc: Addresses = Field(default_factory=list)
    bcc: Addresses = Field(
        default_factory=list, description="envelope recipients not named in the message"
    )
    reply_to: Annotated[list[str], Field(max_length=10)] = Field(default_factory=list)
    subject: str = Field(max_length=998)
    text: str = Field("", description="the plain-text body")
    html: str | None = Field(None, description="an HTML body beside the text")
    in_reply_to: str | None = Field(
        None, description="the id of the grant's message this one answers (threading)"
    )
    attachments: Annotated[list[AttachmentIn], Field(max_length=100)] = Field(default_factory=list)
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="extra header fields (not From, To, Subject, Content-*... )",
    )
    defer: bool = Field(
        False, description="a send the quota or a ramp refuses now is queued for later"
    )
    category: SendCategory = Field(
        SendCategory.TRANSACTIONAL,
        description="bulk and campaign: one recipient, with one-click unsubscribe headers; "
        "campaign: only to recipients who confirmed by double opt-in",
    )


class QueuedMessage(BaseModel):
    """A message accepted into the outbox."""

    id: str = Field(description="the stored message: GET /v1/grants/{grant}/messages/{id}")
    grant_id: str
    status: Literal["queued"] = "queued"
    message_id: str | None = Field(None, description="its Message-ID header")
    thread_id: str | None
    send_at: datetime | None = Field(
        None, description="when it leaves, if later than now (paced, scheduled or deferred)"
    )
    detail: str | None = None


_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "grant_paused, domain_not_authenticated, invalid_recipient, "
        "recipient_suppressed (`suppressed`: each address and reason), opt_in_pending "
        "(a campaign to a recipient who has not confirmed: a confirmation was sent)"
    },
    403: {"description": "grant_restricted, blocked_by_rule"},
    404: {"description": "grant_not_found, message_not_found (in_reply_to)"},
    422: {"description": "message_rejected, or the body is invalid"},
    429: {"description": "rate_limited: `Retry-After` (seconds), `retry_after` in the body"},
}


@router.post(
    "/messages",
    status_code=202,
    summary="Send a message as the grant",
    responses=_REFUSALS,
)
async def send_message(
    grant: str,
    body: SendIn,
    caller: Authorized,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias=HEADER, include_in_schema=False)] = None,
) -> QueuedMessage:
    """Pass the outbound gates and queue the message (202), or answer why not."""
    record = await caller.fleet.grant(grant)
    result = await caller.fleet.send(
        record,
        body.to,
        cc=body.cc,
        bcc=body.bcc,
        reply_to=body.reply_to,
        subject=body.subject,
        text=body.text,
        html=body.html,
        in_reply_to=body.in_reply_to,
        attachments=[a.outgoing() for a in body.attachments],
        headers=body.headers,
        defer=body.defer,
        category=body.category,
        idempotency_key=idempotency_key,
    )
    if not result.ok:
        raise refusal(result)
    assert result.id is not None
    response.headers["Location"] = f"/v1/grants/{record.id}/messages/{result.id}"
    return QueuedMessage(
        id=result.id,
        grant_id=record.id,
        message_id=result.message_id,
        thread_id=result.thread_id,
        send_at=None if result.send_at is None else datetime.fromtimestamp(result.send_at, UTC),
        detail=result.detail,
    )


_EXPLAINED = {
    "grant_paused": "the grant is paused (its rates reached the pause threshold, or an "
    "operator paused it): an administrator must reinstate it",
    "grant_restricted": "the grant is restricted by an operator",
}


def refusal(result: SendResult) -> Problem:
    """The problem a refused send answers (see the module)."""
    detail = result.detail or result.status.value
    detail = _EXPLAINED.get(detail, detail)
    status = result.status
    if status is SendStatus.PAUSED:
        return Problem(400, "grant_paused", detail)
    if status is SendStatus.RESTRICTED:
        return Problem(403, "grant_restricted", detail)
    if status is SendStatus.INVALID_RECIPIENT:
        return Problem(400, "invalid_recipient", detail)
    if status is SendStatus.SUPPRESSED:
        listed = [
            {
                "address": entry.address,
                "reason": entry.reason.value,
                "detail": entry.detail,
                "workspace": entry.workspace,
            }
            for entry in result.suppressed
        ]
        return Problem(400, "recipient_suppressed", detail, suppressed=listed)
    if status is SendStatus.DOMAIN_NOT_AUTHENTICATED:
        return Problem(
            400, "domain_not_authenticated", detail, failing_checks=list(result.failing_checks)
        )
    if status is SendStatus.OPT_IN_PENDING:
        return Problem(400, "opt_in_pending", detail)
    if status is SendStatus.BLOCKED_BY_RULE:
        return Problem(403, "blocked_by_rule", detail)
    if status is SendStatus.RATE_LIMITED:
        wait = max(1, math.ceil(result.retry_after or 1))
        return Problem(
            429, "rate_limited", detail, headers={"Retry-After": str(wait)}, retry_after=wait
        )
    return Problem(422, "message_rejected", detail)


# -- reading ------------------------------------------------------------------------------


class MessageOut(BaseModel):
    """A stored message of the grant, as lists show it."""

    id: str
    grant_id: str
    direction: Literal["in", "out"]
    folder: str = Field(description="inbox, spam or sent")
    message_id: str | None = Field(description="its Message-ID header")
    thread_id: str | None
    subject: str | None
    sender: str | None
    recipients: list[str]
    size: int
    created_at: datetime
    delivery: str | None = Field(
        None, description="a sent message: pending, sent, bounced or captured"
    )
    send_at: datetime | None = Field(None, description="a pending one: when it is due")

    @classmethod
    def of(cls, record: MessageRecord) -> MessageOut:
        """The JSON form of ``record``."""
        return cls(
            id=record.id,
            grant_id=record.grant_id,
            direction="in" if record.direction == "in" else "out",
            folder=record.folder,
            message_id=record.message_id,
            thread_id=record.thread_id,
            subject=record.subject,
            sender=record.sender,
            recipients=list(record.recipients),
            size=record.size,
            created_at=record.created_at,
            delivery=record.delivery,
            send_at=None if record.send_at is None else datetime.fromtimestamp(record.send_at, UTC),
        )


class HeaderField(BaseModel):
    """One header field, in order."""

    name: str
    value: str


class AttachmentOut(BaseModel):
    """An attachment of a message: GET .../attachments/{index} gives its bytes."""

    index: int
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    inline: bool


class MessageDetail(MessageOut):
    """One message with its header, bodies and attachments (the raw MIME: ``?format=raw``)."""

    headers: list[HeaderField]
    text: str | None
    html: str | None
    attachments: list[AttachmentOut]
    defects: list[str] = Field(description="what was malformed in its MIME")


@router.get(
    "/messages",
    summary="The grant's messages, newest first",
    responses={404: {"description": "grant_not_found"}},
)
async def list_messages(
    grant: str,
    caller: Authorized,
    folder: Annotated[Literal["inbox", "spam", "sent"] | None, Query()] = None,
    thread: Annotated[str | None, Query(description="one thread's messages")] = None,
    direction: Annotated[Literal["in", "out"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="made at or after this time")] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[MessageOut]:
    """Inbound and sent messages of the grant, filtered, one page at a time."""
    found = await caller.fleet.messages(
        grant,
        folder=folder,
        thread=thread,
        direction=direction,
        since=since,
        after=after,
        limit=limit + 1,
    )
    shown = page(found, limit, lambda record: record.cursor)
    return Page[MessageOut](
        items=[MessageOut.of(r) for r in shown.items], next_cursor=shown.next_cursor
    )


@router.get(
    "/messages/{message}",
    summary="One message: JSON, or its raw MIME",
    response_model=MessageDetail,
    responses={
        200: {"content": {RAW: {"schema": {"type": "string", "format": "binary"}}}},
        404: {"description": "grant_not_found, message_not_found"},
    },
)
async def read_message(
    grant: str,
    message: str,
    caller: Authorized,
    request: Request,
    format: Annotated[
        Literal["json", "raw"], Query(description="raw: the message as stored (message/rfc822)")
    ] = "json",
) -> Any:
    """The message as JSON (headers, text, html, attachments), or ``?format=raw`` /
    ``Accept: message/rfc822`` for its bytes as stored (as signed, for a sent one)."""
    record = await caller.fleet.message(grant, message)
    raw = record.raw or b""
    if format == "raw" or _wants_raw(request.headers.get("accept", "")):
        return Response(raw, media_type=RAW)
    parsed = parse_message(raw)
    detail = MessageDetail(
        **MessageOut.of(record).model_dump(),
        headers=[HeaderField(name=n, value=v) for n, v in record.headers],
        text=parsed.text,
        html=parsed.html,
        attachments=_attachments(parsed),
        defects=list(parsed.defects),
    )
    return JSONResponse(detail.model_dump(mode="json"))


@router.get(
    "/messages/{message}/attachments/{index}",
    summary="One attachment's bytes",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        404: {"description": "grant_not_found, message_not_found, attachment_not_found"},
    },
)
async def read_attachment(
    grant: str, message: str, index: Annotated[int, Path(ge=0)], caller: Authorized
) -> Response:
    """The decoded content of attachment ``index`` (as listed with the message), with
    its declared type and file name."""
    record = await caller.fleet.message(grant, message)
    attachments = parse_message(record.raw or b"").attachments
    if not 0 <= index < len(attachments):
        raise Problem(
            404,
            "attachment_not_found",
            f"message {message} has {len(attachments)} attachment(s); no index {index}",
            field="index",
        )
    found = attachments[index]
    headers = {}
    if found.filename:
        disposition = "inline" if found.inline else "attachment"
        headers["Content-Disposition"] = (
            f"{disposition}; filename*=UTF-8''{quote(found.filename, safe='')}"
        )
    return Response(found.content(), media_type=found.content_type, headers=headers)


def _attachments(parsed: ParsedMessage) -> list[AttachmentOut]:
    return [
        AttachmentOut(
            index=index,
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            content_id=a.content_id,
            inline=a.inline,
        )
        for index, a in enumerate(parsed.attachments)
    ]


def _wants_raw(accept: str) -> bool:
    """Whether ``Accept`` asks for message/rfc822 before JSON."""
    kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return RAW in kinds and (
        "application/json" not in kinds or kinds.index(RAW) < kinds.index("application/json")
    )
