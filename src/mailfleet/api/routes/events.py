"""``GET /v1/events``, a cursor over the application's event log, and
``GET /v1/events/stream``, the same log as Server-Sent Events.

Both read only up to the process's settled position of the log
(:class:`~mailfleet.runtime.eventfeed.EventFeed`): on PostgreSQL an event
id can become visible after a higher one, and a cursor that had passed it
would never see it. Each item is the public envelope
(:func:`mailfleet.model.envelope.envelope`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints

from ...model.envelope import envelope
from ...model.records import Event
from ...runtime.eventfeed import EventFeed
from ...runtime.fleet import Fleet
from ..schemas import Page, page
from ..tenants import Authorized, tenants_of

router = APIRouter(prefix="/v1", tags=["events"])

EVENT_STREAM = "text/event-stream"
_READ_BATCH = 500
_POSITION = r"^[0-9]{1,18}$"


class EventData(BaseModel):
    """What an event is about: its application, its grant (if any), and the fact itself."""

    application_id: str
    grant_id: str | None
    object: dict[str, Any] = Field(description="the event's payload, as recorded")


class EventEnvelope(BaseModel):
    """One event, as webhooks deliver it and the stream sends it."""

    id: str = Field(description="the event's position in the log; pass it as `after` to go on")
    type: str = Field(description="`grant.created`, `message.received`, `message.bounced`...")
    time: str = Field(
        description="when it was recorded: ISO-8601, UTC, milliseconds",
        json_schema_extra={"format": "date-time"},
    )
    data: EventData


_EVENT_SCHEMA = {
    "description": "one event of the stream (OpenAPI 3.1: the schema describes each event)",
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/EventEnvelope"},
        },
    },
}

EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.,-]{1,200}$")]

Types = Annotated[
    list[EventType] | None,
    Query(
        alias="type",
        description="only events of this type; repeat it, or separate types by commas, for several",
    ),
]
Grant = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9-]{1,64}$", description="only events of the grant with this id"),
]
Workspace = Annotated[
    str | None,
    Query(
        pattern=r"^[^\x00-\x1f]{1,200}$",
        description="only events of this workspace (its id or name): those naming it, and "
        "those of the grants in it",
    ),
]


@dataclass(frozen=True, slots=True)
class _Filters:
    types: tuple[str, ...] | None
    grant: str | None
    workspace: str | None

    @classmethod
    def of(cls, types: Sequence[str] | None, grant: str | None, workspace: str | None) -> _Filters:
        split = None
        if types:
            split = tuple(sorted({t for value in types for t in value.split(",") if t}))
        return cls(split, grant, workspace)

    async def read(self, fleet: Fleet, *, after: int, upto: int, limit: int) -> list[Event]:
        return await fleet.events(
            after=after,
            upto=upto,
            type=self.types,
            grant=self.grant,
            workspace=self.workspace,
            limit=limit,
        )


def _item(event: Event) -> EventEnvelope:
    return EventEnvelope.model_validate(envelope(event))


def _feed(request: Request) -> EventFeed:
    return tenants_of(request).feed


@router.get("/events", summary="The application's events, oldest first")
async def list_events(
    caller: Authorized,
    request: Request,
    types: Types = None,
    grant: Grant = None,
    workspace: Workspace = None,
    after: Annotated[
        str | None, Query(pattern=_POSITION, description="the id of the last event seen")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[EventEnvelope]:
    """The event log after the cursor, filtered by type, grant and workspace. The log
    is read up to its settled position: poll with the last id received as `after`."""
    filters = _Filters.of(types, grant, workspace)
    upto = await _feed(request).settled()
    found = await filters.read(caller.fleet, after=int(after or 0), upto=upto, limit=limit + 1)
    return page([_item(event) for event in found], limit, lambda item: item.id)


@router.get(
    "/events/stream",
    summary="The application's events as they happen (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless `text/event-stream`: each event as `id:` (its id), "
            "`event:` (its type) and `data:` (its envelope as JSON); a comment every "
            "`api_sse_keepalive` seconds when nothing happens.",
            "content": {EVENT_STREAM: {"schema": _EVENT_SCHEMA}},
        }
    },
)
async def stream_events(
    caller: Authorized,
    request: Request,
    types: Types = None,
    grant: Grant = None,
    workspace: Workspace = None,
    after: Annotated[
        str | None,
        Query(pattern=_POSITION, description="start after this event id (default: from now)"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=_POSITION,
            description="resume after this event id (what an EventSource sends on reconnecting);"
            " it wins over `after`",
        ),
    ] = None,
) -> StreamingResponse:
    """Every new event of the application, filtered by type, grant and workspace, pushed
    as it is committed by any process on the store. A client that reconnects with
    `Last-Event-ID` gets exactly the events it missed, in order."""
    start = last_event_id if last_event_id is not None else after
    filters = _Filters.of(types, grant, workspace)
    tenants = tenants_of(request)
    feed = tenants.feed
    position = int(start) if start is not None else await feed.settled()
    body = _stream(
        caller.fleet,
        feed,
        filters,
        position,
        application_id=caller.application.id,
        keepalive=tenants.settings.api_sse_keepalive,
    )
    return StreamingResponse(
        body,
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    fleet: Fleet,
    feed: EventFeed,
    filters: _Filters,
    position: int,
    *,
    application_id: str,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """The events after ``position``: first those already settled, then each as the feed
    settles it; a comment after ``keepalive`` seconds without one."""
    yield b": connected\n\n"
    settled = await feed.settled()
    while True:
        while position < settled:
            found = await filters.read(fleet, after=position, upto=settled, limit=_READ_BATCH)
            if found:
                yield b"".join(_frame(event) for event in found)
            if len(found) < _READ_BATCH:
                position = settled
            else:
                position = found[-1].id
        moved = None
        with anyio.move_on_after(keepalive):
            moved = await feed.wait(application_id, position)
        if moved is None:
            yield b": keep-alive\n\n"
        else:
            settled = moved


def _frame(event: Event) -> bytes:
    data = json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
