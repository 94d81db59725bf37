"""``/v1/grants/{grant}/threads``: a grant's conversations, and one with its messages."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from ...model.messages import ThreadRecord
from ..schemas import Page, page
from ..tenants import Authorized
from .messages import After, Limit, MessageOut

__all__ = ["ThreadOut", "router"]

router = APIRouter(prefix="/v1/grants/{grant}", tags=["messages"])


class ThreadOut(BaseModel):
    """A conversation of the grant (messages joined by Message-ID, References, subject)."""

    id: str
    grant_id: str
    subject: str | None
    message_count: int
    first_at: datetime
    last_at: datetime
    participants: list[str]

    @classmethod
    def of(cls, record: ThreadRecord) -> ThreadOut:
        """The JSON form of ``record``."""
        return cls(
            id=record.id,
            grant_id=record.grant_id,
            subject=record.subject,
            message_count=record.messages,
            first_at=record.first_at,
            last_at=record.last_at,
            participants=list(record.participants),
        )


class ThreadDetail(ThreadOut):
    """A conversation with its messages, oldest first."""

    messages: list[MessageOut]


@router.get(
    "/threads",
    summary="The grant's threads, the most recently active first",
    responses={404: {"description": "grant_not_found"}},
)
async def list_threads(
    grant: str, caller: Authorized, limit: Limit = 100, after: After = None
) -> Page[ThreadOut]:
    """One page of the grant's conversations."""
    found = await caller.fleet.threads(grant, after=after, limit=limit + 1)
    shown = page(found, limit, lambda record: record.cursor)
    return Page[ThreadOut](
        items=[ThreadOut.of(t) for t in shown.items], next_cursor=shown.next_cursor
    )


@router.get(
    "/threads/{thread}",
    summary="One thread and its messages",
    responses={404: {"description": "grant_not_found, thread_not_found"}},
)
async def read_thread(grant: str, thread: str, caller: Authorized) -> ThreadDetail:
    """The conversation and its messages (inbound and sent), oldest first."""
    record, messages = await caller.fleet.thread(grant, thread)
    return ThreadDetail(
        **ThreadOut.of(record).model_dump(), messages=[MessageOut.of(m) for m in messages]
    )
