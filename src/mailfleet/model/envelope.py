"""The public event envelope: one form for webhooks, ``GET /v1/events`` and the SSE stream.

::

    {"id": "42", "type": "message.received", "time": "2026-01-05T10:00:00.123Z",
     "data": {"application_id": "...", "grant_id": "..." | null, "object": {...}}}

``id`` is the outbox position of the event as a string (the ``webhook-id``
of its deliveries, the SSE ``id:``), ``time`` when it was recorded, in UTC
with a ``Z``; ``object`` is the event's payload as stored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .records import Event

__all__ = ["envelope", "envelope_bytes", "iso_time"]


def iso_time(value: datetime) -> str:
    """``value`` as ISO-8601 in UTC with millisecond precision and a ``Z``
    (a naive value is taken to be UTC)."""
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event: Event) -> dict[str, Any]:
    """The public envelope of ``event``: ``id``, ``type``, ``time`` and ``data`` with
    ``application_id``, ``grant_id`` and the payload as ``object``."""
    return {
        "id": str(event.id),
        "type": event.type,
        "time": iso_time(event.created_at),
        "data": {
            "application_id": event.application_id,
            "grant_id": event.grant_id,
            "object": event.payload,
        },
    }


def envelope_bytes(event: Event) -> bytes:
    """The envelope as compact UTF-8 JSON: the body a webhook delivery posts (and signs)."""
    return json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False).encode()
